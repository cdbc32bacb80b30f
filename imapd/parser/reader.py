"""Incremental command reader: bytes in, one event at a time out.

The server feeds whatever the transport delivers and then pulls events with
``next_event()`` until it returns None. Pulling (rather than getting a list per
``feed``) lets the server change the reader's mode between two commands that
arrived in the same packet: raw lines after IDLE or AUTHENTICATE, taking the
buffered bytes after STARTTLS (to discard them) or COMPRESS (to inflate them),
or simply not reading on while a command is still running.

Events:

* ``CommandReady(command)``: a complete, parsed command.
* ``NeedContinuation(tag, size)``: a synchronising literal ``{n}`` was announced
  and accepted by the limits. The server sends ``+ ...`` (or calls
  ``reject_literal()`` and answers ``tag NO ...``: the client sends nothing more
  for that command).
* ``LiteralTooLarge(tag, size, synchronizing, total)``: an APPEND literal above
  ``max_literal`` (``total`` False: the server answers ``tag NO [TOOBIG]``), or
  one that takes the command's literals past ``max_append_total`` (``total``
  True: ``tag NO [LIMIT]``; a MULTIAPPEND is held whole until it is complete,
  so this bounds what one command may make us buffer). For ``{n}`` the reader
  has already dropped the command (the client waits for a continuation that never
  comes); for ``{n+}`` the reader has skipped the n octets without buffering them
  and the rest of the command, and reports afterwards.
* ``ParseFailure(tag, message, fatal)``: answer ``tag BAD message`` (``* BAD`` when
  tag is None). The reader has already resynchronised at the end of the command.
  ``fatal`` asks the server to close the connection after answering (a TLS
  handshake or an HTTP request on the IMAP port); the reader then ignores input.
* ``RawLine(data)``: the line after ``next_line_raw()``, without its CRLF.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from imapd.parser.commands import Command
from imapd.parser.grammar import parse_command
from imapd.parser.tokens import TAG_CHARS, Literal, ParseError

DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_LITERAL = 50 * 1024 * 1024
MAX_LITERALS_PER_COMMAND = 64
# An APPEND carries a literal per message or CATENATE text part (RFC 3502,
# RFC 4469), and its mailbox name may be one: its octets are bounded by
# ``max_append_total``, its literals by this.
MAX_LITERALS_PER_APPEND = 4096


@dataclass(frozen=True, slots=True)
class CommandReady:
    command: Command


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class LiteralTooLarge:
    tag: str
    size: int
    synchronizing: bool
    total: bool = False  # the command's literals together, not this one


@dataclass(frozen=True, slots=True)
class ParseFailure:
    tag: str | None
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class RawLine:
    data: bytes


Event = CommandReady | NeedContinuation | LiteralTooLarge | ParseFailure | RawLine


class _Mode(enum.Enum):
    LINE = "line"  # reading a command line (first or after a literal)
    LITERAL = "literal"  # buffering the octets of an accepted literal
    SKIP = "skip"  # dropping the octets of a refused non-synchronising literal
    DISCARD = "discard"  # dropping the rest of a refused command, line by line


# A literal marker ends a line: "{12}", "{12+}" or "~{12}" (literal8).
_LITERAL_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_HTTP_REQUEST = re.compile(
    rb"(GET|POST|PUT|HEAD|OPTIONS|CONNECT|DELETE|PATCH|TRACE) \S+ HTTP/[0-9]", re.IGNORECASE
)
_TAIL_KEEP = 32  # enough of a discarded line to see its literal marker


class CommandReader:
    """Pure, incremental IMAP command reader (no I/O, no Twisted)."""

    def __init__(
        self, max_line: int = DEFAULT_MAX_LINE, max_literal: int = DEFAULT_MAX_LITERAL,
        max_append_total: int | None = None,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        # The octets of all the literals of one APPEND (None: max_literal).
        self.max_append_total = max_append_total
        # RFC 6855: the session enabled UTF8=ACCEPT (set between commands).
        self.utf8 = False
        self._buf = bytearray()
        self._mode = _Mode.LINE
        self._raw = False
        self._dead = False  # after a fatal failure: ignore everything
        self._reset_command()

    # ------------------------------------------------------------ public API

    def feed(self, data: bytes) -> None:
        """Adds received octets; call ``next_event()`` until it returns None."""
        if self._dead:
            return
        if self._mode is _Mode.SKIP and not self._buf:
            # Never buffer octets we are going to drop.
            take = min(len(data), self._need)
            self._need -= take
            data = data[take:]
        self._buf += data

    def next_event(self) -> Event | None:
        while True:
            if self._dead:
                return None
            mode = self._mode
            if mode is _Mode.LINE:
                if not self._lines and not self._raw and self._buf[:2] == b"\x16\x03":
                    # A TLS ClientHello on a plain-text port: not an IMAP client.
                    return self._die("TLS handshake on a plain-text connection")
                end = self._buf.find(b"\n")
                if end < 0 and len(self._buf) <= self.max_line + 1:  # + room for a CR
                    return None
                if end < 0 or end - (self._buf[end - 1 : end] == b"\r") > self.max_line:
                    # Too long: drop it up to its end without buffering, then BAD.
                    self._start_discard("Command line too long")
                    continue
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                # CRLF per RFC 3501; a bare LF is tolerated (telnet users, scripts).
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._raw:
                    self._raw = False
                    return RawLine(line)
                event = self._on_line(line)
                if event is not None:
                    return event
            elif mode is _Mode.LITERAL:
                if len(self._buf) < self._need:
                    return None
                # One copy (a bytearray slice would make two): APPEND literals are big.
                with memoryview(self._buf) as view:
                    data = bytes(view[: self._need])
                del self._buf[: self._need]
                self._literals.append(Literal(data, self._literal_binary))
                self._mode = _Mode.LINE
            elif mode is _Mode.SKIP:
                take = min(len(self._buf), self._need)
                del self._buf[:take]
                self._need -= take
                if self._need:
                    return None
                self._mode = _Mode.DISCARD
                self._tail = bytearray()
            else:
                event = self._discard_step()
                if event is not None:
                    return event
                if self._mode is _Mode.DISCARD:
                    return None

    def next_line_raw(self) -> None:
        """The next line is returned as ``RawLine`` (AUTHENTICATE responses, IDLE's DONE)."""
        self._raw = True

    def cancel_raw(self) -> None:
        self._raw = False

    def reject_literal(self) -> None:
        """After ``NeedContinuation``: the server refused the literal; forget the command."""
        if self._mode is _Mode.LITERAL:
            self._mode = _Mode.LINE
            self._reset_command()

    def take_buffered(self) -> bytes:
        """Removes and returns unread octets (after STARTTLS: discard them, RFC 3501
        6.2.1; after COMPRESS: inflate them and feed them back)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    @property
    def buffered(self) -> int:
        """Octets held in memory (tests use it to check that skipping never buffers)."""
        return len(self._buf) + sum(len(lit.data) for lit in self._literals)

    @property
    def closed(self) -> bool:
        """True after a fatal ParseFailure: the reader ignores all further input."""
        return self._dead

    @property
    def command_name(self) -> str | None:
        """Upper-cased name of the command being read (``"APPEND"``), e.g. to refuse
        literals before authentication; None between commands."""
        return self._name

    @property
    def idle(self) -> bool:
        """True between commands with nothing buffered (safe point for STARTTLS)."""
        return self._mode is _Mode.LINE and not self._lines and not self._buf

    @property
    def in_command(self) -> bool:
        """True while a command has started but is not complete (inside literals)."""
        return bool(self._lines) or self._mode is not _Mode.LINE

    # ------------------------------------------------------------ internals

    def _die(self, message: str) -> Event:
        self._dead = True
        self._buf.clear()
        self._reset_command()
        return ParseFailure(None, message, fatal=True)

    def _reset_command(self) -> None:
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._tag: str | None = None
        self._name: str | None = None
        self._is_append = False
        self._append_octets = 0  # literal octets of this APPEND so far
        self._need = 0
        self._literal_binary = False
        self._budget = self.max_line  # non-message octets left for this command
        self._pending: Event | None = None
        self._tail = bytearray()

    def _on_line(self, line: bytes) -> Event | None:
        first = not self._lines
        if first:
            if not line:
                return ParseFailure(None, "Empty command line")
            if _HTTP_REQUEST.match(line):
                # Cross-protocol requests (ALPACA): answer once and hang up.
                return self._die("This is an IMAP server")
            self._tag = _tag_of(line)
            name = _command_name(line)
            self._is_append = name == b"APPEND"
            self._name = name.decode("ascii", "replace") or None
        self._budget -= len(line)
        match = _LITERAL_MARKER.search(line)
        if self._budget < 0:
            tag = _tag_of(line) if first else self._tag
            if match is not None and match.group(3):
                # The client goes on with a non-synchronising literal: skip it too.
                self._skip(_literal_size(match), ParseFailure(tag, "Command too long"))
                return None
            self._reset_command()
            return ParseFailure(tag, "Command too long")
        if match is None:
            self._lines.append(line)
            return self._complete()
        return self._on_literal_marker(line, match)

    def _on_literal_marker(self, line: bytes, match: re.Match[bytes]) -> Event | None:
        tag = self._tag
        synchronizing = not match.group(3)
        size = _literal_size(match)
        if tag is None:
            # Nothing to answer to: drop the literal if we can, then BAD.
            return self._refuse(None, size, synchronizing, "Invalid tag")
        most = MAX_LITERALS_PER_APPEND if self._is_append else MAX_LITERALS_PER_COMMAND
        if len(self._literals) >= most:
            return self._refuse(tag, size, synchronizing, "Too many literals")
        if self._is_append:
            total = self.max_append_total
            if total is None:
                total = self.max_literal
            too_large = None
            if size > self.max_literal:
                too_large = LiteralTooLarge(tag, size, synchronizing)
            elif self._append_octets + size > total:
                too_large = LiteralTooLarge(tag, size, synchronizing, total=True)
            if too_large is not None:
                if synchronizing:
                    self._reset_command()
                    return too_large
                self._skip(size, too_large)
                return None
            self._append_octets += size
        else:
            if size > self._budget:
                return self._refuse(tag, size, synchronizing, "Literal too large")
            self._budget -= size
        self._lines.append(line[: match.start()])
        self._mode = _Mode.LITERAL
        self._need = size
        self._literal_binary = bool(match.group(1))
        if synchronizing:
            return NeedContinuation(tag, size)
        return None

    def _refuse(
        self, tag: str | None, size: int, synchronizing: bool, message: str
    ) -> Event | None:
        failure = ParseFailure(tag, message)
        if synchronizing:
            self._reset_command()
            return failure
        self._skip(size, failure)
        return None

    def _skip(self, size: int, report: Event) -> None:
        self._reset_command()
        self._pending = report
        self._need = size
        self._mode = _Mode.SKIP

    def _complete(self) -> Event:
        lines, literals, tag = self._lines, self._literals, self._tag
        self._reset_command()
        try:
            return CommandReady(parse_command(lines, literals, utf8=self.utf8))
        except ParseError as exc:
            return ParseFailure(tag, exc.message)
        except RecursionError:
            return ParseFailure(tag, "Command too complex")

    # --------------------------------------------------------- discarding

    def _start_discard(self, message: str) -> None:
        tag = None if self._raw else (self._tag or _tag_of(bytes(self._buf[:256])))
        self._raw = False
        self._reset_command()
        self._pending = ParseFailure(tag, message)
        self._mode = _Mode.DISCARD

    def _discard_step(self) -> Event | None:
        """Drops octets up to the end of the current line; at its end, follows a
        non-synchronising literal marker (skip it and go on) or finishes."""
        end = self._buf.find(b"\n")
        if end < 0:
            # Keep only a tail: a CR or a literal marker may straddle packets.
            self._tail += self._buf
            del self._tail[:-_TAIL_KEEP]
            self._buf.clear()
            return None
        self._tail += self._buf[:end]
        del self._tail[:-_TAIL_KEEP]
        del self._buf[: end + 1]
        return self._finish_discarded_line()

    def _finish_discarded_line(self) -> Event | None:
        tail = bytes(self._tail).rstrip(b"\r")
        self._tail = bytearray()
        match = _LITERAL_MARKER.search(tail)
        if match is not None and match.group(3):
            self._need = _literal_size(match)
            self._mode = _Mode.SKIP
            return None
        # Line ended (a synchronising literal is never sent without our "+").
        self._mode = _Mode.LINE
        pending, self._pending = self._pending, None
        return pending


def _literal_size(match: re.Match[bytes]) -> int:
    digits = match.group(2)
    # Absurd sizes stay absurd (and too large) without converting huge numbers.
    return int(digits) if len(digits) <= 20 else 2**64


def _tag_of(line: bytes) -> str | None:
    """The tag if the line starts with a valid one followed by a space."""
    end = line.find(b" ")
    if end <= 0:
        return None
    raw = line[:end]
    if all(ch in TAG_CHARS for ch in raw):
        return raw.decode("ascii")
    return None


def _command_name(line: bytes) -> bytes:
    parts = line.split(b" ", 2)
    return parts[1].upper() if len(parts) > 1 else b""
