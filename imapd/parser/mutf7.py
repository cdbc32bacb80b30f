"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3) and INBOX normalisation.

Written here rather than reusing twisted.mail.imap4's codec so the parser stays
free of Twisted and decoding is strict (RFC 3501: "&" must be "&-", shifted runs
must be minimal base64 of UTF-16BE, no shifting of printable ASCII).
"""

from __future__ import annotations

import base64
import binascii

from imapd.parser.tokens import ParseError

HIERARCHY_SEPARATOR = "/"


class MUTF7Error(ParseError):
    pass


def _is_direct(c: int) -> bool:
    return 0x20 <= c <= 0x7E


def encode(name: str) -> bytes:
    """str -> modified UTF-7 bytes."""
    if name.isascii() and name.isprintable():
        # Printable ASCII (most names): as it is, "&" as "&-".
        return name.encode("ascii").replace(b"&", b"&-")
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.extend(b"&" + base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        code = ord(ch)
        if _is_direct(code):
            flush()
            out.extend(b"&-" if ch == "&" else bytes([code]))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode(raw: bytes) -> str:
    """Modified UTF-7 bytes -> str. 8-bit input is accepted as UTF-8 (RFC 6855
    clients and careless ones); anything undecodable raises MUTF7Error."""
    if raw.isascii() and b"&" not in raw:
        # The usual name (INBOX, Sent, a folder of plain ASCII) is its own
        # decoding: no loop over its characters (a fifth of a SELECT's parse).
        text = raw.decode("ascii")
        if text.isprintable():  # every octet 0x20-0x7E
            return text
    if not raw.isascii():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MUTF7Error("Mailbox name is not valid modified UTF-7") from None
        if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
            raise MUTF7Error("Invalid character in mailbox name")
        return text
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c != 0x26:  # '&'
            if not _is_direct(c):
                raise MUTF7Error("Invalid character in mailbox name")
            out.append(chr(c))
            i += 1
            continue
        end = raw.find(b"-", i + 1)
        if end < 0:
            raise MUTF7Error("Unterminated modified UTF-7 sequence")
        chunk = raw[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        out.append(_decode_chunk(chunk))
    return "".join(out)


def _decode_chunk(chunk: bytes) -> str:
    if len(chunk) % 4 == 1:
        raise MUTF7Error("Invalid modified UTF-7 sequence")
    b64 = chunk.replace(b",", b"/")
    b64 += b"=" * (-len(b64) % 4)
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise MUTF7Error("Invalid modified UTF-7 sequence") from None
    if len(data) % 2:
        raise MUTF7Error("Invalid modified UTF-7 sequence")
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MUTF7Error("Invalid modified UTF-7 sequence") from None
    # Printable ASCII must be sent directly, never shifted; controls never appear.
    if any(ord(ch) < 0xA0 for ch in text):
        raise MUTF7Error("Invalid modified UTF-7 sequence")
    # The encoding must be canonical (no stray low bits), so names compare equal.
    if encode(text) != b"&" + chunk + b"-":
        raise MUTF7Error("Invalid modified UTF-7 sequence")
    return text


def normalise_inbox(name: str) -> str:
    """``inbox`` -> ``INBOX``, also as a prefix (``Inbox/x`` -> ``INBOX/x``)."""
    head, sep, rest = name.partition(HIERARCHY_SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def decode_utf8(raw: bytes) -> str:
    """A mailbox name (or pattern) once UTF8=ACCEPT is enabled (RFC 6855 3):
    UTF-8 as it is, ``&`` included (no modified UTF-7 any more)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MUTF7Error("Mailbox name is not valid UTF-8") from None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise MUTF7Error("Invalid character in mailbox name")
    return text


def decode_mailbox(raw: bytes, *, utf8: bool = False) -> str:
    """A ``mailbox`` argument: decoded (`decode`, or `decode_utf8` once
    UTF8=ACCEPT is enabled) and INBOX-normalised."""
    if b"\x00" in raw:
        raise MUTF7Error("Invalid character in mailbox name")
    return normalise_inbox(decode_utf8(raw) if utf8 else decode(raw))


class UndecodableName(str):
    """A mailbox name (or LIST pattern or reference) that is a well-formed
    astring but not valid modified UTF-7. The command is well-formed, so it
    is not answered BAD: the name names no mailbox (SELECT, STATUS ... answer
    NO as for a missing one, CREATE and RENAME refuse to make it) and a LIST
    pattern of it matches nothing, as Dovecot answers. The text is the raw
    octets as Latin-1, never shown to the client."""

    __slots__ = ()


def mailbox_or_undecodable(raw: bytes, *, inbox: bool = True, utf8: bool = False) -> str:
    """`decode_mailbox` (`decode` / `decode_utf8` when not `inbox`), or an
    `UndecodableName` when 7-bit octets are not modified UTF-7. A NUL (not a
    CHAR8 of a literal), 8-bit octets that are not UTF-8, and any name once
    UTF8=ACCEPT is enabled (no modified UTF-7 then) stay syntax errors."""

    def strict() -> str:
        if inbox:
            return decode_mailbox(raw, utf8=utf8)
        return decode_utf8(raw) if utf8 else decode(raw)

    if utf8 or b"\x00" in raw or not raw.isascii():
        return strict()
    try:
        return strict()
    except MUTF7Error:
        return UndecodableName(raw.decode("latin-1"))
