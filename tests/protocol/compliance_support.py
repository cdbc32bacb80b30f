"""Fixtures for the IMAP compliance transcripts (tests/protocol/test_imap_compliance*.py).

These tests port the checks of an independent compliance suite (Dovecot's
imaptest scripts: select, fetch, fetch-body, store, expunge, expunge2, copy,
append, list, subscribe, move, search-sets, search-flags, nil) and the
examples of RFC 3501 and its extensions to transcripts over StringTransport,
reusing the IMAP-SERVER engineer's `imap_transcript` helpers (real SQLite
store, InlineRunner, Clock reactor).

Each test cites the RFC section it checks. A departure from the RFC keeps its
test asserting the correct behaviour, marked ``xfail(strict=True)``: the fix
turns it into an XPASS failure, telling whoever fixed it to drop the marker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    SECRETARY,
    ImapClient,
    ImapEnv,
    deliver,
    lines,
    make_env,
    message,
    populate,
)

__all__ = [
    "SECRETARY", "ImapClient", "ImapEnv", "deliver", "lines", "message",
    "env", "env3", "small_env", "selected", "two_sessions", "untagged_of", "tagged_line",
    "status_of", "literal_append", "fetch_lines",
]


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    """The cardiology population (two agents, one functional mailbox), no mail."""
    populate(store)
    return make_env(tmp_path, store)


@pytest.fixture
def env3(env: ImapEnv) -> ImapEnv:
    """`env` with three plain messages in the secretary's INBOX (UIDs 1..3),
    bodies "body a\\r\\n", "body b\\r\\n", "body c\\r\\n" (imaptest: messages: 3)."""
    for s in ("a", "b", "c"):
        deliver(env.store, SECRETARY, message(s, f"body {s}\r\n"))
    return env


@pytest.fixture
def small_env(tmp_path: Path, store: Any) -> ImapEnv:
    """`env` with a 2000-octet message limit (APPENDLIMIT) and 10 bad commands."""
    populate(store)
    return make_env(tmp_path, store, limits={"message_size": 2000, "bad_commands": 10})


def selected(env: ImapEnv, mailbox: str = "INBOX", *, examine: bool = False) -> ImapClient:
    c = env.login()
    c.ok(f"{'EXAMINE' if examine else 'SELECT'} {mailbox}")
    return c


def two_sessions(env: ImapEnv, mailbox: str = "INBOX") -> tuple[ImapClient, ImapClient]:
    """imaptest's `connections: 2`: two sessions of the same user, same mailbox."""
    return selected(env, mailbox), selected(env, mailbox)


def tagged_line(out: bytes, tag: str) -> bytes:
    """The tagged completion line for `tag` in `out` (without CRLF)."""
    for line in out.split(b"\r\n"):
        if line.startswith(tag.encode() + b" "):
            return line
    raise AssertionError(f"no tagged {tag!r} line in {out!r}")


def untagged_of(out: bytes) -> list[bytes]:
    """The untagged lines ("* ...") of `out`, literal-free responses only."""
    return [x for x in lines(out) if x.startswith(b"* ")]


def status_of(c: ImapClient, mailbox: str, items: str) -> dict[str, int]:
    out = c.ok(f"STATUS {mailbox} ({items})")
    m = re.search(rb"\* STATUS \S+ \(([^)]*)\)", out)
    assert m, out
    words = m.group(1).split()
    return {words[i].decode().upper(): int(words[i + 1]) for i in range(0, len(words), 2)}


def literal_append(c: ImapClient, tag: str, mailbox: str, raw: bytes, extra: str = "") -> bytes:
    """APPEND with a synchronising literal, as imaptest does: waits for "+"."""
    head = f"{tag} APPEND {mailbox}{' ' + extra if extra else ''} {{{len(raw)}}}".encode()
    out = c.cmd(head)
    if not out.startswith(b"+"):
        return out  # refused before the literal (allowed, RFC 3501 7.5)
    return c.cmd(raw)


def fetch_lines(out: bytes) -> list[bytes]:
    return [x for x in lines(out) if re.match(rb"\* \d+ FETCH ", x)]
