"""Byte-stream framing for SMTP: command lines and the DATA body. Pure.

The security of an SMTP server lives here (SMTP smuggling, CVE-2023-51766 and
friends): only CR LF "." CR LF ends DATA, whatever the settings say about bare
line endings; an over-long line never resynchronises into command mode, it is
swallowed until its real CRLF; nothing is buffered beyond the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mssmtpd.replies import R, Reply

_BARE_RE = re.compile(rb"\r\n?|\n")


@dataclass(frozen=True, slots=True)
class Line:
    text: bytes  # without the line ending
    bare: bool  # ended by a bare LF instead of CRLF


@dataclass(frozen=True, slots=True)
class LineTooLong:
    pass


class LineReader:
    """Command lines. Holds the connection's unread bytes."""

    def __init__(self, max_length: int) -> None:
        self._buf = bytearray()
        self._max = max_length
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def unread(self, data: bytes) -> None:
        """Puts bytes back in front (what followed the end of DATA)."""
        self._buf[:0] = data

    def take(self) -> bytes:
        """Everything not yet read (handed to the DATA reader)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def clear(self) -> int:
        """Drops unread bytes (STARTTLS: plaintext sent before the handshake
        must never be executed after it, RFC 3207 section 4.2). Returns how many."""
        n = len(self._buf)
        self._buf.clear()
        self._discarding = False
        return n

    def pending(self) -> bool:
        return bool(self._buf)

    def next_line(self) -> Line | LineTooLong | None:
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > self._max:
                    # Keep a trailing CR: it may be half of the CRLF.
                    tail = b"\r" if self._buf.endswith(b"\r") else b""
                    self._buf[:] = tail
                    if not self._discarding:
                        self._discarding = True
                        return LineTooLong()
                return None
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if self._discarding:
                self._discarding = False
                continue  # the tail of a line already refused
            bare = not raw.endswith(b"\r")
            text = raw if bare else raw[:-1]
            if len(text) + 2 > self._max:
                return LineTooLong()
            return Line(text, bare)


@dataclass(frozen=True, slots=True)
class DataResult:
    content: bytes | None  # the message, CRLF line endings, dots unstuffed
    error: Reply | None


class DataReader:
    """The DATA body (RFC 5321 4.1.1.4, 4.5.2).

    Lines are delimited by CRLF only. A bare CR or LF inside a line is refused
    (`normalise=False`: the whole message is rejected once the real end
    arrives) or turned into CRLF (`normalise=True`); in both cases it can
    never end the message nor start a dot-line. Once the message is refused
    (size, line length, bare ending) the rest is consumed without being kept.
    """

    def __init__(self, *, max_size: int, max_line: int, normalise: bool) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._normalise = normalise
        self._parts: list[bytes] = []
        self._size = 0
        self._pending = b""
        self._discarding = False
        self.error: Reply | None = None
        self.done = False

    @property
    def size(self) -> int:
        return self._size

    def feed(self, data: bytes) -> bytes | None:
        """Consumes bytes; returns what follows the terminating "." line once
        the body is complete (maybe b""), else None."""
        buf = self._pending + data if self._pending else data
        start = 0
        find = buf.find
        while True:
            idx = find(b"\r\n", start)
            if idx < 0:
                break
            line = buf[start:idx]
            start = idx + 2
            if self._discarding:
                self._discarding = False
                continue  # rest of an over-long line: not at a line start
            if line[:1] == b".":
                if len(line) == 1:
                    self.done = True
                    self._pending = b""
                    return buf[start:]
                line = line[1:]
            self._add(line)
        rest = buf[start:]
        if len(rest) > self._max_line:
            self._fail(R.MESSAGE_LINE_TOO_LONG)
            self._discarding = True
            rest = b"\r" if rest.endswith(b"\r") else b""
        self._pending = rest
        return None

    def _fail(self, reply: Reply) -> None:
        if self.error is None:
            self.error = reply
        self._parts = []

    def _add(self, line: bytes) -> None:
        if self.error is not None:
            return
        if b"\r" in line or b"\n" in line:
            if not self._normalise:
                self._fail(R.MESSAGE_BARE_LINE_ENDING)
                return
            line = _BARE_RE.sub(b"\r\n", line)
            longest = max(len(part) for part in line.split(b"\r\n"))
        else:
            longest = len(line)
        if longest + 2 > self._max_line:
            self._fail(R.MESSAGE_LINE_TOO_LONG)
            return
        self._size += len(line) + 2
        if self._size > self._max_size:
            self._fail(R.MESSAGE_TOO_BIG)
            return
        self._parts.append(line)

    def result(self) -> DataResult:
        if self.error is not None:
            return DataResult(None, self.error)
        if not self._parts:
            return DataResult(b"", None)
        self._parts.append(b"")
        content = b"\r\n".join(self._parts)
        self._parts = []
        return DataResult(content, None)
