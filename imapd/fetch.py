"""Pure FETCH renderers over the metadata of `storage.mime.parse_message`.

Nothing here touches storage or Twisted: ENVELOPE and BODYSTRUCTURE come from
the metadata stored at delivery; BODY[section] is a slice of the raw message at
offsets computed then (RFC 3501 6.4.5, 7.4.2).

Strings in the metadata are raw header octets decoded as latin-1; they are
written back as those octets by `imapd.responses.nstring` (quoted when they are
plain 7-bit text, else as a literal), so encoded-words reach the client
untouched, as RFC 3501 asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from imapd.parser.commands import Section, SectionText
from imapd.responses import nstring
from storage.mime import (
    decode_transfer,
    find_part,
    header_bounds,
    is_message,
    iter_fields,
    parse_message,
)

Meta = dict[str, Any]

# ------------------------------------------------------------------ ENVELOPE


def _address_list(addrs: Sequence[Sequence[str | None]] | None) -> bytes:
    if not addrs:
        return b"NIL"
    return (
        b"(" + b"".join(b"(" + b" ".join(nstring(f) for f in addr) + b")" for addr in addrs) + b")"
    )


def envelope_bytes(env: Meta) -> bytes:
    """RFC 3501 envelope from an "envelope" dict of the metadata."""
    return b"".join(
        (
            b"(",
            nstring(env.get("date")),
            b" ",
            nstring(env.get("subject")),
            b" ",
            _address_list(env.get("from")),
            b" ",
            _address_list(env.get("sender") or env.get("from")),
            b" ",
            _address_list(env.get("reply_to") or env.get("from")),
            b" ",
            _address_list(env.get("to")),
            b" ",
            _address_list(env.get("cc")),
            b" ",
            _address_list(env.get("bcc")),
            b" ",
            nstring(env.get("in_reply_to")),
            b" ",
            nstring(env.get("message_id")),
            b")",
        )
    )


def render_envelope(meta: Meta) -> bytes:
    """The ENVELOPE value of a message (without the ``ENVELOPE`` label)."""
    env = meta.get("envelope")
    return envelope_bytes(env if isinstance(env, dict) else {})


# ------------------------------------------------------------ BODYSTRUCTURE


def _params(params: Sequence[Sequence[str]] | None) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _disposition(dsp: Sequence[Any] | None) -> bytes:
    if not dsp:
        return b"NIL"
    return b"(" + nstring(dsp[0]) + b" " + _params(dsp[1]) + b")"


def _language(langs: Sequence[str] | None) -> bytes:
    if not langs:
        return b"NIL"
    if len(langs) == 1:
        return nstring(langs[0])
    return b"(" + b" ".join(nstring(x) for x in langs) + b")"


def _part(part: Meta, extensible: bool, message_global: bool) -> bytes:
    if "parts" in part:
        out = b"(" + b"".join(_part(p, extensible, message_global) for p in part["parts"])
        out += b" " + nstring(part["subtype"])
        if extensible:
            out += b" " + b" ".join(
                (
                    _params(part["params"]),
                    _disposition(part["disposition"]),
                    _language(part["language"]),
                    nstring(part["location"]),
                )
            )
        return out + b")"
    fields = [
        nstring(part["type"]),
        nstring(part["subtype"]),
        _params(part["params"]),
        nstring(part["id"]),
        nstring(part["description"]),
        nstring(part["encoding"]),
        b"%d" % part["size"],
    ]
    if is_message(part, message_global):
        fields.append(envelope_bytes(part["envelope"]))
        fields.append(_part(part["message"], extensible, message_global))
        fields.append(b"%d" % part["lines"])
    elif part["type"].lower() == "text":
        fields.append(b"%d" % part["lines"])
    if extensible:
        fields.append(nstring(part["md5"]))
        fields.append(_disposition(part["disposition"]))
        fields.append(_language(part["language"]))
        fields.append(nstring(part["location"]))
    return b"(" + b" ".join(fields) + b")"


def render_bodystructure(meta: Meta, extensible: bool, message_global: bool = False) -> bytes:
    """BODYSTRUCTURE (extensible=True, with extension data) or BODY value.
    `message_global` (IMAP4rev2): a message/global part shows its envelope,
    structure and lines as message/rfc822 does (RFC 9051 7.5.2); else it is
    a basic part (RFC 3501 7.4.2 knows message/rfc822 only).

    Metadata without a body structure (absent or damaged) renders as an empty
    text/plain part rather than failing the whole FETCH.
    """
    body = meta.get("body")
    if not isinstance(body, dict):
        body = parse_message(b"")["body"]
    return _part(body, extensible, message_global)


def _usable(raw: bytes, meta: Meta) -> Meta:
    """The metadata, or a fresh parse when it lacks what sections need."""
    body = meta.get("body")
    if isinstance(body, dict) and meta.get("size") == len(raw):
        return meta
    return parse_message(raw)


# ------------------------------------------------------------ BODY[section]


_NOT_IN_NAME = re.compile(rb"[:\s]")
# The lists of names (what clients ask: a few short ones) matched by a regex
# of their own; a longer list (up to a command line's worth: compiling it
# would cost more than it saves, and the cache would hold megabytes) takes
# the field-by-field path.
REGEX_NAMES = 32
REGEX_NAME_CHARS = 1024
_NOTHING = re.compile(rb"(?!)")


@lru_cache(maxsize=64)
def _fields_named(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """The fields named `names` (any case), as `storage.mime.iter_fields`
    finds fields: the name, optional blanks, a colon, the value and its
    continuation lines, the line ending. Clients ask for the same few lists
    over and over: compiled once each."""
    # A name with a blank or a colon names no field (iter_fields's names
    # have neither): left out, and a list of only such names matches nothing.
    encoded = {n.encode("latin-1", "replace") for n in names}
    usable = sorted((n for n in encoded if n and not _NOT_IN_NAME.search(n)),
                    key=len, reverse=True)
    if not usable:
        return _NOTHING
    alternatives = b"|".join(re.escape(n) for n in usable)
    return re.compile(rb"^(?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*\n?",
                      re.M | re.I)


def header_fields(
    raw: bytes, start: int, end: int, names: Iterable[str], not_: bool = False
) -> bytes:
    """HEADER.FIELDS (names) / .NOT of the header block raw[start:end].

    Fields are copied as written (continuation lines included), in message
    order, and the result ends with the blank line (RFC 3501 6.4.5). Of a
    header with no blank line (a message that is all header), .NOT gives the
    fields only: the rest of the header as it is, nothing added (Dovecot's
    HEADER.FIELDS adds the missing blank line, its .NOT does not).
    """
    fields_end, body = header_bounds(raw, start, end)
    out: list[bytes] = []
    listed = tuple(names)
    if not not_ and len(listed) <= REGEX_NAMES and sum(map(len, listed)) <= REGEX_NAME_CHARS:
        # The regex engine finds the wanted fields and skips the others
        # (Received:, DKIM-Signature: ...) without a match object each.
        for m in _fields_named(listed).finditer(raw, start, fields_end):
            chunk = m.group()
            if not chunk.endswith(b"\n"):
                chunk += b"\r\n"
            out.append(chunk)
        out.append(b"\r\n")
        return b"".join(out)
    wanted = {n.lower().encode("latin-1", "replace") for n in listed}
    for name, fstart, fend, _value in iter_fields(raw, start, fields_end):
        if (name.lower() in wanted) != not_:
            chunk = raw[fstart:fend]
            if not chunk.endswith(b"\n"):
                chunk += b"\r\n"
            out.append(chunk)
    if body > fields_end or not not_:
        out.append(b"\r\n")
    return b"".join(out)


def _message_entity(meta: Meta, path: tuple[int, ...], message_global: bool) -> Meta | None:
    """The entity whose HEADER/TEXT a section names: the message, or the
    message encapsulated by the message/rfc822 part at `path` (or
    message/global, with `message_global`)."""
    if not path:
        entity: Meta = meta["body"]
        return entity
    part = find_part(meta, path, message_global=message_global)
    if part is None or not is_message(part, message_global):
        return None
    inner: Meta = part["message"]
    return inner


def section_bytes(
    raw: bytes, meta: Meta, section: Section, message_global: bool = False
) -> bytes:
    """The octets of BODY[section] (partial not applied: see `partial`).

    A part that does not exist, or HEADER/TEXT asked of a part that is not
    message/rfc822, gives b"" (the client sees an empty string).
    `message_global` (IMAP4rev2): part numbers continue inside a
    message/global part, as in message/rfc822 (RFC 9051 6.4.5).
    """
    text = section.text
    if text is None and not section.part:
        return raw  # BODY[]: the message as stored, no metadata needed
    meta = _usable(raw, meta)
    if text is None:
        part = find_part(meta, section.part, message_global=message_global)
        if part is None:
            return b""
        return raw[part["body_start"] : part["body_end"]]
    if text is SectionText.MIME:
        part = (find_part(meta, section.part, message_global=message_global)
                if section.part else meta["body"])
        if part is None:
            return b""
        return raw[part["header_start"] : part["header_end"]]
    entity = _message_entity(meta, section.part, message_global)
    if entity is None:
        return b""
    if text is SectionText.TEXT:
        return raw[entity["body_start"] : entity["body_end"]]
    if text is SectionText.HEADER:
        return raw[entity["header_start"] : entity["header_end"]]
    return header_fields(
        raw,
        entity["header_start"],
        entity["header_end"],
        section.headers,
        not_=text is SectionText.HEADER_FIELDS_NOT,
    )


def partial(data: bytes, start: int, length: int) -> bytes:
    """``<start.length>``: empty when start is past the end (RFC 3501 6.4.5)."""
    if start >= len(data) or length <= 0:
        return b""
    return data[start : start + length]


# ------------------------------------------------------------ RFC 3516 BINARY


def binary_bytes(
    raw: bytes, meta: Meta, part_path: tuple[int, ...], message_global: bool = False
) -> bytes | None:
    """BINARY[part]: the part's content with its transfer encoding removed.

    None when the encoding is unknown (the server answers NO [UNKNOWN-CTE]).
    A part that does not exist gives b"". BINARY[] is the whole message.
    """
    if not part_path:
        return raw
    part = find_part(_usable(raw, meta), part_path, message_global=message_global)
    if part is None:
        return b""
    body = raw[part["body_start"] : part["body_end"]]
    if "parts" in part or "message" in part:
        return body
    return decode_transfer(body, part["encoding"])


def binary_section(
    raw: bytes, meta: Meta, section: Section, message_global: bool = False
) -> bytes | None:
    """BINARY[section] including the non-standard HEADER/MIME/TEXT forms some
    clients and test suites send (Dovecot accepts them): those are returned
    as-is, a bare part path is decoded as in `binary_bytes`."""
    if section.text is None:
        return binary_bytes(raw, meta, section.part, message_global)
    return section_bytes(raw, meta, section, message_global)


def binary_size(
    raw: bytes, meta: Meta, part_path: tuple[int, ...], message_global: bool = False
) -> int | None:
    """BINARY.SIZE[part]; None when the encoding is unknown."""
    data = binary_bytes(raw, meta, part_path, message_global)
    return None if data is None else len(data)
