"""The keys SORT and THREAD (RFC 5256, RFC 5957) order and link messages by,
computed once at delivery so that sorting a 100,000-message folder never
parses a message again.

`sort_keys(raw, meta)` takes the raw message and its `storage.mime`
metadata; `encode` / `decode` turn the keys into the compact JSON kept
(encrypted, like the metadata: subjects and names are health data) in the
``sort_keys`` table (revision 0018; a column of ``bodies`` from 0013).
Strings are decoded text (RFC 2047 words decoded, raw
8-bit read as UTF-8); collation (i;ascii-casemap) is the reader's business.

Base subject (RFC 5256 2.1)::

    subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
    subj-blob   = "[" *BLOBCHAR "]" *WSP
    subj-trailer = "(fwd)" / WSP
    subj-fwd-hdr = "[fwd:"      subj-fwd-trl = "]"
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_tz
from typing import Any

from storage.interface import SortKeys
from storage.mime import decode_header_value, header_bounds, iter_fields, unfold

# Bump when what is computed changes: stored keys of another version are
# recomputed from the message.
VERSION = 1
MAX_REFERENCES = 100  # References: ids kept per message (the nearest ones)
# A msg-id longer than a header line may be (RFC 5322 2.1.1) is no id a
# mailer made: left out, so that a few crafted messages cannot pin megabytes
# in every worker's sort-key cache.
MAX_ID_LENGTH = 998

_WS = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER_WS = re.compile(r"[ \t]+")
_REFWD = re.compile(r"(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:", re.I)
_BLOB_RE = re.compile(_BLOB)
_FWD_HDR = "[fwd:"
_MSG_ID = re.compile(r"<([^<>]+)>")


def base_subject(subject: str | None) -> tuple[str, bool]:
    """(base subject, whether the subject marks a reply or forward).

    `subject` is decoded text. A reply or forward is a subject from which a
    subj-refwd, a "(fwd)" trailer or a [fwd: ...] wrapper was removed
    (RFC 5256 2.1, used by THREAD=REFERENCES step 5).
    """
    if not subject:
        return "", False
    # (1) white space runs (tabs, folding) become one space
    s = _WS.sub(" ", subject)
    reply = False
    while True:
        # (2) trailers: "(fwd)" and white space, repeatedly
        while True:
            if s.endswith((" ", "\t")):
                s = s.rstrip(" \t")
            elif s[-5:].lower() == "(fwd)":
                s = s[:-5]
                reply = True
            else:
                break
        # (3)-(5) leaders, and a blob prefix that leaves something behind
        while True:
            before = s
            m = _LEADER_WS.match(s)
            if m:
                s = s[m.end() :]
            m = _REFWD.match(s)
            if m:
                reply = True
                s = s[m.end() :]
            m = _BLOB_RE.match(s)
            if m and s[m.end() :].strip(" \t"):
                s = s[m.end() :]
            if s == before:
                break
        # (6) a [fwd: ...] wrapper: remove it and start again at (2)
        if s[:5].lower() == _FWD_HDR and s.endswith("]"):
            s = s[5:-1]
            reply = True
            continue
        return s, reply


def _first_address(addrs: Any) -> list[Any] | None:
    """The first real address of an envelope list (group markers skipped)."""
    if not isinstance(addrs, list):
        return None
    for a in addrs:
        if isinstance(a, list) and len(a) == 4 and a[3] is not None:
            return a
    return None


def _mailbox(addrs: Any) -> str:
    """addr-mailbox of the first address (RFC 5256 FROM / TO / CC)."""
    a = _first_address(addrs)
    if a is None or not a[2]:
        return ""
    return decode_header_value(a[2])


def _display(addrs: Any) -> str:
    """RFC 5957: the display name of the first address, decoded, or its
    addr-spec (mailbox@host) when it has none."""
    a = _first_address(addrs)
    if a is None:
        return ""
    name = decode_header_value(a[0]).strip() if a[0] else ""
    if name:
        return name
    mailbox = decode_header_value(a[2]) if a[2] else ""
    return f"{mailbox}@{a[3]}" if a[3] else mailbox


def _sent_epoch(value: str | None) -> int | None:
    """The Date: header as Unix seconds (UTC), None when unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_tz(value)
        if parsed is None:
            return None
        offset = parsed[9] or 0
        when = datetime(*parsed[:6], tzinfo=UTC)
        return int(when.timestamp()) - offset
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def message_ids(value: str | None) -> list[str]:
    """The msg-ids of a header value, white space inside removed, brackets kept."""
    if not value:
        return []
    return ["<" + "".join(m.split()) + ">" for m in _MSG_ID.findall(value)
            if m.strip() and len(m) <= MAX_ID_LENGTH]


def _references(raw: bytes) -> list[str]:
    fields_end, _ = header_bounds(raw, 0, len(raw))
    for name, _s, _e, value in iter_fields(raw, 0, fields_end):
        if name.lower() == b"references":
            return message_ids(unfold(value))[-MAX_REFERENCES:]
    return []


def sort_keys(raw: bytes, meta: dict[str, Any]) -> SortKeys:
    """The keys of one message (`meta` is its `storage.mime` metadata)."""
    env = meta.get("envelope") or {}
    subject = decode_header_value(env["subject"]) if env.get("subject") else ""
    base, reply = base_subject(subject)
    own = message_ids(env.get("message_id"))
    refs = _references(raw)
    if not refs:
        # RFC 5256 REFERENCES 1.A: In-Reply-To's first msg-id when there is
        # no References
        refs = message_ids(env.get("in_reply_to"))[:1]
    return SortKeys(
        sent=_sent_epoch(env.get("date")),
        subject=base,
        reply=reply,
        from_=_mailbox(env.get("from")),
        to=_mailbox(env.get("to")),
        cc=_mailbox(env.get("cc")),
        display_from=_display(env.get("from")),
        display_to=_display(env.get("to")),
        message_id=own[0] if own else None,
        references=tuple(refs),
    )


def encode(keys: SortKeys) -> bytes:
    """The stored form (the row facts, size and arrival, are not part of it)."""
    return json.dumps(
        [VERSION, keys.sent, keys.subject, keys.reply, keys.from_, keys.to, keys.cc,
         keys.display_from, keys.display_to, keys.message_id, list(keys.references)],
        separators=(",", ":"), ensure_ascii=False,
    ).encode()


def decode(data: bytes, size: int = 0, arrival: int = 0) -> SortKeys | None:
    """Stored keys with the row's facts, or None when they are of another
    version (to be recomputed)."""
    return decode_many([data], [size], [arrival])[0]


def decode_many(data: Sequence[bytes], sizes: Sequence[int],
                arrivals: Sequence[int]) -> list[SortKeys | None]:
    """`decode` of many stored values at once, with their sizes and
    arrivals (one JSON parse for all: a parse per message was most of the
    cost of reading a big folder's keys)."""
    if not data:
        return []
    new = tuple.__new__
    with paused_gc():
        values = json.loads(b"[" + b",".join(data) + b"]")
        return [
            new(SortKeys, (v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], tuple(v[10]),
                           size, arrival))
            if type(v) is list and len(v) == 11 and v[0] == VERSION else None
            for v, size, arrival in zip(values, sizes, arrivals, strict=True)
        ]


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector held off while 100,000 objects that
    hold no cycles are built: otherwise it walks the growing heap again and
    again, and that was two thirds of the time. Only the thread that found
    it enabled enables it again, so threads overlapping here never leave it
    off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
