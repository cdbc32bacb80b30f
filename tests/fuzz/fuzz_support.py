"""The protocol-independent half of the fuzz tier: units, chunkings, the
player that feeds them, the bounds, the error trap and the Hypothesis settings.

A *unit* is what a well-behaved client sends for one command: its first
segment, then (only if the server asked for more: IMAP ``+``, SMTP 334/354)
each following segment. The player concatenates units into a stream, cuts it
into chunks (whole, one unit per chunk, byte by byte, random sizes), calls
``dataReceived`` once per chunk, and measures each call: CPU time
(`time.process_time`), octets the protocol keeps buffered, octets it writes.
Protocol modules (`imap_fuzz`, `smtp_fuzz`) say how to drive their protocol
and check the replies.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

S = st.SearchStrategy

# CPU time one command may take on the reactor. Commands here take 1-30 ms;
# the bound leaves a slow, shared 2-core CI machine a wide margin.
CPU_BOUND = 0.5
# Calls per stream at most: byte by byte, a 70 KB line would be 70,000
# dataReceived calls (each scanning the buffered line for its end, as the
# readers do): longer streams get proportionally larger chunks.
MAX_CALLS = 2048


def examples(default: int) -> int:
    """max_examples: `default` in CI, MSS_FUZZ_EXAMPLES for a longer local run."""
    return int(os.environ.get("MSS_FUZZ_EXAMPLES") or default)


def fuzz_settings(default_examples: int) -> settings:
    """Reproducible by default: the examples derive from the test's source
    (derandomize) and no example database is read or written. With
    MSS_FUZZ_SEED=n (see `fuzz_seed`), runs explore from that seed instead.
    The wall-clock deadline is off: the tier bounds CPU time per command
    itself (`CPU_BOUND`), which a busy machine does not inflate."""
    return settings(
        max_examples=examples(default_examples),
        derandomize=not os.environ.get("MSS_FUZZ_SEED"),
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example],
    )


def fuzz_seed(test: Callable[..., Any]) -> Callable[..., Any]:
    """`@seed(MSS_FUZZ_SEED)` when that variable is set, else nothing."""
    value = os.environ.get("MSS_FUZZ_SEED")
    return seed(int(value))(test) if value else test


# ------------------------------------------------------------------ units


@dataclass(frozen=True)
class Unit:
    """One command as a client sends it.

    segments[0] is always sent; segments[i > 0] only once the server asked
    for a continuation after segments[i - 1] (otherwise the client gives up
    the command, as a real one does when its literal is refused). `finish`
    is sent when the server still waits after the last segment: "*" ends an
    IMAP IDLE or AUTHENTICATE, or an SMTP AUTH; ".\r\n" an SMTP DATA.
    `replies` (SMTP): replies each segment earns; the finish earns one.
    """

    segments: tuple[bytes, ...]
    tag: str | None = None
    replies: tuple[int, ...] = ()
    finish: bytes = b""
    label: str = ""
    # False for raw byte streams, which may end inside a command: then the
    # protocol may keep their tail.
    complete: bool = True

    def __post_init__(self) -> None:
        assert self.segments and all(self.segments), self
        assert not self.replies or len(self.replies) == len(self.segments), self

    @property
    def wire(self) -> bytes:
        return b"".join(self.segments)


@dataclass(frozen=True)
class Chunking:
    """How a stream is cut: "whole", "unit" (one segment per call), "byte"
    (one octet per call) or "random" (sizes taken in turn from `sizes`);
    at most about MAX_CALLS calls per stream."""

    mode: str
    sizes: tuple[int, ...] = (1,)

    def cuts(self, stream: bytes, ends: list[int]) -> Iterator[tuple[int, int]]:
        mode, sizes = self.mode, self.sizes
        if mode == "byte":
            mode, sizes = "random", (1,)
        if mode == "random":
            mean = sum(sizes) / len(sizes)
            scale = -(-len(stream) // int(MAX_CALLS * mean))  # ceil
            sizes = tuple(n * scale for n in sizes)
        if mode == "whole":
            yield 0, len(stream)
        elif mode == "unit":
            start = 0
            for end in ends:
                if end > start:
                    yield start, end
                    start = end
        else:
            start, i = 0, 0
            while start < len(stream):
                end = min(len(stream), start + sizes[i % len(sizes)])
                yield start, end
                start, i = end, i + 1


def chunkings() -> st.SearchStrategy[Chunking]:
    return st.one_of(
        st.sampled_from([Chunking("whole"), Chunking("unit"), Chunking("byte")]),
        st.lists(st.integers(1, 300), min_size=1, max_size=8).map(
            lambda sizes: Chunking("random", tuple(sizes))),
    )


# ------------------------------------------------------------------ playing


class Target(Protocol):
    """What the player needs of a connection under test."""

    def deliver(self, data: bytes) -> None: ...  # one dataReceived
    def awaiting(self) -> bool: ...  # the server asked for a continuation
    @property
    def closed(self) -> bool: ...
    def buffered(self) -> int: ...  # input octets the protocol holds
    def output_size(self) -> int: ...  # octets written so far


@dataclass
class Step:
    """A segment as fed: which unit, which segment (-1: the finish)."""

    unit: int
    index: int
    data: bytes
    replies: int
    final: bool  # nothing more of its unit is planned
    chunk: int = -1  # index of the dataReceived call that completed it


@dataclass
class Call:
    """One dataReceived call."""

    data: bytes
    cpu: float
    steps: int  # segments it completed
    buffered: int
    allowed_buffer: int
    output: int


@dataclass
class Played:
    steps: list[Step] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    abandoned: set[int] = field(default_factory=set)  # units the server refused midway
    closed_at: int | None = None  # index of the call during which it closed
    unit_cpu: dict[int, float] = field(default_factory=dict)

    def fed_units(self) -> list[int]:
        return sorted({s.unit for s in self.steps})

    def completed_before_close(self) -> list[Step]:
        """Steps completed by calls before the one during which it closed."""
        if self.closed_at is None:
            return list(self.steps)
        return [s for s in self.steps if 0 <= s.chunk < self.closed_at]


class Player:
    """Feeds units through a `Target` in the chunks a `Chunking` says."""

    def __init__(self, target: Target, chunking: Chunking) -> None:
        self.target = target
        self.chunking = chunking
        self.played = Played()
        self._pending: list[Step] = []
        self._unit_fed = 0  # octets of the current unit fed so far

    def play(self, units: list[Unit]) -> Played:
        for i, unit in enumerate(units):
            if not self._play_unit(i, unit):
                break
        self._flush()
        return self.played

    def _play_unit(self, i: int, unit: Unit) -> bool:
        last = len(unit.segments) - 1
        for k, segment in enumerate(unit.segments):
            if k > 0:
                self._flush()
                if self.target.closed:
                    return False
                if not self.target.awaiting():
                    self.played.abandoned.add(i)
                    return True
            replies = unit.replies[k] if unit.replies else 0
            final = k == last and not unit.finish and unit.complete
            self._pending.append(Step(i, k, segment, replies, final))
        if unit.finish:
            self._flush()
            if self.target.closed:
                return False
            if self.target.awaiting():
                self._pending.append(Step(i, -1, unit.finish, 1, True))
        return True

    def _flush(self) -> None:
        steps, self._pending = self._pending, []
        if not steps or self.target.closed:
            return
        stream = b"".join(s.data for s in steps)
        ends: list[int] = []
        before: list[int] = []  # octets of the step's unit fed before it
        offset = 0
        for s in steps:
            if s.index == 0:
                self._unit_fed = 0
            before.append(self._unit_fed)
            self._unit_fed += len(s.data)
            offset += len(s.data)
            ends.append(offset)
        j = 0
        for start, end in self.chunking.cuts(stream, ends):
            done: list[int] = []
            while j < len(steps) and ends[j] <= end:
                done.append(j)
                j += 1
            # All the protocol may hold: the octets of the unit in progress
            # (every complete command has run inline, the store answering
            # at once).
            if j < len(steps) and ends[j] - len(steps[j].data) < end:
                allowed = before[j] + end - (ends[j] - len(steps[j].data))
            elif done and not steps[done[-1]].final:
                allowed = before[done[-1]] + len(steps[done[-1]].data)
            else:
                allowed = 0
            out_before = self.target.output_size()
            cpu0 = time.process_time()
            self.target.deliver(stream[start:end])
            cpu = time.process_time() - cpu0
            n = len(self.played.calls)
            for k in done:
                steps[k].chunk = n
                self.played.steps.append(steps[k])
                unit = steps[k].unit
                self.played.unit_cpu[unit] = self.played.unit_cpu.get(unit, 0.0) + cpu / len(done)
            self.played.calls.append(Call(
                stream[start:end], cpu, len(done), self.target.buffered(), allowed,
                self.target.output_size() - out_before))
            if self.target.closed:
                self.played.closed_at = n
                return


# ------------------------------------------------------------------ checks


def check_calls(played: Played, *, out_per_step: int, out_per_octet: int) -> None:
    """The bounds every dataReceived call must keep."""
    for i, call in enumerate(played.calls):
        allowance = CPU_BOUND * max(1, call.steps)
        assert call.cpu <= allowance, (
            f"reactor blocked {call.cpu:.3f} s CPU (bound {allowance:.1f} s) by "
            f"{call.data[:200]!r}")
        # Input after a LOGOUT or QUIT in the same packet stays unread until
        # the connection is gone: only the closing call may hold it.
        assert i == played.closed_at or call.buffered <= call.allowed_buffer, (
            f"{call.buffered} octets buffered, {call.allowed_buffer} of unfinished "
            f"commands fed, after {call.data[:200]!r}")
        limit = out_per_step * (1 + call.steps) + out_per_octet * len(call.data)
        assert call.output <= limit, (
            f"{call.output} octets written (bound {limit}) for {call.data[:200]!r}")


# ------------------------------------------------------------------ errors


class ErrorTrap(logging.Handler):
    """Errors logged while a connection runs: `log.error` (a reference id
    given to the client), anything logged with a traceback, and Twisted's
    own (unhandled errors in Deferreds, reported when they are collected)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            text = f"{record.name} {record.levelname}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.errors.append(text)

    def twisted(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        level = getattr(event.get("log_level"), "name", "")
        if failure is not None or event.get("isError") or level in ("error", "critical"):
            detail = failure.getTraceback() if failure is not None else ""
            self.errors.append(f"twisted: {event.get('log_format')} {detail}")


@contextmanager
def trapped_errors() -> Iterator[ErrorTrap]:
    trap = ErrorTrap()
    root = logging.getLogger()
    root.addHandler(trap)
    globalLogPublisher.addObserver(trap.twisted)
    # Unobserved failed Deferreds report when collected: collect at the end,
    # scanning only what this block allocated (a full collection under
    # Hypothesis costs a quarter of a second).
    gc.freeze()
    try:
        yield trap
        gc.collect()
    finally:
        gc.unfreeze()
        globalLogPublisher.removeObserver(trap.twisted)
        root.removeHandler(trap)


def last_line(output: bytes | bytearray) -> bytes:
    """The last complete line written (b"" if the output does not end one)."""
    if not output.endswith(b"\r\n"):
        return b""
    start = output.rfind(b"\r\n", 0, len(output) - 2)
    return bytes(output[start + 2 if start >= 0 else 0 :])


FORBIDDEN_TEXT = (b"Traceback", b"SERVERBUG", b"Internal error", b"Local error",
                  b"(ref ", b"Exception", b"File \"")


def assert_clean_text(text: bytes, where: str) -> None:
    """No reply may carry an internal error: that means one escaped."""
    for bad in FORBIDDEN_TEXT:
        assert bad not in text, f"{bad!r} in {where}: {text[:300]!r}"


# ------------------------------------------------------------------ mutation

ODD_OCTETS = [b"\x00", b"\x80", b"\xff", b"\xc3\xa9", b"\r", b"\t", b"\x7f", b"\x1b", b"\xe2\x82",
              b"\r\r", b" ", b"  "]
NUMBERS = [b"0", b"1", b"2", b"3", b"4", b"7", b"01", b"-1", b"4294967295", b"4294967296",
           b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
           b"99999999999999999999999"]
_INSERTS = [b"(", b")", b"{", b"}", b'"', b"\\", b"*", b"%", b"[", b"]", b"<", b">", b":", b",",
            b".", b"=", b"@", b"+", b"-", b"NIL", b"(" * 200, b"x" * 1000]
# What may split or desynchronise a stream: line ends, literal markers with
# no data, a DATA terminator, a continuation line.
_FRAMING = [b"\r\n", b"\n", b"\r", b"{5}\r\n", b"{99999+}\r\n", b"~{3}\r\n", b"{0}\r\n",
            b"\r\n.\r\n", b"\n.\n", b"DONE\r\n", b"DATA\r\n", b"BDAT 100\r\n"]
_DIGITS = re.compile(rb"\d+")


@st.composite
def mutated(draw: Any, data: bytes, *, framing: bool) -> bytes:
    """`data` after a few byte-level mutations (insert, delete, duplicate,
    change a number, swap case, truncate); `framing` allows line ends and
    literal markers to be inserted (which may desynchronise a stream)."""
    out = bytearray(data)
    inserts = [st.sampled_from(_INSERTS + ODD_OCTETS + NUMBERS)]
    if framing:
        inserts.append(st.sampled_from(_FRAMING))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "insert", "delete", "duplicate", "number", "case",
                                   "truncate"]))
        pos = draw(st.integers(0, len(out)))
        if op == "insert":
            out[pos:pos] = draw(st.one_of(*inserts))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        elif op == "duplicate":
            out[pos:pos] = out[pos : pos + draw(st.integers(1, 40))]
        elif op == "number":
            m = _DIGITS.search(bytes(out), pos)
            if m:
                out[m.start() : m.end()] = draw(st.sampled_from(NUMBERS))
        elif op == "case":
            out[pos : pos + 8] = bytes(out[pos : pos + 8]).swapcase()
        elif op == "truncate" and draw(st.booleans()):
            del out[pos:]
    return bytes(out)
