"""Helpers of the flow-matrix tests: small matrices from YAML, requests with defaults."""

from __future__ import annotations

import textwrap
from typing import Any

from conf.settings import ListenerRole
from policy.flows import FlowMatrix, FlowRequest, parse_matrix

LISTENERS = {
    "smtp-mx": ListenerRole.MX,
    "submission": ListenerRole.SUBMISSION,
    "submissions": ListenerRole.SUBMISSION,
    "imap": ListenerRole.IMAP,
}


def matrix(rules_yaml: str, *, default: str = "deny", name: str = "flows.yaml",
           extra: str = "") -> FlowMatrix:
    """A matrix whose `rules:` are the given YAML (indented or not)."""
    body = textwrap.indent(textwrap.dedent(rules_yaml).strip("\n"), "  ")
    text = f"version: 1\ndefault: {default}\n{extra}rules:\n{body}\n"
    return parse_matrix(text, name, listeners=LISTENERS)


def req(**kw: Any) -> FlowRequest:
    """A submission flow from a logged-in practitioner to a remote address,
    with any field replaced."""
    values: dict[str, Any] = {
        "listener": "submission",
        "role": ListenerRole.SUBMISSION,
        "sender": "dr.martin@hopital.test",
        "recipient": "secretariat@chu-lyon.fr",
        "client_ip": "10.1.2.3",
    }
    values.update(kw)
    return FlowRequest(**values)
