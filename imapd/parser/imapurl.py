"""IMAP URLs (RFC 5092) as CATENATE (RFC 4469) uses them: a message or a
part of one, on this server.

Accepted forms (keywords case-insensitive, as RFC 5092's ABNF strings are)::

    imap://[user@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]
    /mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]

The second is the server-relative form of the RFC 4469 examples. The
mailbox is %-decoded and read as UTF-8 (RFC 5092) or, when 7-bit, as modified
UTF-7 (the RFC 2192 form some clients still send); the section is a FETCH
section-spec. URLAUTH (RFC 4467), ;EXPIRE and search or list URLs are not
accepted. Pure: `parse_imap_url` raises `ParseError`, whose message says
what is wrong (the server answers ``NO [BADURL ...]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from imapd.parser.commands import Partial, Section
from imapd.parser.items import parse_section
from imapd.parser.mutf7 import decode_mailbox
from imapd.parser.tokens import MAX_NUMBER, Cursor, ParseError


@dataclass(frozen=True, slots=True)
class ImapUrl:
    mailbox: str
    uid: int
    uidvalidity: int | None = None
    section: Section = Section()  # the whole message by default
    user: str | None = None  # iuserinfo, when given (without ;AUTH=)
    host: str | None = None  # None for a server-relative URL


_SCHEME = re.compile(r"imap://", re.IGNORECASE)
# RFC 3986 unreserved / sub-delims / ":" / "@" and %-escapes (bchar of RFC 5092).
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*\Z")
_NUMBER = re.compile(r"[0-9]{1,10}\Z")
_PARTIAL = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,10}))?\Z")


def _number(text: str, what: str, *, nonzero: bool = True) -> int:
    if not _NUMBER.match(text) or int(text) > MAX_NUMBER or (nonzero and int(text) == 0):
        raise ParseError(f"Invalid {what} in URL")
    return int(text)


def _decode(text: str, what: str) -> bytes:
    try:
        return unquote_to_bytes(text)
    except ValueError:  # pragma: no cover - unquote_to_bytes is lenient
        raise ParseError(f"Invalid %-escape in URL {what}") from None


def _section(text: str) -> Section:
    raw = _decode(text, "section")
    if not raw or any(c < 0x20 or c > 0x7E for c in raw):
        raise ParseError("Invalid section in URL")
    cur = Cursor([b"[" + raw + b"]"], [])
    section = parse_section(cur)
    if not cur.at_end():
        raise ParseError("Invalid section in URL")
    return section


def parse_imap_url(url: str) -> ImapUrl:
    """The message or part a CATENATE URL names; raises ParseError."""
    if not url or not _URL_CHARS.match(url):
        raise ParseError("Invalid characters in URL")
    user: str | None = None
    host: str | None = None
    scheme = _SCHEME.match(url)
    if scheme is not None:
        rest = url[scheme.end():]
        authority, slash, path = rest.partition("/")
        if not slash or not authority:
            raise ParseError("URL without a mailbox")
        if "@" in authority:
            userinfo, _, authority = authority.rpartition("@")
            if ";" in userinfo:
                raise ParseError("URL authentication mechanisms are not supported")
            user = _decode(userinfo, "user").decode("utf-8", "replace")
        hostname, _, port = authority.partition(":")
        if not hostname or (port and not _NUMBER.match(port)):
            raise ParseError("Invalid server in URL")
        host = hostname.lower()
    elif url.startswith("/") and not url.startswith("//"):
        path = url[1:]
    else:
        raise ParseError("Not an IMAP URL")
    # The mailbox may hold the hierarchy separator: it ends at the first "/;".
    cut = path.find("/;")
    if cut < 0:
        raise ParseError("URL does not name a message")
    segments = path[cut + 1 :].split("/")
    # imailbox-ref: enc-mailbox [";UIDVALIDITY=" nz-number]
    head, *params = path[:cut].split(";")
    uidvalidity: int | None = None
    for param in params:
        key, eq, value = param.partition("=")
        if key.upper() != "UIDVALIDITY" or not eq or uidvalidity is not None:
            raise ParseError("Unknown mailbox parameter in URL")
        uidvalidity = _number(value, "UIDVALIDITY")
    if not head:
        raise ParseError("URL without a mailbox")
    try:
        mailbox = decode_mailbox(_decode(head, "mailbox"))
    except ParseError:
        raise ParseError("Invalid mailbox name in URL") from None
    uid: int | None = None
    section = Section()
    partial: Partial | None = None
    seen: set[str] = set()
    order = ("UID", "SECTION", "PARTIAL")
    for segment in segments:
        key, eq, value = segment.partition("=")
        if not segment.startswith(";") or not eq:
            raise ParseError("Invalid URL path")
        key = key[1:].upper()
        if key in ("URLAUTH", "EXPIRE"):
            raise ParseError("URLAUTH is not supported")
        if key not in order or key in seen or any(order.index(k) > order.index(key)
                                                  for k in seen):
            raise ParseError("Invalid URL path")
        seen.add(key)
        if key == "UID":
            uid = _number(value, "UID")
        elif key == "SECTION":
            section = _section(value)
        else:
            match = _PARTIAL.match(value)
            if match is None:
                raise ParseError("Invalid PARTIAL in URL")
            start = _number(match.group(1), "PARTIAL", nonzero=False)
            length = (_number(match.group(2), "PARTIAL") if match.group(2) is not None
                      else MAX_NUMBER)
            partial = Partial(start, length)
    if uid is None:
        raise ParseError("URL does not name a message")
    if partial is not None:
        section = Section(section.part, section.text, section.headers, partial)
    return ImapUrl(mailbox, uid, uidvalidity, section, user, host)
