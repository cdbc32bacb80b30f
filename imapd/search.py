"""SEARCH evaluation (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER).

`matches` evaluates the parser's SearchKey tree for one message. Flags, sizes,
dates, sets and the envelope headers (From, To, Cc, Bcc, Subject, Date,
Message-ID, In-Reply-To) come from the index entry and the metadata stored at
delivery; only BODY, TEXT and HEADER of other fields read the raw message, via
`body_loader`, called at most once per message (ask `needs_body` first to fetch
the bodies in a batch, or not at all).

String matching is a case-insensitive substring test on decoded text: RFC 2047
encoded-words are decoded, raw 8-bit headers are read as UTF-8 (falling back to
windows-1252), bodies have their transfer encoding removed and are decoded with
their charset. Only text parts (and the headers of attached messages) are
searched in bodies, not binary attachments.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable, Set
from datetime import UTC, date, datetime, timedelta
from typing import Any

from imapd.parser.commands import (
    DateField,
    DateRelation,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchLarger,
    SearchModSeq,
    SearchNot,
    SearchOlder,
    SearchOr,
    SearchSeqSet,
    SearchSmaller,
    SearchText,
    SearchUid,
    SearchYounger,
    SequenceSet,
)
from storage.interface import MessageInfo
from storage.mime import decode_transfer, header_bounds, iter_fields, unfold

Meta = dict[str, Any]

# Header names answered from the stored envelope (no body needed).
_ADDRESS_HEADERS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc"}
_STRING_HEADERS = {
    "subject": "subject",
    "date": "date",
    "message-id": "message_id",
    "in-reply-to": "in_reply_to",
}


def needs_body(key: SearchKey) -> bool:
    """Whether evaluating `key` may need the raw message."""
    if isinstance(key, SearchBody | SearchText):
        return True
    if isinstance(key, SearchHeader):
        name = key.name.lower()
        return name not in _ADDRESS_HEADERS and name not in _STRING_HEADERS
    if isinstance(key, SearchNot):
        return needs_body(key.key)
    if isinstance(key, SearchOr):
        return needs_body(key.left) or needs_body(key.right)
    if isinstance(key, SearchAnd):
        return any(needs_body(k) for k in key.keys)
    return False


class _Message:
    """One message under evaluation: loads and decodes lazily, once."""

    __slots__ = ("entry", "_loader", "_raw", "_headers_text", "_body_text")

    def __init__(self, entry: MessageInfo, loader: Callable[[], bytes]) -> None:
        self.entry = entry
        self._loader = loader
        self._raw: bytes | None = None
        self._headers_text: str | None = None
        self._body_text: str | None = None

    @property
    def meta(self) -> Meta:
        return self.entry.metadata

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._loader()
        return self._raw

    def header_values(self, name: str) -> list[str]:
        """Decoded values of every field called `name` in the top-level header."""
        raw = self.raw()
        end = self.meta.get("header_end", len(raw))
        fields_end, _ = header_bounds(raw, 0, min(end, len(raw)))
        wanted = name.lower().encode("latin-1", "replace")
        return [
            decode_header_value(unfold(value))
            for fname, _s, _e, value in iter_fields(raw, 0, fields_end)
            if fname.lower() == wanted
        ]

    def headers_text(self) -> str:
        if self._headers_text is None:
            raw = self.raw()
            end = self.meta.get("header_end", len(raw))
            fields_end, _ = header_bounds(raw, 0, min(end, len(raw)))
            self._headers_text = "\n".join(
                fname.decode("latin-1") + ": " + decode_header_value(unfold(value))
                for fname, _s, _e, value in iter_fields(raw, 0, fields_end)
            ).casefold()
        return self._headers_text

    def body_text(self) -> str:
        if self._body_text is None:
            raw = self.raw()
            chunks: list[str] = []
            body = self.meta.get("body")
            if isinstance(body, dict):
                _collect_text(raw, body, chunks)
            else:
                chunks.append(_decode_text(raw[self.meta.get("header_end", 0) :], None))
            self._body_text = "\n".join(chunks).casefold()
        return self._body_text


def _collect_text(raw: bytes, part: Meta, out: list[str]) -> None:
    """Decoded text of the text parts under `part` (MIME headers excluded)."""
    if "parts" in part:
        for child in part["parts"]:
            _collect_text(raw, child, out)
        return
    if "message" in part:
        inner = part["message"]
        out.append(_decode_header_block(raw, inner["header_start"], inner["header_end"]))
        _collect_text(raw, inner, out)
        return
    if part["type"].lower() not in ("text", "message"):
        return
    data = decode_transfer(raw[part["body_start"] : part["body_end"]], part["encoding"])
    if data is None:
        data = raw[part["body_start"] : part["body_end"]]
    charset = None
    for k, v in part["params"]:
        if k.lower() == "charset":
            charset = v
    out.append(_decode_text(data, charset))


def _decode_header_block(raw: bytes, start: int, end: int) -> str:
    fields_end, _ = header_bounds(raw, start, end)
    return "\n".join(
        fname.decode("latin-1") + ": " + decode_header_value(unfold(value))
        for fname, _s, _e, value in iter_fields(raw, start, fields_end)
    )


def _decode_text(data: bytes, charset: str | None) -> str:
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    if charset and charset.lower().replace("_", "-") not in ("us-ascii", "ascii"):
        return data.decode(charset, "replace")
    return _utf8_or_cp1252(data)


def _utf8_or_cp1252(data: bytes) -> str:
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
        value = _utf8_or_cp1252(value.encode("latin-1", "replace"))
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
        except (LookupError, ValueError, binascii.Error):
            return m.group(0)

    return _ENCODED_WORD.sub(one, value)


def _address_text(addrs: list[list[str | None]] | None) -> str:
    """An address list as searchable text: "Name <mailbox@host>", groups "g: ...;"."""
    if not addrs:
        return ""
    out: list[str] = []
    for name, _adl, mailbox, host in addrs:
        if host is None:
            out.append(f"{mailbox}:" if mailbox is not None else ";")
            continue
        spec = f"{mailbox or ''}@{host}" if host else (mailbox or "")
        out.append(f"{decode_header_value(name)} <{spec}>" if name else spec)
    return ", ".join(out)


# ------------------------------------------------------------------ dates

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DATE = re.compile(r"(\d{1,2})\s*-?\s*([A-Za-z]{3})[A-Za-z]*\s*-?\s*(\d{2,4})")


def sent_date(value: str | None) -> date | None:
    """The calendar date written in a Date: header, its time zone ignored."""
    if not value:
        return None
    m = _DATE.search(value)
    if m is None:
        return None
    month = _MONTHS.get(m.group(2).lower())
    if month is None:
        return None
    year = int(m.group(3))
    if len(m.group(3)) == 2:
        year += 2000 if year < 50 else 1900  # RFC 5322 4.3
    elif len(m.group(3)) == 3:
        year += 1900
    try:
        return date(year, month, int(m.group(1)))
    except ValueError:
        return None


def _compare(actual: date, relation: DateRelation, wanted: date) -> bool:
    if relation is DateRelation.BEFORE:
        return actual < wanted
    if relation is DateRelation.ON:
        return actual == wanted
    return actual >= wanted


# ------------------------------------------------------------------ matching


def matches(
    key: SearchKey,
    entry: MessageInfo,
    seq: int,
    body_loader: Callable[[], bytes],
    *,
    max_seq: int,
    max_uid: int,
    recent: Set[int] = frozenset(),
    saved: Set[int] = frozenset(),
    now: datetime | None = None,
) -> bool:
    """Whether the message (sequence number `seq`) matches `key`.

    max_seq / max_uid resolve ``*``; `recent` holds the UIDs this session sees
    as \\Recent; `saved` the UIDs of the RFC 5182 saved result (``$``); `now`
    is for OLDER/YOUNGER (default: the current time).
    """
    ctx = _Context(seq, max_seq, max_uid, recent, saved, now)
    return ctx.eval(key, _Message(entry, body_loader))


class _Context:
    __slots__ = ("seq", "max_seq", "max_uid", "recent", "saved", "now")

    def __init__(
        self,
        seq: int,
        max_seq: int,
        max_uid: int,
        recent: Set[int],
        saved: Set[int],
        now: datetime | None,
    ) -> None:
        self.seq = seq
        self.max_seq = max_seq
        self.max_uid = max_uid
        self.recent = recent
        self.saved = saved
        self.now = now

    def in_set(self, sset: SequenceSet, value: int, largest: int, uid: int) -> bool:
        if sset.saved:
            return uid in self.saved
        return sset.contains(value, largest)

    def eval(self, key: SearchKey, msg: _Message) -> bool:
        entry = msg.entry
        if isinstance(key, SearchAnd):
            # cheap keys first: a body is loaded only if the rest still match
            ordered = sorted(key.keys, key=needs_body)
            return all(self.eval(k, msg) for k in ordered)
        if isinstance(key, SearchAll):
            return True
        if isinstance(key, SearchFlag):
            return self.has_flag(key.flag, entry) == key.present
        if isinstance(key, SearchNot):
            return not self.eval(key.key, msg)
        if isinstance(key, SearchOr):
            first, second = (
                (key.right, key.left)
                if needs_body(key.left) and not needs_body(key.right)
                else (key.left, key.right)
            )
            return self.eval(first, msg) or self.eval(second, msg)
        if isinstance(key, SearchSeqSet):
            return self.in_set(key.sequence_set, self.seq, self.max_seq, entry.uid)
        if isinstance(key, SearchUid):
            return self.in_set(key.sequence_set, entry.uid, self.max_uid, entry.uid)
        if isinstance(key, SearchLarger):
            return entry.size > key.size
        if isinstance(key, SearchSmaller):
            return entry.size < key.size
        if isinstance(key, SearchModSeq):
            return entry.modseq >= key.modseq
        if isinstance(key, SearchDate):
            return self.date_matches(key, msg)
        if isinstance(key, SearchOlder | SearchYounger):
            now = self.now or datetime.now(UTC)
            idate = entry.internal_date
            if idate.tzinfo is None:
                idate = idate.replace(tzinfo=UTC)
            limit = now - timedelta(seconds=key.seconds)
            return idate <= limit if isinstance(key, SearchOlder) else idate > limit
        if isinstance(key, SearchHeader):
            return self.header_matches(key, msg)
        if isinstance(key, SearchBody):
            return key.text.casefold() in msg.body_text()
        if isinstance(key, SearchText):
            needle = key.text.casefold()
            return needle in msg.headers_text() or needle in msg.body_text()
        raise TypeError(f"unknown search key {type(key).__name__}")

    def has_flag(self, flag: str, entry: MessageInfo) -> bool:
        wanted = flag.lower()
        if wanted == "\\recent":
            return entry.uid in self.recent or any(f.lower() == wanted for f in entry.flags)
        return any(f.lower() == wanted for f in entry.flags)

    def date_matches(self, key: SearchDate, msg: _Message) -> bool:
        entry = msg.entry
        actual: date | None = None
        if key.field is DateField.SENT:
            env = msg.meta.get("envelope") or {}
            actual = sent_date(env.get("date"))
        if actual is None:
            # RFC 3501 6.4.4 leaves a missing Date: open; like most servers,
            # fall back to the internal date rather than never matching.
            actual = entry.internal_date.date()
        return _compare(actual, key.relation, key.date)

    def header_matches(self, key: SearchHeader, msg: _Message) -> bool:
        name = key.name.lower()
        needle = key.value.casefold()
        env = msg.meta.get("envelope")
        if isinstance(env, dict) and name in _ADDRESS_HEADERS:
            addrs = env.get(_ADDRESS_HEADERS[name])
            if addrs is None:
                return False
            return needle in _address_text(addrs).casefold()
        if isinstance(env, dict) and name in _STRING_HEADERS:
            value = env.get(_STRING_HEADERS[name])
            if value is None:
                return False
            return needle in decode_header_value(value).casefold()
        values = msg.header_values(name)
        if not values:
            return False
        return any(needle in v.casefold() for v in values)
