"""SEARCH evaluation (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER).

`matches` evaluates the parser's SearchKey tree for one message. Flags, sizes,
dates, sets and the envelope headers (From, To, Cc, Bcc, Subject, Date,
Message-ID, In-Reply-To) come from the index entry and the metadata stored at
delivery; only BODY, TEXT and HEADER of other fields read the raw message, via
`body_loader`, called at most once per message (ask `needs_body` first to fetch
the bodies in a batch, or not at all).

`select` answers a key that looks at nothing but what the selected view holds
(`on_columns`: flags, UIDs, sequence numbers, MODSEQ, \\Recent, ``$``) for a
whole folder at once, over its columns, with the same predicates.

String matching is a case-insensitive substring test on decoded text: RFC 2047
encoded-words are decoded, raw 8-bit headers are read as UTF-8 (falling back to
windows-1252), bodies have their transfer encoding removed and are decoded with
their charset. Only text parts (and the headers of attached messages) are
searched in bodies, not binary attachments.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence, Set
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
)
from storage.interface import MessageInfo
from storage.mime import (
    decode_header_value,
    decode_transfer,
    header_bounds,
    iter_fields,
    parse_message,
    unfold,
)
from storage.mime import utf8_or_cp1252 as _utf8_or_cp1252

Meta = dict[str, Any]

# Header names answered from the stored envelope (no body needed).
_ADDRESS_HEADERS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc"}
_STRING_HEADERS = {
    "subject": "subject",
    "date": "date",
    "message-id": "message_id",
    "in-reply-to": "in_reply_to",
}


def leaves(key: SearchKey) -> Iterator[SearchKey]:
    """The keys `key` combines, NOT, OR and AND taken apart (without
    recursion: a client may nest them deeply)."""
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, SearchNot):
            stack.append(k.key)
        elif isinstance(k, SearchOr):
            stack += (k.right, k.left)
        elif isinstance(k, SearchAnd):
            stack.extend(reversed(k.keys))
        else:
            yield k


def needs_body(key: SearchKey) -> bool:
    """Whether evaluating `key` may need the raw message."""
    for k in leaves(key):
        if isinstance(k, SearchBody | SearchText):
            return True
        if isinstance(k, SearchHeader):
            name = k.name.lower()
            if name not in _ADDRESS_HEADERS and name not in _STRING_HEADERS:
                return True
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
        fields_end, _ = header_bounds(raw, 0, len(raw))
        wanted = name.lower().encode("latin-1", "replace")
        return [
            decode_header_value(unfold(value))
            for fname, _s, _e, value in iter_fields(raw, 0, fields_end)
            if fname.lower() == wanted
        ]

    def headers_text(self) -> str:
        if self._headers_text is None:
            raw = self.raw()
            fields_end, _ = header_bounds(raw, 0, len(raw))
            self._headers_text = "\n".join(
                fname.decode("latin-1") + ": " + decode_header_value(unfold(value))
                for fname, _s, _e, value in iter_fields(raw, 0, fields_end)
            ).casefold()
        return self._headers_text

    def body_text(self) -> str:
        if self._body_text is None:
            raw = self.raw()
            meta = self.meta
            if not isinstance(meta.get("body"), dict) or meta.get("size") != len(raw):
                meta = parse_message(raw)  # missing or stale metadata
            chunks: list[str] = []
            _collect_text(raw, meta["body"], chunks)
            self._body_text = "\n".join(chunks).casefold()
        return self._body_text


def _collect_text(raw: bytes, part: Meta, out: list[str]) -> None:
    """Decoded text of the text parts under `part`, with the MIME header of
    each body part (an attachment's file name in its Content-Disposition is
    text of the message: RFC 3501 6.4.4 BODY/TEXT, as Dovecot searches it);
    `part`'s own header is not included (the message's header, for BODY)."""
    if "parts" in part:
        for child in part["parts"]:
            out.append(_decode_header_block(raw, child["header_start"], child["header_end"]))
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
    """A part's text in the charset it declares. A charset that is not a
    text encoding Python knows (unknown, or zlib/base64/rot13, or one whose
    decoder refuses "replace", such as idna) is read as UTF-8 or cp1252, as a
    part without one: anyone can declare anything in a message."""
    if charset and charset.lower().replace("_", "-") not in ("us-ascii", "ascii"):
        try:
            return data.decode(charset, "replace")
        except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
            pass
    return _utf8_or_cp1252(data)


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
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")
_DATE = re.compile(r"(\d{1,2})\s*-?\s*([A-Za-z]{3})[A-Za-z]*\s*-?\s*(\d{2,4})")


def sent_date(value: str | None) -> date | None:
    """The calendar date written in a Date: header, its time zone ignored."""
    if not value:
        return None
    m = _DATE.search(value)
    if m is None:
        iso = _ISO_DATE.search(value)  # not RFC 5322, but some software writes it
        if iso is None:
            return None
        try:
            return date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        except ValueError:
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


class _Eval:
    """One evaluation: the message and the session facts keys refer to."""

    __slots__ = ("entry", "seq", "max_seq", "max_uid", "recent", "saved", "now", "_msg", "_loader")

    def __init__(
        self,
        entry: MessageInfo,
        seq: int,
        loader: Callable[[], bytes],
        max_seq: int,
        max_uid: int,
        recent: Set[int],
        saved: Set[int],
        now: datetime | None,
    ) -> None:
        self.entry = entry
        self.seq = seq
        self.max_seq = max_seq
        self.max_uid = max_uid
        self.recent = recent
        self.saved = saved
        self.now = now
        self._loader = loader
        self._msg: _Message | None = None

    @property
    def msg(self) -> _Message:
        if self._msg is None:
            self._msg = _Message(self.entry, self._loader)
        return self._msg


Predicate = Callable[[_Eval], bool]


class Matcher:
    """A SearchKey compiled once into a tree of closures (fast over 100,000 messages)."""

    __slots__ = ("key", "_pred", "needs_body")

    def __init__(self, key: SearchKey) -> None:
        self.key = key
        self._pred = _compile(key)
        self.needs_body = needs_body(key)

    def __call__(
        self,
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
        return self._pred(_Eval(entry, seq, body_loader, max_seq, max_uid, recent, saved, now))


# The last compiled keys, by identity: a SEARCH calls `matches` once per message
# with the same key object, so it is compiled once per command.
_COMPILED: dict[int, Matcher] = {}
_COMPILED_MAX = 64


def compile_key(key: SearchKey) -> Matcher:
    matcher = _COMPILED.get(id(key))
    if matcher is None or matcher.key is not key:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        matcher = _COMPILED[id(key)] = Matcher(key)
    return matcher


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
    is for OLDER/YOUNGER (default: the current time). `body_loader` is called
    at most once, and only if a key needs the raw message.
    """
    return compile_key(key)._pred(
        _Eval(entry, seq, body_loader, max_seq, max_uid, recent, saved, now)
    )


_SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})


def _compile(key: SearchKey) -> Predicate:
    if isinstance(key, SearchAnd):
        # cheap keys first: a body is loaded only if the rest still match
        preds = tuple(_compile(k) for k in sorted(key.keys, key=needs_body))
        if len(preds) == 1:
            return preds[0]
        return lambda ev: all(p(ev) for p in preds)
    if isinstance(key, SearchAll):
        return lambda ev: True
    if isinstance(key, SearchFlag):
        return _flag_predicate(key.flag, key.present)
    if isinstance(key, SearchNot):
        inner = _compile(key.key)
        return lambda ev: not inner(ev)
    if isinstance(key, SearchOr):
        left, right = key.left, key.right
        if needs_body(left) and not needs_body(right):
            left, right = right, left
        first, second = _compile(left), _compile(right)
        return lambda ev: first(ev) or second(ev)
    if isinstance(key, SearchSeqSet):
        sset = key.sequence_set
        if sset.saved:
            return lambda ev: ev.entry.uid in ev.saved
        return lambda ev: sset.contains(ev.seq, ev.max_seq)
    if isinstance(key, SearchUid):
        uset = key.sequence_set
        if uset.saved:
            return lambda ev: ev.entry.uid in ev.saved
        return lambda ev: uset.contains(ev.entry.uid, ev.max_uid)
    if isinstance(key, SearchLarger):
        larger = key.size
        return lambda ev: ev.entry.size > larger
    if isinstance(key, SearchSmaller):
        smaller = key.size
        return lambda ev: ev.entry.size < smaller
    if isinstance(key, SearchModSeq):
        modseq = key.modseq
        return lambda ev: ev.entry.modseq >= modseq
    if isinstance(key, SearchDate):
        return _date_predicate(key)
    if isinstance(key, SearchOlder | SearchYounger):
        seconds, older = key.seconds, isinstance(key, SearchOlder)

        def age(ev: _Eval) -> bool:
            now = ev.now or datetime.now(UTC)
            idate = ev.entry.internal_date
            if idate.tzinfo is None:
                idate = idate.replace(tzinfo=UTC)
            limit = now - timedelta(seconds=seconds)
            return idate <= limit if older else idate > limit

        return age
    if isinstance(key, SearchHeader):
        return _header_predicate(key)
    if isinstance(key, SearchBody):
        needle = key.text.casefold()
        return lambda ev: needle in ev.msg.body_text()
    if isinstance(key, SearchText):
        text = key.text.casefold()
        return lambda ev: text in ev.msg.headers_text() or text in ev.msg.body_text()
    raise TypeError(f"unknown search key {type(key).__name__}")


def _flag_predicate(flag: str, present: bool) -> Predicate:
    wanted = flag.lower()
    if wanted == "\\recent":
        # \\Recent is session state: the session passes its recent UIDs
        return lambda ev: (ev.entry.uid in ev.recent or "\\Recent" in ev.entry.flags) is present
    if wanted in _SYSTEM_FLAGS:
        # the parser and the store (normalise_flags) spell system flags
        # canonically: the exact test nearly always decides
        canonical = "\\" + wanted[1:].capitalize()

        def system(ev: _Eval) -> bool:
            flags = ev.entry.flags
            found = canonical in flags or (bool(flags) and any(f.lower() == wanted for f in flags))
            return found is present

        return system

    # keywords compare case-insensitively (RFC 3501 2.3.2); exact spelling first
    def keyword(ev: _Eval) -> bool:
        flags = ev.entry.flags
        found = flag in flags or any(f.lower() == wanted for f in flags)
        return found is present

    return keyword


def _date_predicate(key: SearchDate) -> Predicate:
    relation, wanted, sent = key.relation, key.date, key.field is DateField.SENT

    def check(ev: _Eval) -> bool:
        actual: date | None = None
        if sent:
            env = ev.entry.metadata.get("envelope") or {}
            actual = sent_date(env.get("date"))
        if actual is None:
            # RFC 3501 6.4.4 leaves a missing Date: open; like most servers,
            # fall back to the internal date rather than never matching.
            actual = ev.entry.internal_date.date()
        return _compare(actual, relation, wanted)

    return check


def _header_predicate(key: SearchHeader) -> Predicate:
    name = key.name.lower()
    needle = key.value.casefold()

    def from_raw(ev: _Eval) -> bool:
        values = ev.msg.header_values(name)
        return bool(values) and any(needle in v.casefold() for v in values)

    if name in _ADDRESS_HEADERS:
        field = _ADDRESS_HEADERS[name]

        def address(ev: _Eval) -> bool:
            env = ev.entry.metadata.get("envelope")
            if not isinstance(env, dict):
                return from_raw(ev)
            addrs = env.get(field)
            return addrs is not None and needle in _address_text(addrs).casefold()

        return address
    if name in _STRING_HEADERS:
        sfield = _STRING_HEADERS[name]

        def string(ev: _Eval) -> bool:
            env = ev.entry.metadata.get("envelope")
            if not isinstance(env, dict):
                return from_raw(ev)
            value = env.get(sfield)
            return value is not None and needle in decode_header_value(value).casefold()

        return string
    return from_raw


# ------------------------------------------------------------------ columns

_COLUMN_KEYS = (SearchAll, SearchFlag, SearchSeqSet, SearchUid, SearchModSeq)
_EPOCH = datetime.fromtimestamp(0, UTC)


def on_columns(key: SearchKey) -> bool:
    """Whether `key` looks at nothing but a message's flags (\\Recent
    included), UID, sequence number, MODSEQ and ``$``: `select` answers it."""
    return all(isinstance(k, _COLUMN_KEYS) for k in leaves(key))


def _on_flags(key: SearchKey) -> bool:
    """Whether `key` looks at nothing but the flags stored with a message
    (not \\Recent, which is the session's)."""
    for k in leaves(key):
        if isinstance(k, SearchFlag):
            if k.flag.lower() == "\\recent":
                return False
        elif not isinstance(k, SearchAll):
            return False
    return True


def select(
    key: SearchKey,
    seqs: Sequence[int],
    uids: Sequence[int],
    modseqs: Sequence[int],
    flags: Sequence[frozenset[str]],
    *,
    max_seq: int,
    max_uid: int,
    recent: Set[int] = frozenset(),
    saved: Set[int] = frozenset(),
) -> bytes:
    """Which of these messages match `key` (one that `on_columns` accepts):
    one byte per message, 1 or 0 (for `itertools.compress`), the answer
    `matches` gives for each.

    The columns name the messages in sequence order (a folder's view, or
    some of its messages): sequence numbers, UIDs (both ascending), MODSEQs
    and stored flags; \\Recent is `recent` (UIDs), not a flag. max_seq /
    max_uid resolve ``*``; `saved` is ``$``. No object per message: a flag
    key is asked once per distinct flag set (a folder has a handful) and
    the answers combined a whole folder at a time, in C.
    """
    return _Columns(seqs, uids, modseqs, flags, max_seq, max_uid, recent, saved).select(key)


class _Columns:
    """One `select`. A mask is an int holding one byte per message (message
    i is byte i, little-endian, 1 when it matches): NOT, AND and OR of two
    masks are one integer operation each."""

    __slots__ = ("seqs", "uids", "modseqs", "flags", "max_seq", "max_uid", "recent", "saved",
                 "n", "_ones", "_distinct")

    def __init__(self, seqs: Sequence[int], uids: Sequence[int], modseqs: Sequence[int],
                 flags: Sequence[frozenset[str]], max_seq: int, max_uid: int,
                 recent: Set[int], saved: Set[int]) -> None:
        self.seqs, self.uids, self.modseqs, self.flags = seqs, uids, modseqs, flags
        self.max_seq, self.max_uid, self.recent, self.saved = max_seq, max_uid, recent, saved
        self.n = len(uids)
        self._ones: int | None = None
        self._distinct: set[frozenset[str]] | None = None

    def select(self, key: SearchKey) -> bytes:
        if _on_flags(key):  # UNDELETED, UNSEEN, ...: the mask needs no int
            return self._by_flags(key)
        return self.mask(key).to_bytes(self.n, "little")

    @property
    def ones(self) -> int:
        if self._ones is None:
            self._ones = int.from_bytes(b"\x01" * self.n, "little")
        return self._ones

    def mask(self, key: SearchKey) -> int:
        if _on_flags(key):
            return int.from_bytes(self._by_flags(key), "little")
        if isinstance(key, SearchNot):
            return self.mask(key.key) ^ self.ones
        if isinstance(key, SearchOr):
            return self.mask(key.left) | self.mask(key.right)
        if isinstance(key, SearchAnd):
            out = self.ones
            for k in key.keys:
                out &= self.mask(k)
            return out
        if isinstance(key, SearchFlag):  # \\Recent (`_on_flags` takes the others)
            found = self._members(self.recent)
            return found if key.present else found ^ self.ones
        if isinstance(key, SearchSeqSet | SearchUid):
            sset = key.sequence_set
            if sset.saved:
                return self._members(self.saved)
            if isinstance(key, SearchSeqSet):
                return self._ranges(self.seqs, sset.merged_bounds(self.max_seq))
            return self._ranges(self.uids, sset.merged_bounds(self.max_uid))
        if isinstance(key, SearchModSeq):
            return int.from_bytes(bytes(map(key.modseq.__le__, self.modseqs)), "little")
        raise TypeError(f"not answered from columns: {type(key).__name__}")

    def _by_flags(self, key: SearchKey) -> bytes:
        """The messages `key` (about stored flags only) matches, asking the
        engine's own predicate once per distinct flag set."""
        if self._distinct is None:
            self._distinct = set(self.flags)
        pred = _compile(key)
        table = {fs: pred(_Eval(MessageInfo(0, 0, fs, 0, _EPOCH, {}), 0, _no_body, 0, 0,
                                frozenset(), frozenset(), None))
                 for fs in self._distinct}
        if all(table.values()):
            return b"\x01" * self.n
        if not any(table.values()):
            return bytes(self.n)
        return bytes(map(table.__getitem__, self.flags))

    def _members(self, wanted: Set[int]) -> int:
        """The messages whose UID is in `wanted`."""
        if not wanted:
            return 0
        return int.from_bytes(bytes(map(wanted.__contains__, self.uids)), "little")

    def _ranges(self, column: Sequence[int], bounds: list[tuple[int, int]]) -> int:
        """The messages whose number in `column` (ascending) is in one of
        the inclusive `bounds` (sorted, not overlapping)."""
        out = bytearray(self.n)
        for low, high in bounds:
            i, j = bisect_left(column, low), bisect_right(column, high)
            if i < j:
                out[i:j] = b"\x01" * (j - i)
        return int.from_bytes(out, "little")


def _no_body() -> bytes:
    raise AssertionError("a flag key never reads the message")
