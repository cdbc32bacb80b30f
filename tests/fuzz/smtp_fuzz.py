"""SMTP half of the fuzz tier: the world, the cases, the driver, the oracle.

`smtp_cases` keep framing (units from `smtp_grammar`): they get the exact
oracle, one reply per command line, DATA body and BDAT chunk, pipelined or
not, unless the connection ends with 221 or 421. `raw_smtp_cases` mutate a
whole session as bytes (line ends, DATA, BDAT and dots inserted anywhere):
they get the loose one, no escaped error and bounded time, buffers and
output.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz_support import (
    Chunking,
    Played,
    Player,
    S,
    Unit,
    assert_clean_text,
    check_calls,
    chunkings,
    last_line,
    mutated,
    trapped_errors,
)
from hypothesis import strategies as st
from smtp_grammar import LOCAL, PLAIN_TOKEN, smtp_units
from smtp_transcript import Conversation, SmtpEnv, add_user
from store_support import TEST_DOMAIN, copy_store_template, make_settings
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from mssmtpd import parser as p
from storage.interface import MailboxType

LISTENERS = [
    {"name": "mx", "port": 0, "role": "mx", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
    # STARTTLS offered, no TLS context (services.tls is None): 454, and no
    # mail before TLS.
    {"name": "mx-starttls", "port": 0, "role": "mx", "tls": "starttls"},
]


def build_template(directory: Path) -> Path:
    """A migrated store: two staff accounts with their boxes, a functional
    box, 64 KiB quotas (so that "mailbox full" happens too)."""
    from storage import open_store
    from storage.crypto import generate_key_file

    directory.mkdir(parents=True, exist_ok=True)
    generate_key_file(directory / "keys")
    store = open_store(f"sqlite:///{directory / 'mss.db'}", directory / "keys", create=True)
    store.add_domain(TEST_DOMAIN)
    for login in LOCAL[:2]:
        add_user(store, login)
    store.add_mailbox(LOCAL[2], MailboxType.ORG, display_name="Cardiologie", responsible="CH")
    for address in LOCAL:
        store.set_quota(store.get_mailbox(address).id, 64 * 1024)
    store.close()
    return directory


# ------------------------------------------------------------------ cases


@dataclass
class SmtpCase:
    listener: str  # "mx", "submission", "mx-starttls"
    prelude: str  # "none", "ehlo", "helo", "auth" (submission: EHLO then AUTH PLAIN)
    units: list[Unit]
    chunking: Chunking
    limits: dict[str, Any] = field(default_factory=dict)
    timeout: bool = False  # let the idle timer fire at the end...
    tail: bytes = b""  # ...after this unfinished command

    def describe(self) -> str:
        return (f"{self.listener} {self.prelude} {self.chunking} {self.limits} "
                f"timeout={self.timeout} tail={self.tail!r}")


_SETUPS = [("mx", "ehlo"), ("mx", "ehlo"), ("mx", "helo"), ("mx", "none"),
           ("submission", "auth"), ("submission", "auth"), ("submission", "ehlo"),
           ("submission", "none"), ("mx-starttls", "ehlo")]
_limit_variants = st.sampled_from([
    {"bad_commands": 1000, "failed_auth": 1000, "commands_before_mail": 1000},
    {"bad_commands": 1000, "failed_auth": 1000, "commands_before_mail": 1000,
     "bare_line_endings": "normalise"},
    {"bad_commands": 1000, "failed_auth": 1000, "commands_before_mail": 1000,
     "message_size": 4096, "line_length": 200, "recipients": 2},
    {},
])


@st.composite
def smtp_cases(draw: Any, chunking: S[Chunking] | None = None) -> SmtpCase:
    listener, prelude = draw(st.sampled_from(_SETUPS))
    role = "submission" if listener == "submission" else "mx"
    return SmtpCase(listener, prelude, draw(smtp_units(role)),
                    draw(chunking if chunking is not None else chunkings()),
                    draw(_limit_variants), draw(st.integers(0, 5)) == 0,
                    draw(st.sampled_from(TAILS)))


# Where a client may stop (and the idle timer end the connection): nowhere,
# mid-line, in a DATA body, in a BDAT chunk, in an AUTH exchange.
TAILS = [b"", b"", b"MAIL FRO", b"DATA\r\nSubject: x\r\n\r\nhal", b"BDAT 100\r\nabc",
         b"AUTH LOGIN\r\n", b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"
         b"DATA\r\nSubject: x\r\n\r\n" + b"x" * 5000]


@st.composite
def raw_smtp_cases(draw: Any) -> SmtpCase:
    """A whole session mutated as bytes (framing may break), pipelined."""
    case = draw(smtp_cases())
    stream = draw(mutated(b"".join(u.wire for u in case.units), framing=True))
    units = [Unit((stream,), label="raw", complete=False)] if stream else []
    return SmtpCase(case.listener, case.prelude, units, case.chunking, case.limits, case.timeout,
                    case.tail)


# ------------------------------------------------------------------ driving


class SmtpTarget:
    """The player's view of one Conversation; keeps everything written."""

    def __init__(self, conversation: Conversation, message_size: int) -> None:
        self.conversation = conversation
        self.protocol = conversation.protocol
        self.message_size = message_size
        self.output = bytearray()

    def deliver(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.output += self.conversation.take()
        # A message in progress is bounded by the message size (plus one
        # line: the DATA reader holds an unfinished line apart).
        chunks = self.protocol._chunks
        if chunks is not None:
            assert sum(map(len, chunks._parts)) <= self.message_size
        message = self.protocol._data
        if message is not None:
            held = sum(map(len, message._parts)) + 2 * len(message._parts)
            assert held <= self.message_size + 2, held

    def awaiting(self) -> bool:
        return last_line(self.output)[:4] in (b"334 ", b"354 ")

    @property
    def closed(self) -> bool:
        return self.conversation.closed

    def buffered(self) -> int:
        """The line reader's unread octets and the DATA reader's unfinished line."""
        message = self.protocol._data
        pending = len(message._pending) if message is not None else 0
        return len(self.protocol._reader._buf) + pending

    def output_size(self) -> int:
        return len(self.output)


@dataclass
class Outcome:
    played: Played
    output: bytes
    probe: bytes  # the answer to a NOOP sent after the session
    after: bytes  # written by the idle timeout, if fired
    errors: list[str]


def run_case(case: SmtpCase, template: Path, workdir: Path) -> Outcome:
    """Runs one case on a fresh copy of the template store in `workdir`."""
    from storage import open_store

    workdir.mkdir(parents=True, exist_ok=True)
    url, key_file = copy_store_template(template, workdir)
    store = open_store(url, key_file)
    try:
        with trapped_errors() as trap:
            settings = make_settings(workdir, listeners=LISTENERS, limits=case.limits)
            env = SmtpEnv(settings, store)
            conversation = env.connect(case.listener)
            _prelude(conversation, case.prelude)
            target = SmtpTarget(conversation, settings.limits.message_size)
            played = Player(target, case.chunking).play(case.units)
            # Still in step with the client: a NOOP is answered at once.
            probe = b"" if conversation.closed else conversation.send(b"NOOP\r\n")
            after = b""
            if case.timeout and not conversation.closed:
                after = conversation.send(case.tail) if case.tail else b""
                env.clock.advance(settings.limits.smtp_idle_timeout + 1)
                after += conversation.take()
                assert conversation.closed and after.endswith(b"\r\n") and replies(after)[-1] == 421, after
            conversation.protocol.connectionLost(Failure(ConnectionDone()))
        return Outcome(played, bytes(target.output), probe, after, trap.errors)
    finally:
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _prelude(conversation: Conversation, prelude: str) -> None:
    if prelude == "none":
        return
    if prelude == "helo":
        assert conversation.cmd("HELO client.example").startswith(b"250 ")
        return
    assert conversation.ehlo().startswith(b"250-")
    if prelude == "auth":
        out = conversation.cmd("AUTH PLAIN " + PLAIN_TOKEN.decode())
        assert out.startswith(b"235 "), out


# ------------------------------------------------------------------ oracle

_REPLY_LINE = re.compile(rb"\A(\d{3})([ -]|\Z)")


def replies(data: bytes) -> list[int]:
    """The code of each complete reply (multi-line replies once); every line
    must be a well-formed reply line."""
    codes: list[int] = []
    for line in data.split(b"\r\n")[:-1]:
        m = _REPLY_LINE.match(line)
        assert m, f"not an SMTP reply line: {line[:200]!r}"
        assert_clean_text(line, "an SMTP reply")
        if m.group(2) != b"-":
            codes.append(int(m.group(1)))
    assert data.endswith(b"\r\n") or not data, f"unfinished reply: {data[-200:]!r}"
    return codes


def check_common(outcome: Outcome) -> list[int]:
    assert not outcome.errors, "\n".join(outcome.errors)
    # Replies are short: the longest, EHLO's or HELO's, echoes a 255-octet name.
    check_calls(outcome.played, out_per_step=1024, out_per_octet=64)
    replies(outcome.after)
    return replies(outcome.output)


def check_exact(case: SmtpCase, outcome: Outcome) -> None:
    """Framing kept: one reply per command, DATA body and BDAT chunk, or a
    closing 221/421 (which may come on top of the last command's reply)."""
    codes = check_common(outcome)
    played = outcome.played
    expected = sum(s.replies for s in played.steps)
    if played.closed_at is None:
        assert len(codes) == expected, f"{len(codes)} replies for {expected} commands: {codes}"
        if all(case.units[i].complete for i in played.fed_units()):
            # (After an announced chunk never sent, the NOOP is chunk data.)
            probe = replies(outcome.probe)
            assert probe in ([250], [421]), f"NOOP answered {outcome.probe!r}"
        return
    lower = sum(s.replies for s in played.completed_before_close())
    assert lower <= len(codes) <= expected + 1, (lower, len(codes), expected, codes)
    assert codes and codes[-1] in (221, 421), f"closed without 221/421: {codes[-3:]}"


def check_loose(case: SmtpCase, outcome: Outcome) -> None:
    """Framing may be broken: no escaped error; the line reader holds at
    most one command line (SASL responses are the longest)."""
    check_common(outcome)
    for i, call in enumerate(outcome.played.calls):
        assert i == outcome.played.closed_at or call.buffered <= p.SASL_LINE_MAX + 1 + max(
            0, _data_line(case)), call.buffered


def _data_line(case: SmtpCase) -> int:
    """The DATA reader may hold an unfinished line up to the message size
    when it normalises bare line ends."""
    if case.limits.get("bare_line_endings") == "normalise":
        return int(case.limits.get("message_size", 10 * 1024 * 1024))
    return int(case.limits.get("line_length", 1000)) + 2
