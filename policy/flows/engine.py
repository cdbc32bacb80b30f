"""The compiled flow matrix: first matching rule decides, else the default.

`FlowMatrix.decide` is the fast path the daemons call for every recipient.
Each attribute a rule can test (listener, role, sender, network, ...) has an
index: for each value, the bit mask of the rules that accept it, plus the
mask of rules that do not look at that attribute. ANDing one mask per
attribute leaves the candidate rules, lowest bit first; only conditions the
index cannot hold (account globs, max_size) are then tested one by one. The
cost hardly depends on the number of rules (bench/flow_matrix.py).

`FlowMatrix.decide_sender` is the same walk at MAIL FROM, before any
recipient is known: it answers only when the first rule the source can match
does not look at the destination (it then decides for every recipient), and
None otherwise (decide per recipient).

`FlowMatrix.explain` walks the rules one by one with each condition's plain
`test` and says why every rule before the deciding one did not match: it is
the reference meaning, and tests check that both agree.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from policy.flows.conditions import (
    ATTRIBUTES,
    AccountCondition,
    Condition,
    NetworkCondition,
    network_key,
    parse_ip,
)
from policy.flows.model import (
    DEFAULT_RULE,
    FlowDecision,
    FlowReply,
    FlowRequest,
    FlowVerdict,
    RuleMiss,
)

# The attributes of a flow known at MAIL FROM (everything in `from:`).
SOURCE_ATTRIBUTES = frozenset({
    "listener", "role", "network", "account", "account_class", "method", "sender",
    "sender_local", "sender_box_type", "peer_dn", "peer_whitelisted",
})

@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    line: int
    conditions: tuple[Condition, ...]  # all must hold
    verdict: FlowVerdict
    # The rule's own `reply:`; None for allow, and for a deny/tempfail that
    # names none (SMTP then answers its catalogue's default for the verdict,
    # `mssmtpd.replies.flow_reply`).
    reply: FlowReply | None
    description: str = ""

    @property
    def catch_all(self) -> bool:
        """No condition: matches every flow."""
        return not self.conditions

    @property
    def has_max_size(self) -> bool:
        return any(c.attribute == "max_size" for c in self.conditions)

    @property
    def needs_recipient(self) -> bool:
        """Some condition looks at the destination (`to:`)."""
        return any(c.attribute not in SOURCE_ATTRIBUTES and c.attribute != "max_size"
                   for c in self.conditions)


KeysOf = Callable[[FlowRequest], tuple[Hashable, ...]]


@dataclass(frozen=True, slots=True)
class _Index:
    attribute: str
    keys_of: KeysOf
    free: int  # rules without an indexed condition on this attribute
    by_key: dict[Hashable, int]
    # Rules a key matches by pattern (account globs): key -> mask, cached.
    by_pattern: Callable[[Hashable], int] | None = None

    def mask(self, request: FlowRequest) -> int:
        m = self.free
        get = self.by_key.get
        for k in self.keys_of(request):
            m |= get(k, 0)
            if self.by_pattern is not None:
                m |= self.by_pattern(k)
        return m


def _glob_masks(globs: list[tuple[int, AccountCondition]]) -> Callable[[Hashable], int]:
    @functools.lru_cache(maxsize=4096)
    def mask(login: Hashable) -> int:
        m = 0
        for bit, condition in globs:
            if any(g.match(str(login)) for g in condition.globs):
                m |= bit
        return m

    return mask


class FlowMatrix:
    """An immutable, compiled matrix. Replace it whole to change it
    (`policy.flows.holder.FlowMatrixHolder`)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        default: FlowVerdict = FlowVerdict.DENY,
        reply: FlowReply | None = None,
        *,
        source: str = "<memory>",
        checksum: str = "",
        default_line: int = 0,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.default = default
        self.default_reply = None if default is FlowVerdict.ALLOW else reply
        self.source = source
        self.checksum = checksum
        self.default_line = default_line
        self._default = FlowDecision(default, DEFAULT_RULE, default_line, self.default_reply,
                                     checksum)
        self._decisions = [
            (FlowDecision(r.verdict, r.id, r.line, r.reply, checksum),
             FlowDecision(r.verdict, r.id, r.line, r.reply, checksum, size_assumed=True))
            for r in self.rules
        ]
        self._residual = [tuple(c for c in r.conditions if c.accepted is None) for r in self.rules]
        self._all = (1 << len(self.rules)) - 1
        self._indexes = self._build_indexes()
        self._source_indexes = tuple(ix for ix in self._indexes
                                     if ix.attribute in SOURCE_ATTRIBUTES)
        self._needs_recipient = [r.needs_recipient for r in self.rules]
        # Some rule looks at the size: decisions made before DATA (with the
        # size declared by SIZE=, or none) must be made again with the real one.
        self.uses_size = any(r.has_max_size for r in self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def summary(self) -> str:
        n = len(self.rules)
        return (f"{n} rule{'' if n == 1 else 's'}, default {self.default.value}, "
                f"checksum {self.checksum or '-'}")

    # ------------------------------------------------------------ compile

    def _build_indexes(self) -> tuple[_Index, ...]:
        by_attr: dict[str, dict[Hashable, int]] = {}
        constrained: dict[str, int] = {}
        lengths: set[tuple[int, int]] = set()
        globs: list[tuple[int, AccountCondition]] = []
        for i, rule in enumerate(self.rules):
            bit = 1 << i
            for c in rule.conditions:
                if c.accepted is None:
                    continue
                keys = by_attr.setdefault(c.attribute, {})
                constrained[c.attribute] = constrained.get(c.attribute, 0) | bit
                for k in c.accepted:
                    keys[k] = keys.get(k, 0) | bit
                if isinstance(c, NetworkCondition):
                    lengths.update((n.version, n.prefixlen) for n in c.networks)
                if isinstance(c, AccountCondition) and c.globs:
                    globs.append((bit, c))
        indexes = []
        for attribute, keys in by_attr.items():
            keys_of = (_network_keys(sorted(lengths)) if attribute == "network"
                       else ATTRIBUTES[attribute])
            indexes.append(_Index(attribute, keys_of, self._all & ~constrained[attribute], keys,
                                  _glob_masks(globs) if attribute == "account" and globs
                                  else None))
        # Most selective first: an empty candidate set stops the loop early.
        indexes.sort(key=lambda ix: ix.free.bit_count())
        return tuple(indexes)

    # ------------------------------------------------------------ decide

    def decide(self, request: FlowRequest) -> FlowDecision:
        """The decision of the first matching rule (no I/O, no audit)."""
        m = self._all
        for index in self._indexes:
            m &= index.mask(request)
            if not m:
                return self._default
        while m:
            low = m & -m
            i = low.bit_length() - 1
            residual = self._residual[i]
            if not residual or all(c.test(request) for c in residual):
                plain, assumed = self._decisions[i]
                return assumed if request.size is None and self.rules[i].has_max_size else plain
            m ^= low
        return self._default

    def decide_sender(self, request: FlowRequest) -> FlowDecision | None:
        """MAIL FROM: the decision for every recipient of this source, when
        the source alone settles it, else None. Only the `from:` facts of
        `request` (and `size`, when declared) are read.

        First match, as in `decide`: rules whose source conditions fail are
        skipped; the first rule left decides if it has no `to:` condition
        (and, with a max_size, the size is known); if it has one, the answer
        depends on the recipient (None). No rule left: the default."""
        m = self._all
        for index in self._source_indexes:
            m &= index.mask(request)
            if not m:
                return self._default
        while m:
            low = m & -m
            i = low.bit_length() - 1
            rule = self.rules[i]
            residual = self._residual[i]
            if not residual or all(c.test(request) for c in residual):
                if self._needs_recipient[i] or (rule.has_max_size and request.size is None):
                    return None
                return self._decisions[i][0]
            m ^= low
        return self._default

    def explain(self, request: FlowRequest) -> FlowDecision:
        """The same decision, rule by rule, with why each earlier rule did
        not match (every failed condition, in the order written)."""
        tried: list[RuleMiss] = []
        for i, rule in enumerate(self.rules):
            reasons = tuple(c.why_not(request) for c in rule.conditions if not c.test(request))
            if not reasons:
                plain, assumed = self._decisions[i]
                chosen = assumed if request.size is None and rule.has_max_size else plain
                return dataclasses.replace(chosen, tried=tuple(tried))
            tried.append(RuleMiss(rule.id, rule.line, reasons))
        return dataclasses.replace(self._default, tried=tuple(tried))


def _network_keys(lengths: list[tuple[int, int]]) -> KeysOf:
    v4 = [n for v, n in lengths if v == 4]
    v6 = [n for v, n in lengths if v == 6]

    def keys_of(request: FlowRequest) -> tuple[Hashable, ...]:
        ip = parse_ip(request.client_ip)
        if ip is None:
            return ()
        value, bits = int(ip), ip.max_prefixlen
        return tuple((ip.version, n, value >> (bits - n))
                     for n in (v4 if ip.version == 4 else v6))

    return keys_of


__all__ = ["FlowMatrix", "Rule", "network_key"]
