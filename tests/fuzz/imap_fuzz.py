"""IMAP half of the fuzz tier: the world, the cases, the driver, the oracle.

`imap_cases` keep framing (commands from `imap_grammar`): they get the exact
oracle, one tagged reply per command in order, or the connection ends with
``* BYE``. `raw_imap_cases` mutate a whole session as bytes (line ends and
literal markers inserted anywhere): they get the loose one, no escaped error
and bounded time, buffers and output.
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
from imap_grammar import SHARED_INBOX, cap_stream_wildcards, imap_units
from imap_transcript import CARDIO, LISTENERS, PASSWORD, SECRETARY, ImapClient, ImapEnv, populate
from store_support import TEST_DOMAIN, copy_store_template, make_settings
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from storage.interface import Delivery

# ------------------------------------------------------------------ world

STORED: list[tuple[bytes, tuple[str, ...]]] = [
    (b"From: Dr Martin <dr.martin@hopital.test>\r\nTo: <secretaire@hopital.test>\r\n"
     b"Subject: Compte rendu\r\nDate: Mon, 7 Feb 2026 21:52:25 +0100\r\n"
     b"Message-ID: <cr1@hopital.test>\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello world\r\n.line\r\n", ()),
    (b"From: =?utf-8?q?J=C3=A9r=C3=B4me?= <jerome@clinique.test>\r\n"
     b"To: secretaire@hopital.test, cardiologie@hopital.test\r\nCc: <a@b.test>\r\n"
     b"Subject: =?utf-8?b?w6ljaG9ncmFwaGll?=\r\nDate: 1 Jan 2026 00:00:00 +0000\r\n"
     b"Message-ID: <mp2@clinique.test>\r\nMIME-Version: 1.0\r\n"
     b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
     b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: quoted-printable\r\n\r\nR=C3=A9sultat normal=\r\n\r\n"
     b'--b1\r\nContent-Type: application/pdf; name="r.pdf"\r\n'
     b"Content-Transfer-Encoding: base64\r\n"
     b'Content-Disposition: attachment; filename="r.pdf"\r\n\r\n'
     b"JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\r\n"
     b"--b1\r\nContent-Type: message/rfc822\r\n\r\n"
     b"From: x@y.test\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n",
     ("\\Seen", "$Label1")),
    (b"From: labo@hopital.test\r\nTo: secretaire@hopital.test\r\nSubject: bilan\r\n"
     b"Date: Tue, 3 Mar 2026 08:00:00 +0100\r\nContent-Type: text/html; charset=latin1\r\n"
     b"Content-Transfer-Encoding: 8bit\r\n\r\n<p>r\xe9sultat</p>\r\n", ("\\Flagged",)),
    (b"Subject: no from\r\n\r\n", ("\\Deleted", "\\Answered")),
]


# Text parts in the charsets messages declare (SEARCH decodes them).
STORED_CHARSETS = ["utf-16", "x-unknown", "windows-1252", "utf-7", "rot13", "zlib", "idna",
                   "punycode"]
STORED += [(b"Subject: charset " + cs.encode() + b"\r\nContent-Type: text/plain; charset="
            + cs.encode() + b"\r\n\r\nr\xe9sultat hello\r\n", ()) for cs in STORED_CHARSETS]


def build_template(directory: Path) -> Path:
    """A migrated store in `directory`: the accounts of `populate`, eight
    messages in the secretary's INBOX, one in the shared box, 256 KiB quotas
    (COPY 1:* INBOX doubles the folder: quotas keep sessions small)."""
    from storage import open_store
    from storage.crypto import generate_key_file

    directory.mkdir(parents=True, exist_ok=True)
    generate_key_file(directory / "keys")
    store = open_store(f"sqlite:///{directory / 'mss.db'}", directory / "keys", create=True)
    store.add_domain(TEST_DOMAIN)
    populate(store)
    mine = store.get_mailbox(SECRETARY)
    cardio = store.get_mailbox(CARDIO)
    for raw, flags in STORED:
        store.deliver(Delivery(raw=raw, mailbox_ids=(mine.id,), flags=frozenset(flags)))
    store.deliver(Delivery(raw=STORED[0][0], mailbox_ids=(cardio.id,)))
    store.set_quota(mine.id, 256 * 1024)
    store.set_quota(cardio.id, 256 * 1024)
    store.close()
    return directory


# ------------------------------------------------------------------ cases


@dataclass
class ImapCase:
    prelude: str  # "none", "auth", "selected", "examine", "shared"
    units: list[Unit]
    chunking: Chunking
    limits: dict[str, Any] = field(default_factory=dict)
    timeout: bool = False  # let the idle timer fire at the end...
    tail: bytes = b""  # ...after this unfinished command

    def describe(self) -> str:
        return (f"{self.prelude} {self.chunking} {self.limits} timeout={self.timeout} "
                f"tail={self.tail!r}")


PRELUDES = ["selected", "selected", "selected", "auth", "examine", "shared", "none"]
_limit_variants = st.sampled_from([
    {"bad_commands": 1000, "failed_auth": 1000},
    {"bad_commands": 1000, "failed_auth": 1000},
    {},
    {"bad_commands": 1000, "failed_auth": 1000, "command_line_length": 2048},
])


@st.composite
def imap_cases(draw: Any, chunking: S[Chunking] | None = None) -> ImapCase:
    return ImapCase(
        prelude=draw(st.sampled_from(PRELUDES)),
        units=draw(imap_units()),
        chunking=draw(chunking if chunking is not None else chunkings()),
        limits=draw(_limit_variants),
        timeout=draw(st.integers(0, 5)) == 0,
        tail=draw(st.sampled_from(TAILS)),
    )


# Where a client may stop (and the idle timer end the connection): nowhere,
# mid-line, mid-literal, in IDLE, after an unanswered "+".
TAILS = [b"", b"", b"z1 NOO", b"z2 APPEND INBOX {50+}\r\nabc", b"z3 IDLE\r\n",
         b"z4 LOGIN {5}\r\n", b"z5 AUTHENTICATE PLAIN\r\n", b"z6 SEARCH TEXT {3}\r\nab"]


@st.composite
def raw_imap_cases(draw: Any) -> ImapCase:
    """A whole session mutated as bytes (framing may break), pipelined."""
    case = draw(imap_cases())
    stream = b"".join(u.wire for u in case.units)
    stream = cap_stream_wildcards(draw(mutated(stream, framing=True)))
    units = [Unit((stream,), label="raw", complete=False)] if stream else []
    return ImapCase(case.prelude, units, case.chunking, case.limits, case.timeout, case.tail)


# ------------------------------------------------------------------ driving


class ImapTarget:
    """The player's view of one ImapClient; keeps everything written."""

    def __init__(self, client: ImapClient) -> None:
        self.client = client
        self.output = bytearray()

    def deliver(self, data: bytes) -> None:
        self.client.proto.dataReceived(data)
        self.output += self.client.read()

    def awaiting(self) -> bool:
        return last_line(self.output).startswith(b"+ ")

    @property
    def closed(self) -> bool:
        return self.client.closed

    def buffered(self) -> int:
        return int(self.client.proto.reader.buffered)

    def output_size(self) -> int:
        return len(self.output)


@dataclass
class Outcome:
    played: Played
    output: bytes
    probe: bytes  # the answer to PROBE, sent after the session
    after: bytes  # written by the idle timeout, if fired
    errors: list[str]
    max_line: int


PROBE = b"zz0 NOOP\r\n"


def run_case(case: ImapCase, template: Path, workdir: Path) -> Outcome:
    """Runs one case on a fresh copy of the template store in `workdir`."""
    from storage import open_store

    workdir.mkdir(parents=True, exist_ok=True)
    url, key_file = copy_store_template(template, workdir)
    store = open_store(url, key_file)
    try:
        with trapped_errors() as trap:
            limits = {**case.limits}
            settings = make_settings(workdir, listeners=LISTENERS, limits=limits)
            env = ImapEnv(settings, store)
            client = env.connect()
            _prelude(client, case.prelude)
            target = ImapTarget(client)
            played = Player(target, case.chunking).play(case.units)
            # Still in step with the client: a NOOP is answered at once.
            probe = b"" if client.closed else client.send(PROBE)
            after = b""
            if case.timeout and not client.closed:
                after = client.send(case.tail) if case.tail else b""
                env.clock.advance(settings.limits.imap_idle_command_timeout
                                  + settings.limits.imap_idle_timeout + 1)
                after += client.read()
                assert client.closed and b"* BYE" in after, after
            client.proto.connectionLost(Failure(ConnectionDone()))
        return Outcome(played, bytes(target.output), probe, after, trap.errors,
                       settings.limits.command_line_length)
    finally:
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _prelude(client: ImapClient, prelude: str) -> None:
    steps = {
        "none": [],
        "auth": [f'l1 LOGIN {SECRETARY} "{PASSWORD}"'],
        "selected": [f'l1 LOGIN {SECRETARY} "{PASSWORD}"', "s1 SELECT INBOX"],
        "examine": [f'l1 LOGIN {SECRETARY} "{PASSWORD}"', "s1 EXAMINE INBOX"],
        "shared": [f'l1 LOGIN {SECRETARY} "{PASSWORD}"', f's1 SELECT "{SHARED_INBOX}"'],
    }[prelude]
    for line in steps:
        tag = line.split()[0].encode()
        out = client.cmd(line)
        assert tag + b" OK" in out, (line, out)


# ------------------------------------------------------------------ oracle

_RESPONSE_LITERAL = re.compile(rb"~?\{(\d+)\}\Z")


def responses(data: bytes) -> list[bytes]:
    """Server responses, literal contents left out (they are message data)."""
    out: list[bytes] = []
    current = bytearray()
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        assert end >= 0, f"response not ended by CRLF: {data[pos:pos + 200]!r}"
        line = data[pos:end]
        m = _RESPONSE_LITERAL.search(line)
        if m:
            current += line[: m.start()] + b"{}"
            pos = end + 2 + int(m.group(1))
            assert pos <= len(data), f"literal longer than the output: {line[:200]!r}"
            continue
        current += line
        out.append(bytes(current))
        current = bytearray()
        pos = end + 2
    return out


def check_common(outcome: Outcome) -> list[bytes]:
    assert not outcome.errors, "\n".join(outcome.errors)
    # A FETCH may return the whole folder (<= its 256 KiB quota) per item named.
    check_calls(outcome.played, out_per_step=300 * 1024, out_per_octet=300 * 1024)
    found = responses(outcome.output)
    extra = responses(outcome.probe) + responses(outcome.after)
    for response in found + extra:
        assert_clean_text(response, "an IMAP response")
        if not response.startswith((b"* ", b"+ ")):
            tag, _, rest = response.partition(b" ")
            assert rest[:3] in (b"OK ", b"NO ", b"BAD") , response[:200]
    return found


def check_exact(case: ImapCase, outcome: Outcome) -> None:
    """Framing kept: one tagged reply per command, in order, or a BYE."""
    found = check_common(outcome)
    played = outcome.played
    tagged = [r.split(b" ", 1)[0].decode("latin-1") for r in found
              if not r.startswith((b"* ", b"+ "))]
    tags = [u.tag for u in case.units]
    assert len(tagged) == len(set(tagged)), f"a tag answered twice: {tagged}"
    assert set(tagged) <= set(tags), f"replies to tags never sent: {set(tagged) - set(tags)}"
    order = [t for t in tags if t in tagged]
    assert tagged == order, f"replies out of order: {tagged}"
    untagged_bad = [r for r in found if r.startswith(b"* BAD")]
    assert not untagged_bad, untagged_bad
    fed = [case.units[i].tag for i in played.fed_units()]
    if played.closed_at is None:
        missing = [t for t in fed if t not in tagged]
        assert not missing, f"no tagged reply for {missing}"
        assert b"\r\nzz0 OK" in b"\r\n" + outcome.probe, f"NOOP not answered: {outcome.probe!r}"
    else:
        assert any(r.startswith(b"* BYE") for r in found), "closed without BYE"
        done = {case.units[s.unit].tag for s in played.completed_before_close() if s.final}
        missing = [t for t in done if t not in tagged]
        assert not missing, f"no tagged reply for {missing} before the close"


def check_loose(outcome: Outcome) -> None:
    """Framing may be broken: no escaped error, bounded buffers."""
    check_common(outcome)
    fed = bytearray()
    for call in outcome.played.calls:
        fed += call.data
        append = fed.lower().rfind(b"append")
        # A line is bounded by max_line; literals by the command's budget,
        # except an APPEND message (bounded by message_size).
        bound = 3 * outcome.max_line + 4096 + (len(fed) - append if append >= 0 else 0)
        assert call.buffered <= bound, (call.buffered, bound)
