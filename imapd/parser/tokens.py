"""RFC 3501 section 9 lexical primitives over one complete command.

A command arrives as text lines and literals: ``lines[i]`` is the text before the
i-th literal's ``{n}`` marker (the reader strips markers), so the cursor sees a
literal exactly where a line ends and another line follows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ParseError(Exception):
    """Syntax error; ``message`` is safe to send to the client (no client data)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes
    binary: bool = False  # literal8 ~{n} (RFC 3516)


def _charset(chars: bytes) -> frozenset[int]:
    return frozenset(chars)


CTL = frozenset(range(0x00, 0x20)) | {0x7F}
LIST_WILDCARDS = _charset(b"%*")
QUOTED_SPECIALS = _charset(b'"\\')
RESP_SPECIALS = _charset(b"]")
ATOM_SPECIALS = _charset(b"(){ ") | CTL | LIST_WILDCARDS | QUOTED_SPECIALS | RESP_SPECIALS
# 8-bit octets are not CHAR: never part of an atom.
ATOM_CHARS = frozenset(range(0x01, 0x80)) - ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | RESP_SPECIALS
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | LIST_WILDCARDS | RESP_SPECIALS
DIGITS = _charset(b"0123456789")

MAX_NUMBER = 2**32 - 1  # RFC 3501 number: unsigned 32-bit
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 number64 / RFC 7162 mod-sequence-value


class Cursor:
    """Reads tokens from the lines and literals of one command."""

    __slots__ = ("_lines", "_literals", "_li", "_pos", "_line", "utf8")

    def __init__(self, lines: list[bytes], literals: list[Literal], *, utf8: bool = False) -> None:
        if len(lines) != len(literals) + 1:
            raise ValueError("a command has one more line than literals")
        # RFC 6855 UTF8=ACCEPT enabled: quoted strings must be valid UTF-8 and
        # mailbox names are UTF-8 (never modified UTF-7).
        self.utf8 = utf8
        self._lines = lines
        self._literals = literals
        self._li = 0
        self._pos = 0
        self._line = lines[0]

    # ---------------------------------------------------------- position

    def at_literal(self) -> bool:
        return self._pos == len(self._line) and self._li < len(self._literals)

    def at_end(self) -> bool:
        return self._pos == len(self._line) and self._li == len(self._literals)

    def peek(self) -> int | None:
        """Next octet of the current line, None at a literal or the end."""
        line = self._line
        return line[self._pos] if self._pos < len(line) else None

    def peek_upper(self, n: int) -> bytes:
        return self._line[self._pos : self._pos + n].upper()

    def advance(self, n: int = 1) -> None:
        self._pos += n

    def take_literal(self, *, binary_ok: bool = False) -> Literal:
        if not self.at_literal():
            raise ParseError("Expected a literal")
        lit = self._literals[self._li]
        if lit.binary and not binary_ok:
            # RFC 3516: literal8 only carries APPEND message data.
            raise ParseError("literal8 not allowed here")
        self._li += 1
        self._pos = 0
        self._line = self._lines[self._li]
        return lit

    # ---------------------------------------------------------- punctuation

    def expect(self, char: bytes) -> None:
        if self.peek() != char[0]:
            raise ParseError(_expected(char))
        self._pos += 1

    def accept(self, char: bytes) -> bool:
        if self.peek() == char[0]:
            self._pos += 1
            return True
        return False

    def sp(self) -> None:
        self.expect(b" ")

    def expect_end(self) -> None:
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    def accept_word(self, word: bytes) -> bool:
        """Case-insensitive word followed by a delimiter (not part of a longer atom)."""
        n = len(word)
        if self.peek_upper(n) != word:
            return False
        after = self._line[self._pos + n : self._pos + n + 1]
        if after and after[0] in ATOM_CHARS:
            return False
        self._pos += n
        return True

    # ---------------------------------------------------------- tokens

    def take_while(self, allowed: frozenset[int]) -> bytes:
        match = _run_pattern(allowed).match(self._line, self._pos)
        if match is None:
            return b""
        self._pos = match.end()
        return match.group()

    def atom(self) -> str:
        raw = self.take_while(ATOM_CHARS)
        if not raw:
            raise ParseError("Expected an atom")
        return raw.decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased (command names, search keys, options)."""
        return self.atom().upper()

    def quoted(self) -> bytes:
        self.expect(b'"')
        line = self._line
        out = bytearray()
        pos = self._pos
        end = len(line)
        while True:
            if pos >= end:
                raise ParseError("Unterminated quoted string")
            c = line[pos]
            if c == 0x22:  # closing quote
                self._pos = pos + 1
                if self.utf8 and not out.isascii():
                    try:
                        out.decode("utf-8")
                    except UnicodeDecodeError:
                        # RFC 6855 3: malformed UTF-8 in a quoted string is BAD.
                        raise ParseError("Invalid UTF-8 in quoted string") from None
                return bytes(out)
            if c == 0x5C:  # backslash: only quoted-specials may follow
                if pos + 1 >= end or line[pos + 1] not in QUOTED_SPECIALS:
                    raise ParseError("Invalid escape in quoted string")
                out.append(line[pos + 1])
                pos += 2
                continue
            if c in (0x00, 0x0D, 0x0A):
                raise ParseError("Invalid character in quoted string")
            # 8-bit octets: UTF-8 once UTF8=ACCEPT is enabled (RFC 6855);
            # before, tolerated (RFC 3501 wants a literal, but clients send
            # quoted UTF-8 with SEARCH CHARSET UTF-8).
            out.append(c)
            pos += 1

    def string(self) -> bytes:
        if self.at_literal():
            return self.take_literal().data
        if self.peek() == 0x22:
            return self.quoted()
        raise ParseError("Expected a string")

    def astring(self) -> bytes:
        if self.at_literal():
            return self.take_literal().data
        if self.peek() == 0x22:
            return self.quoted()
        raw = self.take_while(ASTRING_CHARS)
        if not raw:
            raise ParseError("Expected an astring")
        return raw

    def nstring(self) -> bytes | None:
        if self.accept_word(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        if self.at_literal():
            return self.take_literal().data
        if self.peek() == 0x22:
            return self.quoted()
        raw = self.take_while(LIST_CHARS)
        if not raw:
            raise ParseError("Expected a mailbox pattern")
        return raw

    def digits(self) -> bytes:
        raw = self.take_while(DIGITS)
        if not raw:
            raise ParseError("Expected a number")
        return raw

    def number(self, maximum: int = MAX_NUMBER) -> int:
        raw = self.digits()
        if len(raw) > 20 or int(raw) > maximum:
            raise ParseError("Number out of range")
        return int(raw)

    def nz_number(self, maximum: int = MAX_NUMBER) -> int:
        value = self.number(maximum)
        if value == 0:
            raise ParseError("Expected a non-zero number")
        return value

    def number64(self) -> int:
        return self.number(MAX_NUMBER64)


_PATTERNS: dict[frozenset[int], re.Pattern[bytes]] = {}


def _run_pattern(allowed: frozenset[int]) -> re.Pattern[bytes]:
    """A compiled ``[allowed]+``: the hot loop of the lexer, done in C."""
    pattern = _PATTERNS.get(allowed)
    if pattern is None:
        if len(_PATTERNS) > 64:  # only a handful of fixed sets exist; stay bounded anyway
            _PATTERNS.clear()
        klass = b"".join(re.escape(bytes([c])) for c in sorted(allowed))
        pattern = _PATTERNS[allowed] = re.compile(b"[" + klass + b"]+")
    return pattern


def _expected(char: bytes) -> str:
    names = {b" ": "a space", b"(": "'('", b")": "')'", b"[": "'['", b"]": "']'"}
    return "Expected " + names.get(char, repr(char.decode("ascii")))


def to_text(raw: bytes) -> str:
    """Client text (passwords, search strings) as str: UTF-8, strictly."""
    if b"\x00" in raw:
        raise ParseError("NUL in string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("String is not valid UTF-8") from None
