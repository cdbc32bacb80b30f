"""The flow matrix: which sources may send to which destinations.

Operations staff write it in YAML (`conf/defaults/flows.yaml` is the shipped
one); `load_matrix` validates it (file, line and rule of every problem) and
compiles it; `FlowMatrix.decide(FlowRequest) -> FlowDecision` is the one call
per recipient, pure (no I/O); `facts_for` builds the request from the store,
the settings and the whitelist; `FlowMatrixHolder` swaps a reloaded matrix in
only when it is valid.

    model.py       FlowRequest, FlowDecision and their enums
    conditions.py  the conditions of `from:` and `to:`, compiled
    engine.py      FlowMatrix: decide (indexed) and explain (rule by rule)
    loader.py      YAML with line numbers -> FlowMatrix, FlowMatrixError
    holder.py      FlowMatrixHolder.reload
    facts.py       facts_for, auth_method_of
"""

from policy.flows.engine import FlowMatrix, Rule
from policy.flows.facts import UnknownListener, auth_method_of, facts_for
from policy.flows.holder import FlowMatrixHolder, ReloadResult
from policy.flows.loader import (
    FlowMatrixError,
    FlowProblem,
    listener_roles,
    load_matrix,
    parse_matrix,
)
from policy.flows.model import (
    DEFAULT_RULE,
    AuthMethod,
    BoxState,
    FlowDecision,
    FlowReply,
    FlowRequest,
    FlowVerdict,
    RuleMiss,
)

__all__ = [
    "DEFAULT_RULE",
    "AuthMethod",
    "BoxState",
    "FlowDecision",
    "FlowMatrix",
    "FlowMatrixError",
    "FlowMatrixHolder",
    "FlowProblem",
    "FlowReply",
    "FlowRequest",
    "FlowVerdict",
    "ReloadResult",
    "Rule",
    "RuleMiss",
    "UnknownListener",
    "auth_method_of",
    "facts_for",
    "listener_roles",
    "load_matrix",
    "parse_matrix",
]
