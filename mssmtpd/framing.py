"""Byte-stream framing for SMTP: command lines and the DATA body. Pure.

The security of an SMTP server lives here (SMTP smuggling, CVE-2023-51766 and
friends): only CR LF "." CR LF ends DATA, whatever the settings say about bare
line endings; an over-long line never resynchronises into command mode, it is
swallowed until its real CRLF; nothing is buffered beyond the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mssmtpd.replies import R, Reply

_BARE_RE = re.compile(rb"\r\n?|\n")
_BARE_CHECK_RE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@dataclass(frozen=True, slots=True)
class Line:
    text: bytes  # without the line ending
    bare: bool  # ended by a bare LF instead of CRLF


@dataclass(frozen=True, slots=True)
class LineTooLong:
    # The line's first octets, so the reply can name the command (an AUTH
    # line gets RFC 4954's 5.5.6); not part of equality.
    head: bytes = field(default=b"", compare=False)


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

    @property
    def buffered(self) -> int:
        """Unread octets held in memory."""
        return len(self._buf)

    def next_line(self) -> Line | LineTooLong | None:
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > self._max:
                    # Keep a trailing CR: it may be half of the CRLF.
                    tail = b"\r" if self._buf.endswith(b"\r") else b""
                    head = bytes(self._buf[:16])
                    self._buf[:] = tail
                    if not self._discarding:
                        self._discarding = True
                        return LineTooLong(head)
                return None
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if self._discarding:
                self._discarding = False
                continue  # the tail of a line already refused
            bare = not raw.endswith(b"\r")
            text = raw if bare else raw[:-1]
            if len(text) + 2 > self._max:
                return LineTooLong(text[:16])
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
        if not self._discarding and self.error is None:
            # `_pending` is the start of a line, so the fast path may begin
            # there: a body split across reads still takes it at its end.
            rest = self._feed_whole(self._pending + data if self._pending else data)
            if rest is not None:
                self._pending = b""
                return rest
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
            refusal = self._partial_refusal(rest, len(data))
            if refusal is not None:
                self._fail(refusal)
                self._discarding = True
                rest = b"\r" if rest.endswith(b"\r") else b""
        self._pending = rest
        return None

    def _partial_refusal(self, rest: bytes, new: int) -> Reply | None:
        """An unfinished line longer than a line may be: refused, unless bare
        line endings will be normalised and cut it into short lines. Only the
        newly arrived bytes (plus one line of context) are scanned, so a long
        run of bare-LF lines costs linear time; the whole is bounded by the
        message size."""
        if not self._normalise:
            return R.MESSAGE_LINE_TOO_LONG
        if len(rest) > self._max_size:
            return R.MESSAGE_TOO_BIG
        window = rest[-(new + self._max_line + 1):]
        if len(window) == len(rest) and window.startswith(b"."):
            window = window[1:]  # the stuffing dot, which `_add` does not count
        if max(map(len, _BARE_RE.split(window))) + 2 > self._max_line:
            return R.MESSAGE_LINE_TOO_LONG
        return None

    def _feed_whole(self, data: bytes) -> bytes | None:
        """Fast path for the usual case: the rest of the message is in `data`
        and is clean (no bare CR/LF, no long line, within the size). Returns
        what follows the end, or None to let the line-by-line path decide
        (which gives the same answer on clean input, and handles the rest)."""
        if data.startswith(b".\r\n"):
            self.done = True
            return data[3:]
        idx = data.find(b"\r\n.\r\n")
        if idx < 0:
            return None
        body = data[:idx]
        # No bare CR or LF: every CR and every LF is part of a CRLF (three
        # C-speed counts; the look-behind regex cost ~10% of a worker's CPU).
        crlf = body.count(b"\r\n")
        if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
            return None
        if len(body) + 2 > self._max_line and (
                max(map(len, body.split(b"\r\n"))) + 2 > self._max_line):
            return None
        # RFC 5321 4.5.2: drop the first dot of every line starting with one.
        if body.startswith(b"."):
            body = body[1:]
        body = body.replace(b"\r\n.", b"\r\n")
        if self._size + len(body) + 2 > self._max_size:
            return None
        self._size += len(body) + 2
        self._parts.append(body)
        self.done = True
        return data[idx + 5:]

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


class ChunkReader:
    """BDAT chunks (RFC 3030). A chunk is exactly `size` octets, whatever
    they contain, so it always ends where the client said; the assembled
    message still obeys the bare-CR/LF and line-length rules, because it may
    later be relayed with DATA where a bare "\\n.\\n" would matter."""

    def __init__(self, *, max_size: int, max_line: int, normalise: bool) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._normalise = normalise
        self._parts: list[bytes] = []
        self.size = 0
        self.error: Reply | None = None
        self.remaining = 0

    def start_chunk(self, size: int) -> None:
        self.remaining = size

    def feed(self, data: bytes) -> bytes | None:
        """Consumes up to the end of the current chunk; returns the bytes
        after it once the chunk is complete, else None."""
        take = data[: self.remaining]
        self.remaining -= len(take)
        self.size += len(take)
        if self.error is None:
            if self.size > self._max_size:
                self.error = R.MESSAGE_TOO_BIG
                self._parts = []
            else:
                self._parts.append(take)
        if self.remaining:
            return None
        return data[len(take):]

    def result(self) -> DataResult:
        if self.error is not None:
            return DataResult(None, self.error)
        content = b"".join(self._parts)
        self._parts = []
        if _BARE_CHECK_RE.search(content):
            if not self._normalise:
                return DataResult(None, R.MESSAGE_BARE_LINE_ENDING)
            content = _BARE_RE.sub(b"\r\n", content)
        if content and not content.endswith(b"\r\n"):
            content += b"\r\n"
        if any(len(line) + 2 > self._max_line for line in content.split(b"\r\n")):
            return DataResult(None, R.MESSAGE_LINE_TOO_LONG)
        return DataResult(content, None)


# RFC 5321 6.3: a message that went through this many MTAs is looping; the
# threshold SHOULD be at least 100 Received fields.
MAX_HOPS = 100


def received_count(content: bytes) -> int:
    """Received: fields in the header section (fast: no unfolding needed)."""
    end = content.find(b"\r\n\r\n")
    head = (content if end < 0 else content[: end + 2]).lower()
    return head.count(b"\r\nreceived:") + head.startswith(b"received:")
