"""MIME metadata computed once at delivery (RFC 3501 ENVELOPE / BODYSTRUCTURE).

`parse_message(raw)` returns a JSON-able dict that lets IMAP answer ENVELOPE,
BODY, BODYSTRUCTURE and BODY[section] without parsing the message again. It
never raises: broken MIME degrades to the RFC 2045 default (text/plain;
charset=us-ascii), nesting is capped, and every offset stays inside ``raw``.

Headers are scanned by hand over bytes (no `email` objects: a 10 MB attachment
costs a few `bytes.find` calls). Strings taken from headers are the raw octets
decoded as ISO-8859-1, a lossless byte<->str map: ``s.encode("latin-1")`` gives
the wire bytes back, encoded-words (RFC 2047) untouched, as ENVELOPE wants.

Layout (version 1)::

    {
      "v": 1,
      "size": int,            # len(raw)
      "header_end": int,      # offset just past the top-level blank line
      "envelope": Envelope,
      "body": Part,           # the top-level entity, header_start == 0
    }

    Envelope = {
      "date", "subject", "in_reply_to", "message_id": str | None,
      "from", "sender", "reply_to", "to", "cc", "bcc": list[Address] | None,
    }   # sender and reply_to already default to from (RFC 3501 7.4.2)

    Address = [name, adl, mailbox, host]   # each str | None
    # group start: [None, None, group-name, None]; group end: [None, None, None, None]

    Part = {
      "type", "subtype": str,             # as written ("TEXT"); default "text"/"plain"
      "params": [[name, value], ...],     # Content-Type parameters, values unquoted;
                                          #   text/* always has a charset (us-ascii default)
      "id", "description", "md5", "location": str | None,   # raw header values
      "encoding": str,                    # Content-Transfer-Encoding, default "7BIT"
      "disposition": [type, [[name, value], ...]] | None,
      "language": [str, ...] | None,
      "header_start", "header_end",       # header block; header_end is just past the
      "body_start", "body_end",           #   blank line, so header_end == body_start
      "size": int,                        # body_end - body_start, in octets
      "lines": int,                       # text/* and message/rfc822, else 0; lines
                                          #   with a line ending (see _count_lines)
      # multipart/* only:
      "parts": [Part, ...],               # never empty (else degraded to text/plain)
      # message/rfc822, and message/global (RFC 6532) sent as is (7bit, 8bit,
      # binary: another transfer encoding hides the message, the part stays a leaf):
      "envelope": Envelope,               # of the encapsulated message
      "message": Part,                    # its top entity; message.header_start is
                                          #   this part's body_start
    }

IMAP4rev2 shows a message/global part like message/rfc822 (RFC 9051 7.5.2, 6.4.5:
envelope, structure, lines, nested part numbers); IMAP4rev1 as a leaf (RFC 3501
knows message/rfc822 only): `find_part(..., message_global=)` and `is_message`
choose.

For a part with no blank line after its header, header_end == body_start ==
end of the part (all header, empty body). The CRLF before a boundary belongs to
the boundary (RFC 2046 5.1.1), so it is not in the preceding part's body.
Limits: MAX_DEPTH nesting levels and MAX_PARTS parts (deeper or further
content becomes an opaque text/plain part), MAX_STRING characters per
header-derived string, MAX_ADDRESSES per address list.

Helpers used by imapd.fetch / imapd.search: `find_part` (IMAP part paths),
`header_bounds`, `iter_fields` (raw header fields with offsets), `unfold`,
`parse_addresses`, `decode_transfer` (base64 / quoted-printable).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

VERSION = 1
MAX_DEPTH = 20  # deeper multiparts / message/rfc822 become opaque text/plain
MAX_PARTS = 2000  # total parts per message; further ones are folded into text/plain
MAX_STRING = 16384  # longest header-derived string kept in the metadata
MAX_ADDRESSES = 1000  # per address list
# Content-Transfer-Encodings that leave a message/global part readable as it is.
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})

Address = list[str | None]
Meta = dict[str, Any]

# One header field: name, colon, value with its continuation lines. [^\n]
# keeps the CR of CRLF in the match; the value is unfolded afterwards.
_FIELD = re.compile(rb"^([^:\s]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)\n?", re.M)
_FOLD = re.compile(rb"\r?\n")

_ENVELOPE_HEADERS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
_MIME_HEADERS = (
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "content-md5",
    "content-disposition",
    "content-language",
    "content-location",
)
_WANTED = frozenset(_ENVELOPE_HEADERS + _MIME_HEADERS)
_WANTED_FIELD = re.compile(
    rb"^("
    + b"|".join(re.escape(n.encode()) for n in sorted(_WANTED, key=len, reverse=True))
    + rb")[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)",
    re.M | re.I,
)
_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


# ------------------------------------------------------------ header scanning


def header_bounds(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header fields, start of the body) for the entity at start.

    The first is where the blank line begins; the second is just past it. With
    no blank line the whole range is header and both are `end`.
    """
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start, start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start, start + 1
    # Search CRLF first, then LF only up to it: never scan a whole body twice.
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, crlf + 2 if crlf >= 0 else end)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return end, end


def iter_fields(raw: bytes, start: int, end: int) -> list[tuple[bytes, int, int, bytes]]:
    """Header fields between start and end: (name, field start, field end, raw value).

    raw[field start:field end] is the field exactly as written, continuation
    lines and final line ending included. Lines that are not fields (no colon,
    an mbox "From " line) are skipped.
    """
    return [(m.group(1), m.start(), m.end(), m.group(2)) for m in _FIELD.finditer(raw, start, end)]


def unfold(value: bytes) -> str:
    """A raw field value unfolded (RFC 5322 2.2.3), trimmed, as latin-1 text."""
    if b"\n" in value:
        value = _FOLD.sub(b"", value)
    return value.strip(b" \t\r\n").decode("latin-1")[:MAX_STRING]


def _wanted_headers(raw: bytes, start: int, end: int) -> dict[str, str]:
    """First occurrence of each envelope / MIME header, unfolded."""
    found: dict[str, str] = {}
    # The regex engine skips the other fields (Received:, DKIM-Signature: ...).
    for m in _WANTED_FIELD.finditer(raw, start, end):
        name = m.group(1).decode("latin-1").lower()
        if name not in found:
            found[name] = unfold(m.group(2))
    return found


# ------------------------------------------------------------ RFC 2045 values

_TSPECIALS = '()<>@,;:\\"/[]?= \t\r\n'


_WSP_RE = re.compile(r"[ \t\r\n]*")


def _skip_cfws(s: str, i: int) -> int:
    m = _WSP_RE.match(s, i)
    assert m is not None
    i = m.end()
    n = len(s)
    if i >= n or s[i] != "(":
        return i
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                c = s[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


_TOKEN_RE = re.compile(r'[^()<>@,;:\\"/\[\]?= \t\r\n]*')


def _token(s: str, i: int) -> tuple[str, int]:
    m = _TOKEN_RE.match(s, i)
    assert m is not None  # the pattern matches the empty string
    return m.group(), m.end()


def _quoted(s: str, i: int) -> tuple[str, int]:
    """Quoted string starting at s[i] == '"'; unterminated runs to the end."""
    out: list[str] = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), n


def _parse_params(s: str, i: int) -> list[list[str]]:
    """``*(";" attribute "=" value)`` leniently: bad parameters are dropped."""
    params: list[list[str]] = []
    n = len(s)
    while i < n and len(params) < 100:
        i = _skip_cfws(s, i)
        if i >= n:
            break
        if s[i] != ";":
            # garbage: resynchronise on the next ';'
            j = s.find(";", i)
            if j < 0:
                break
            i = j
        i = _skip_cfws(s, i + 1)
        name, i = _token(s, i)
        i = _skip_cfws(s, i)
        if not name or i >= n or s[i] != "=":
            continue
        i = _skip_cfws(s, i + 1)
        if i < n and s[i] == '"':
            value, i = _quoted(s, i)
        else:
            # lenient: accept anything up to ';' (unquoted '/', '@' happen in the wild)
            j = i
            while j < n and s[j] not in "; \t\r\n":
                j += 1
            value, i = s[i:j], j
        params.append([name, value])
    return params


def _parse_content_type(value: str | None) -> tuple[str, str, list[list[str]]] | None:
    if value is None:
        return None
    i = _skip_cfws(value, 0)
    mtype, i = _token(value, i)
    i = _skip_cfws(value, i)
    if not mtype or i >= len(value) or value[i] != "/":
        return None
    i = _skip_cfws(value, i + 1)
    subtype, i = _token(value, i)
    if not subtype:
        return None
    return mtype, subtype, _parse_params(value, i)


def _parse_disposition(value: str | None) -> list[Any] | None:
    if value is None:
        return None
    i = _skip_cfws(value, 0)
    dtype, i = _token(value, i)
    if not dtype:
        return None
    return [dtype, _parse_params(value, i)]


def _parse_language(value: str | None) -> list[str] | None:
    if value is None:
        return None
    langs = [t.strip() for t in re.sub(r"\([^)]*\)", "", value).split(",")]
    langs = [t for t in langs if t][:50]
    return langs or None


def _simple(value: str | None) -> str | None:
    """Token-like header (Content-Transfer-Encoding): comments removed."""
    if value is None:
        return None
    i = _skip_cfws(value, 0)
    tok, _ = _token(value, i)
    return tok or None


def _param(params: list[list[str]], name: str) -> str | None:
    for k, v in params:
        if k.lower() == name:
            return v
    return None


# ------------------------------------------------------------ RFC 5322 addresses

_ADDR_SPECIALS = '()<>@,;:\\".[]'

# token kinds
_ATOM, _QS, _COMMENT, _SPECIAL, _DLIT = range(5)


_ADDR_TOKEN = re.compile(
    r'([ \t\r\n]*)(?:([^()<>@,;:\\".\[\] \t\r\n]+)|([<>@,;:\\.)\]])|(")|(\[)|(\())'
)


def _comment(s: str, i: int) -> int:
    """End of the (nested) comment starting at s[i] == "("; unterminated runs to the end."""
    depth, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _lex_addresses(s: str) -> list[tuple[int, str, str, bool]]:
    """(kind, value, source text, space before) tokens; never fails."""
    toks: list[tuple[int, str, str, bool]] = []
    i, n = 0, len(s)
    match = _ADDR_TOKEN.match
    while i < n:
        m = match(s, i)
        if m is None:
            break  # only trailing white space is left
        space = bool(m.group(1))
        if m.group(2) is not None:
            toks.append((_ATOM, m.group(2), m.group(2), space))
            i = m.end()
        elif m.group(3) is not None:
            toks.append((_SPECIAL, m.group(3), m.group(3), space))
            i = m.end()
        elif m.group(4) is not None:
            at = m.start(4)
            value, j = _quoted(s, at)
            toks.append((_QS, value, s[at:j], space))
            i = j
        elif m.group(5) is not None:
            at = m.start(5)
            k = s.find("]", at)
            j = n if k < 0 else k + 1
            toks.append((_DLIT, s[at:j], s[at:j], space))
            i = j
        else:
            at = m.start(6)
            j = _comment(s, at)
            inner = s[at + 1 : j - 1] if s[j - 1 : j] == ")" else s[at + 1 : j]
            toks.append((_COMMENT, inner.strip(), s[at:j], space))
            i = j
    return toks


def _phrase(toks: list[tuple[int, str, str, bool]]) -> str | None:
    """Display name: words (quoted strings unquoted) with single spaces."""
    out: list[str] = []
    for kind, value, _src, space in toks:
        if kind == _COMMENT:
            continue
        if out and space:
            out.append(" ")
        out.append(value)
    text = "".join(out).strip()
    return text or None


def _addr_spec(toks: list[tuple[int, str, str, bool]]) -> tuple[str | None, str | None]:
    """(mailbox, host) from the tokens of an addr-spec; host None when no '@'."""
    words = [t for t in toks if t[0] != _COMMENT]
    at = -1
    for k in range(len(words) - 1, -1, -1):
        if words[k][0] == _SPECIAL and words[k][1] == "@":
            at = k
            break
    # RFC 3501 9: addr-mailbox is the local-part "after removing RFC 822
    # quoting": "john..doe"@x gives john..doe (the value, not the source).
    if at < 0:
        local = "".join(t[1] if t[0] == _QS else t[2] for t in words)
        return (local or None), None
    local = "".join(t[1] if t[0] == _QS else t[2] for t in words[:at])
    host = "".join(t[2] for t in words[at + 1 :])
    return (local or None), (host or None)


def _make_address(
    phrase_toks: list[tuple[int, str, str, bool]],
    angle: list[tuple[int, str, str, bool]] | None,
) -> Address | None:
    adl: str | None = None
    if angle is not None:
        name = _phrase(phrase_toks)
        # obs-route: "<@a,@b:user@host>"
        for k, t in enumerate(angle):
            if t[0] == _SPECIAL and t[1] == ":":
                route = angle[:k]
                if route and route[0][0] == _SPECIAL and route[0][1] == "@":
                    adl = "".join(x[2] for x in route if x[0] != _COMMENT) or None
                    angle = angle[k + 1 :]
                break
        mailbox, host = _addr_spec(angle)
    else:
        if all(t[0] == _COMMENT for t in phrase_toks):
            return None
        mailbox, host = _addr_spec(phrase_toks)
        comments = [t[1] for t in phrase_toks if t[0] == _COMMENT and t[1]]
        name = comments[-1] if comments else None
    if mailbox is None and host is None and name is None:
        return None
    # A NIL host means "group syntax" to a client: never emit it for a mailbox.
    return [name, adl, mailbox if mailbox is not None else "", host if host is not None else ""]


def parse_addresses(value: str | None) -> list[Address] | None:
    """An address-list header as ENVELOPE address structures (None when empty)."""
    if value is None:
        return None
    if _SIMPLE_LIST_CHARS.search(value) is None:
        simple = _simple_addresses(value)
        if simple is not None:
            return simple
    return _parse_addresses(value)


# Most address headers are "a@b" or "Name <a@b>" lists without quotes,
# comments, groups or routes: those skip the tokenizer.
_SIMPLE_LIST_CHARS = re.compile(r'["()\[\]:;\\]')
_SIMPLE_ITEM = re.compile(
    r"[ \t\r\n]*(?:([^<>@,]*?)[ \t\r\n]*<([^<>@\s,]+)@([^<>@\s,]+)>"
    r"|([^<>@\s,]+)@([^<>@\s,]+))[ \t\r\n]*"
)
_WSP_RUN = re.compile(r"[ \t\r\n]+")


def _simple_addresses(value: str) -> list[Address] | None:
    out: list[Address] = []
    for item in value.split(","):
        if not item.strip():
            continue
        m = _SIMPLE_ITEM.fullmatch(item)
        if m is None:
            return None
        if m.group(2) is not None:
            name = _WSP_RUN.sub(" ", m.group(1)).strip() or None
            out.append([name, None, m.group(2), m.group(3)])
        else:
            out.append([None, None, m.group(4), m.group(5)])
        if len(out) > MAX_ADDRESSES:
            return None
    for addr in out:
        for k in range(4):
            v = addr[k]
            if v is not None and len(v) > MAX_STRING:
                return None
    return out or None


def _parse_addresses(value: str) -> list[Address] | None:
    toks = _lex_addresses(value)
    out: list[Address] = []
    cur: list[tuple[int, str, str, bool]] = []
    angle: list[tuple[int, str, str, bool]] | None = None
    in_angle = False
    in_group = False

    def flush() -> None:
        addr = _make_address(cur, angle)
        if addr is not None:
            out.append(addr)

    for tok in toks:
        kind, val = tok[0], tok[1]
        if in_angle:
            if kind == _SPECIAL and val == ">":
                in_angle = False
            else:
                assert angle is not None
                angle.append(tok)
            continue
        if kind == _SPECIAL and val == "<":
            in_angle = True
            angle = []
        elif kind == _SPECIAL and val == ",":
            flush()
            cur, angle = [], None
        elif kind == _SPECIAL and val == ":" and not in_group and angle is None:
            out.append([None, None, _phrase(cur) or "", None])
            in_group = True
            cur = []
        elif kind == _SPECIAL and val == ";" and in_group:
            flush()
            cur, angle = [], None
            out.append([None, None, None, None])
            in_group = False
        elif angle is not None:
            # text after "<...>" (a trailing comment or junk): ignore it
            continue
        else:
            cur.append(tok)
        if len(out) >= MAX_ADDRESSES:
            break
    else:
        flush()
        if in_group:
            out.append([None, None, None, None])
    for addr in out:
        for k in range(4):
            v = addr[k]
            if v is not None and len(v) > MAX_STRING:
                addr[k] = v[:MAX_STRING]
    return out or None


def build_envelope(headers: dict[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": headers.get("date"),
        "subject": headers.get("subject"),
        "in_reply_to": headers.get("in-reply-to"),
        "message_id": headers.get("message-id"),
    }
    for name in _ADDRESS_FIELDS:
        env[name.replace("-", "_")] = parse_addresses(headers.get(name))
    if env["sender"] is None:
        env["sender"] = env["from"]
    if env["reply_to"] is None:
        env["reply_to"] = env["from"]
    return env


# ------------------------------------------------------------ body structure


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def _count_lines(raw: bytes, start: int, end: int) -> int:
    # Terminated lines only, as Dovecot counts them: a last line without a
    # line ending (the end of the message) is not counted. The last line of a
    # part inside a multipart is terminated: RFC 2046 5.1.1 gives its CRLF to
    # the boundary delimiter that follows, so it is outside the part's body
    # but counted (RFC 3501's BODYSTRUCTURE example counts it too).
    # Computed at delivery and stored: messages stored before this rule keep
    # the count they had (it differed only for a message whose last line has
    # no line ending, which SMTP never delivers; only APPEND can store one).
    if end <= start:
        return 0
    n = raw.count(b"\n", start, end)
    if raw[end - 1 : end] != b"\n" and raw[end : end + 1] in (b"\r", b"\n"):
        n += 1
    return n


def _delimiters(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Boundary delimiter lines in raw[start:end]: (line start, next line start, is close).

    A delimiter must start a line and be followed only by optional "--",
    linear white space and the line end (so "--b" never matches "--bx").
    """
    marker = b"--" + boundary
    anchored = b"\n" + marker  # C-speed search that only finds line starts
    mlen = len(marker)
    found: list[tuple[int, int, bool]] = []
    misses = 0
    line = start if raw.startswith(marker, start) else -1
    pos = start
    while True:
        if line < 0:
            i = raw.find(anchored, pos, end)
            if i < 0:
                break
            line = i + 1
        q = line + mlen
        candidate, line = line, -1
        pos = q - 1  # a following candidate's "\n" may come right after the marker
        close = raw.startswith(b"--", q) and q + 2 <= end
        if close:
            q += 2
        while q < end and raw[q] in b" \t":
            q += 1
        if q < end and raw[q : q + 2] == b"\r\n":
            nxt = q + 2
        elif q < end and raw[q] == 0x0A:
            nxt = q + 1
        elif q < end and raw[q] == 0x0D and q + 1 == end:
            nxt = end
        elif q >= end:
            nxt = end
        else:
            misses += 1
            if misses > 64:
                # Many false candidates ("--boundaryX" lines): finish with one
                # regex scan so a crafted body cannot cost O(lines) Python steps.
                found.extend(_delimiters_rx(raw, marker, pos, end))
                break
            continue
        found.append((candidate, min(nxt, end), close))
        if close:
            break
        pos = nxt - 1  # the line end: the next delimiter may start right after
    return found


def _delimiters_rx(raw: bytes, marker: bytes, pos: int, end: int) -> list[tuple[int, int, bool]]:
    rx = re.compile(rb"(?<=\n)" + re.escape(marker) + rb"(--)?[ \t]*(?:\r\n|\n|\r?\Z)")
    found: list[tuple[int, int, bool]] = []
    for m in rx.finditer(raw, pos, end):
        close = m.group(1) is not None
        found.append((m.start(), m.end(), close))
        if close:
            break
    return found


def _line_start_before(raw: bytes, p: int, floor: int) -> int:
    """Where a body ends when a delimiter line starts at p (its CRLF is not body)."""
    if p - 2 >= floor and raw[p - 2 : p] == b"\r\n":
        return p - 2
    if p - 1 >= floor and raw[p - 1 : p] == b"\n":
        return p - 1
    return p


def _text_plain(part: Meta) -> None:
    """Degrade a part to the RFC 2045 default type, keeping its offsets."""
    part["type"], part["subtype"] = "text", "plain"
    part["params"] = [["charset", "us-ascii"]]
    part.pop("parts", None)
    part.pop("envelope", None)
    part.pop("message", None)


def _parse_entity(
    raw: bytes,
    start: int,
    end: int,
    depth: int,
    budget: _Budget,
    default_digest: bool,
) -> tuple[Meta, dict[str, str]]:
    budget.parts += 1
    fields_end, body_start = header_bounds(raw, start, end)
    headers = _wanted_headers(raw, start, fields_end)
    ct = _parse_content_type(headers.get("content-type"))
    if ct is None:
        if default_digest and "content-type" not in headers:
            ct = ("message", "rfc822", [])
        else:
            ct = ("text", "plain", [["charset", "us-ascii"]])
    mtype, subtype, params = ct
    part: Meta = {
        "type": mtype,
        "subtype": subtype,
        "params": params,
        "id": headers.get("content-id"),
        "description": headers.get("content-description"),
        "encoding": _simple(headers.get("content-transfer-encoding")) or "7BIT",
        "md5": headers.get("content-md5"),
        "disposition": _parse_disposition(headers.get("content-disposition")),
        "language": _parse_language(headers.get("content-language")),
        "location": headers.get("content-location"),
        "header_start": start,
        "header_end": body_start,
        "body_start": body_start,
        "body_end": end,
        "size": end - body_start,
        "lines": 0,
    }
    ltype, lsub = mtype.lower(), subtype.lower()
    if ltype == "text" and _param(params, "charset") is None:
        params.append(["charset", "us-ascii"])  # RFC 2045 5.2 default, as servers show it
    too_deep = depth >= MAX_DEPTH or budget.parts >= MAX_PARTS
    if ltype == "multipart":
        boundary = _param(params, "boundary")
        parts: list[Meta] = []
        if boundary and not too_deep:
            parts = _parse_multipart(
                raw, boundary.encode("latin-1"), body_start, end, depth, budget, lsub == "digest"
            )
        if parts:
            part["parts"] = parts
        else:
            _text_plain(part)
            ltype = "text"
    elif ltype == "message" and (lsub == "rfc822" or (
            lsub == "global" and part["encoding"].lower() in _IDENTITY_ENCODINGS)):
        if too_deep:
            _text_plain(part)
            ltype = "text"
        else:
            inner, inner_headers = _parse_entity(raw, body_start, end, depth + 1, budget, False)
            part["envelope"] = build_envelope(inner_headers)
            part["message"] = inner
            part["lines"] = _count_lines(raw, body_start, end)
    if ltype == "text":
        part["lines"] = _count_lines(raw, body_start, end)
    return part, headers


def _parse_multipart(
    raw: bytes,
    boundary: bytes,
    start: int,
    end: int,
    depth: int,
    budget: _Budget,
    digest: bool,
) -> list[Meta]:
    delims = _delimiters(raw, boundary, start, end)
    parts: list[Meta] = []
    for k, (_line, next_line, close) in enumerate(delims):
        if close:
            break
        if k + 1 < len(delims):
            part_end = _line_start_before(raw, delims[k + 1][0], next_line)
        else:
            part_end = end  # no close delimiter: the last part runs to the end
        if budget.parts >= MAX_PARTS:
            # fold everything left into one opaque part
            leaf, _ = _parse_entity(raw, next_line, end, MAX_DEPTH, budget, False)
            _text_plain(leaf)
            leaf["lines"] = _count_lines(raw, leaf["body_start"], leaf["body_end"])
            parts.append(leaf)
            break
        part, _ = _parse_entity(raw, next_line, part_end, depth + 1, budget, digest)
        parts.append(part)
    return parts


def _fallback(raw: bytes) -> Meta:
    """Used only if the parser itself has a bug: one opaque text/plain body."""
    fields_end, body_start = header_bounds(raw, 0, len(raw))
    part: Meta = {
        "type": "text",
        "subtype": "plain",
        "params": [["charset", "us-ascii"]],
        "id": None,
        "description": None,
        "encoding": "7BIT",
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": 0,
        "header_end": body_start,
        "body_start": body_start,
        "body_end": len(raw),
        "size": len(raw) - body_start,
        "lines": _count_lines(raw, body_start, len(raw)),
    }
    return {
        "v": VERSION,
        "size": len(raw),
        "header_end": body_start,
        "envelope": build_envelope({}),
        "body": part,
    }


def parse_message(raw: bytes) -> dict[str, Any]:
    """Metadata for ENVELOPE / BODYSTRUCTURE / sections of `raw`. Never raises."""
    try:
        body, headers = _parse_entity(raw, 0, len(raw), 0, _Budget(), False)
        return {
            "v": VERSION,
            "size": len(raw),
            "header_end": body["header_end"],
            "envelope": build_envelope(headers),
            "body": body,
        }
    except Exception:  # noqa: BLE001 - delivery must never fail on a bad message
        try:
            return _fallback(raw)
        except Exception:  # noqa: BLE001
            return {
                "v": VERSION,
                "size": len(raw),
                "header_end": 0,
                "envelope": build_envelope({}),
                "body": {
                    "type": "text", "subtype": "plain", "params": [["charset", "us-ascii"]],
                    "id": None, "description": None, "encoding": "7BIT", "md5": None,
                    "disposition": None, "language": None, "location": None,
                    "header_start": 0, "header_end": 0, "body_start": 0,
                    "body_end": len(raw), "size": len(raw), "lines": 0,
                },
            }  # fmt: skip


_QP_PADDING = re.compile(rb"[ \t]+(\r?\n|\Z)")


def decode_transfer(data: bytes, encoding: str | None) -> bytes | None:
    """Content-Transfer-Encoding removed; None for an encoding we do not know.

    Lenient on purpose (RFC 2045 6.8: ignore characters outside the alphabet).
    """
    enc = (encoding or "7bit").lower()
    if enc in ("7bit", "8bit", "binary"):
        return data
    if enc == "base64":
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        clean += b"=" * (-len(clean) % 4)
        try:
            return binascii.a2b_base64(clean)
        except (binascii.Error, ValueError):
            return b""
    if enc == "quoted-printable":
        # RFC 2045 6.7 (3): trailing white space is transport padding
        return binascii.a2b_qp(_QP_PADDING.sub(rb"\1", data))
    return None


def is_message(part: dict[str, Any], message_global: bool) -> bool:
    """Whether IMAP shows `part` as an encapsulated message: message/rfc822,
    and with `message_global` (IMAP4rev2, RFC 9051 7.5.2) message/global."""
    if "message" not in part:
        return False
    return message_global or str(part["subtype"]).lower() != "global"


def find_part(
    meta: dict[str, Any], path: tuple[int, ...], *, message_global: bool = False
) -> dict[str, Any] | None:
    """The part at an IMAP part path (1-based) or None when it does not exist.

    RFC 3501 6.4.5: in a multipart, n is the n-th child; in a message/rfc822
    part the path continues in the encapsulated message's body; for a
    non-multipart entity, part 1 is that entity itself. With `message_global`
    (IMAP4rev2, RFC 9051 6.4.5) a message/global part is followed the same way.
    """
    container: dict[str, Any] | None = meta["body"]
    part: dict[str, Any] | None = None
    for n in path:
        if container is None or n < 1:
            return None
        if "parts" in container:
            parts = container["parts"]
            if n > len(parts):
                return None
            part = parts[n - 1]
        elif n == 1:
            part = container
        else:
            return None
        if is_message(part, message_global):
            container = part["message"]
        elif "parts" in part:
            container = part
        else:
            container = None  # a leaf has no sub-parts
    return part


# ------------------------------------------------------------ decoded text


def utf8_or_cp1252(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t\r\n]+(=\?)")


def decode_header_value(value: str) -> str:
    """RFC 2047 encoded-words decoded; raw 8-bit read as UTF-8 (or cp1252).

    `value` is latin-1 text as stored in the metadata (one char per octet).
    """
    if any(ord(c) > 0x7F for c in value):
        value = utf8_or_cp1252(value.encode("latin-1", "replace"))
    if "=?" not in value:
        return value
    value = _BETWEEN_WORDS.sub(r"\1\2", value)  # white space between words vanishes

    def one(m: re.Match[str]) -> str:
        charset = m.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        text = m.group(3)
        try:
            if m.group(2) in "bB":
                data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            else:
                data = binascii.a2b_qp(text.replace("_", " ").encode("latin-1", "replace"))
            return data.decode(charset, "replace")
        except (LookupError, ValueError, TypeError, binascii.Error):
            return m.group(0)

    return _ENCODED_WORD.sub(one, value)
