"""Frozen, typed IMAP commands: what the parser produces and the server dispatches on.

Everything here is plain data (no Twisted, no storage). Conventions:

* Mailbox names are ``str``, already decoded from modified UTF-7 (RFC 3501 5.1.3);
  ``INBOX`` in any case is normalised to ``"INBOX"`` (also as a hierarchy prefix,
  ``inbox/x`` -> ``INBOX/x``). LIST/LSUB references and patterns are decoded but
  not normalised (the server matches INBOX case-insensitively).
* Flags are ``str`` as IMAP spells them; system flags are canonicalised
  (``\\SEEN`` -> ``\\Seen``), keywords keep the client's spelling.
* Sequence sets keep ``*`` symbolic (``None``): the server resolves it against the
  session's view (largest sequence number or largest UID).
* ``uid: bool`` on Fetch/Store/Search/Copy/Move/Expunge says the command came as
  ``UID <command>`` (sets are then UIDs).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import ClassVar

# ------------------------------------------------------------------ states


class State(enum.Enum):
    """RFC 3501 section 3 connection states in which a command is valid."""

    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"


_ANY = frozenset(State)
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

# ------------------------------------------------------------ sequence sets


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``a``, ``a:b`` or with ``*`` (``None``). Bounds may come in either order."""

    start: int | None
    end: int | None

    def bounds(self, largest: int) -> tuple[int, int]:
        """Inclusive (low, high) with ``*`` replaced by ``largest``."""
        a = largest if self.start is None else self.start
        b = largest if self.end is None else self.end
        return (a, b) if a <= b else (b, a)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 3501 sequence-set (``1,3:5,7:*``) or the RFC 5182 ``$`` saved result."""

    ranges: tuple[SeqRange, ...]
    saved: bool = False  # "$": the server substitutes its saved SEARCH result

    def contains(self, value: int, largest: int) -> bool:
        """Whether ``value`` is in the set when ``*`` means ``largest``.

        RFC 3501: ``*`` in an empty mailbox (largest == 0) matches nothing but
        ``UID n:*`` always includes the largest UID, so pass the largest value
        in use (largest UID for UID sets) and 0 for an empty mailbox.
        """
        for r in self.ranges:
            low, high = r.bounds(largest)
            if low <= value <= high:
                return True
        return False

    def iter_bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        """Each range as inclusive (low, high), unmerged, in the client's order."""
        for r in self.ranges:
            yield r.bounds(largest)

    def merged_bounds(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, non-overlapping inclusive ranges (cheap even for 1:4294967295)."""
        spans = sorted(self.iter_bounds(largest))
        out: list[tuple[int, int]] = []
        for low, high in spans:
            if out and low <= out[-1][1] + 1:
                if high > out[-1][1]:
                    out[-1] = (out[-1][0], high)
            else:
                out.append((low, high))
        return out

    @property
    def uses_star(self) -> bool:
        return any(r.start is None or r.end is None for r in self.ranges)


# ------------------------------------------------------------- FETCH items


class SectionText(enum.Enum):
    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"  # only after a part number


@dataclass(frozen=True, slots=True)
class Partial:
    """``<start.length>``: the octets [start, start+length) of the section."""

    start: int
    length: int


@dataclass(frozen=True, slots=True)
class Section:
    """``[1.2.HEADER.FIELDS (From To)]<0.100>``.

    ``part`` is the MIME part path (``()`` = the whole message); ``text`` is
    None for the part's content (``BODY[]``, ``BODY[1.2]``); ``headers`` is set
    only for HEADER.FIELDS(.NOT) and keeps the client's spelling (compare
    case-insensitively); ``partial`` is None for the whole section.
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    headers: tuple[str, ...] = ()
    partial: Partial | None = None

    def spec(self) -> str:
        """The section-spec as echoed in a FETCH response (without brackets)."""
        bits: list[str] = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text is not None:
            bits.append(self.text.value)
        out = ".".join(bits)
        if self.headers:
            out += " (" + " ".join(_header_name_atom(h) for h in self.headers) + ")"
        return out

    def label(self, kind: str = "BODY") -> str:
        """Response label, e.g. ``BODY[1.TEXT]<10>`` (RFC 3501: origin only)."""
        out = f"{kind}[{self.spec()}]"
        if self.partial is not None:
            out += f"<{self.partial.start}>"
        return out


def _header_name_atom(name: str) -> str:
    # Header names in a section are astrings; echo as atom when possible.
    if name and all(33 <= ord(c) < 127 and c not in '(){%*"\\]' for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class FetchFlags:
    pass


@dataclass(frozen=True, slots=True)
class FetchUid:
    pass


@dataclass(frozen=True, slots=True)
class FetchInternalDate:
    pass


@dataclass(frozen=True, slots=True)
class FetchRfc822Size:
    pass


@dataclass(frozen=True, slots=True)
class FetchEnvelope:
    pass


@dataclass(frozen=True, slots=True)
class FetchBodyStructure:
    """``BODYSTRUCTURE`` (extensible=True) or bare ``BODY`` (extensible=False)."""

    extensible: bool = True


@dataclass(frozen=True, slots=True)
class FetchModSeq:
    """RFC 7162 MODSEQ."""


@dataclass(frozen=True, slots=True)
class FetchRfc822:
    """``RFC822`` = ``BODY[]`` labelled RFC822; sets \\Seen."""


@dataclass(frozen=True, slots=True)
class FetchRfc822Header:
    """``RFC822.HEADER`` = ``BODY.PEEK[HEADER]`` labelled RFC822.HEADER."""


@dataclass(frozen=True, slots=True)
class FetchRfc822Text:
    """``RFC822.TEXT`` = ``BODY[TEXT]`` labelled RFC822.TEXT; sets \\Seen."""


@dataclass(frozen=True, slots=True)
class FetchBodySection:
    """``BODY[section]<partial>`` / ``BODY.PEEK[...]`` (peek: do not set \\Seen)."""

    section: Section
    peek: bool = False

    def label(self) -> str:
        return self.section.label("BODY")


@dataclass(frozen=True, slots=True)
class FetchBinary:
    """RFC 3516 ``BINARY[part]<partial>`` / ``BINARY.PEEK``; section.text is None."""

    section: Section
    peek: bool = False

    def label(self) -> str:
        return self.section.label("BINARY")


@dataclass(frozen=True, slots=True)
class FetchBinarySize:
    """RFC 3516 ``BINARY.SIZE[part]``."""

    part: tuple[int, ...] = ()

    def label(self) -> str:
        return "BINARY.SIZE[" + ".".join(str(p) for p in self.part) + "]"


FetchAttribute = (
    FetchFlags
    | FetchUid
    | FetchInternalDate
    | FetchRfc822Size
    | FetchEnvelope
    | FetchBodyStructure
    | FetchModSeq
    | FetchRfc822
    | FetchRfc822Header
    | FetchRfc822Text
    | FetchBodySection
    | FetchBinary
    | FetchBinarySize
)

# RFC 3501 6.4.5 macros, as the parser expands them.
FETCH_MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "ALL": (FetchFlags(), FetchInternalDate(), FetchRfc822Size(), FetchEnvelope()),
    "FAST": (FetchFlags(), FetchInternalDate(), FetchRfc822Size()),
    "FULL": (
        FetchFlags(),
        FetchInternalDate(),
        FetchRfc822Size(),
        FetchEnvelope(),
        FetchBodyStructure(extensible=False),
    ),
}


def sets_seen(att: FetchAttribute) -> bool:
    """Whether fetching this attribute sets \\Seen (RFC 3501 6.4.5)."""
    if isinstance(att, FetchBodySection | FetchBinary):
        return not att.peek
    return isinstance(att, FetchRfc822 | FetchRfc822Text)


# ------------------------------------------------------------ SEARCH keys


class DateField(enum.Enum):
    INTERNAL = "internal"  # BEFORE / ON / SINCE: the internal date
    SENT = "sent"  # SENTBEFORE / SENTON / SENTSINCE: the Date: header


class DateRelation(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """ANSWERED/DELETED/DRAFT/FLAGGED/SEEN/RECENT/KEYWORD k (present=True) and
    the UN- forms (present=False). NEW and OLD are expanded by the parser."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchSeqSet:
    """A bare sequence set: message sequence numbers."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchUid:
    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchDate:
    field: DateField
    relation: DateRelation
    date: date


@dataclass(frozen=True, slots=True)
class SearchLarger:
    size: int


@dataclass(frozen=True, slots=True)
class SearchSmaller:
    size: int


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name value; FROM/TO/CC/BCC/SUBJECT x become SearchHeader("FROM", x) etc.
    An empty value matches every message that has the header."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchBody:
    text: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """TEXT: header or body contains."""

    text: str


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """RFC 7162 MODSEQ [entry-name entry-type] n: messages with modseq >= n."""

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None  # "priv" / "shared" / "all"


@dataclass(frozen=True, slots=True)
class SearchOlder:
    """RFC 5032 OLDER n (seconds)."""

    seconds: int


@dataclass(frozen=True, slots=True)
class SearchYounger:
    """RFC 5032 YOUNGER n (seconds)."""

    seconds: int


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """A parenthesised list, and the top-level list of keys: all must match."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchSeqSet
    | SearchUid
    | SearchDate
    | SearchLarger
    | SearchSmaller
    | SearchHeader
    | SearchBody
    | SearchText
    | SearchModSeq
    | SearchOlder
    | SearchYounger
    | SearchNot
    | SearchOr
    | SearchAnd
)

# The CHARSETs the server should accept: for any other, answer NO [BADCHARSET (...)]
# (the parser still decodes strings with Python's codec of that name, or latin-1).
SUPPORTED_SEARCH_CHARSETS: tuple[str, ...] = ("UTF-8", "US-ASCII")

# ------------------------------------------------------- STATUS / LIST bits


class StatusItem(enum.Enum):
    MESSAGES = "MESSAGES"
    RECENT = "RECENT"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"  # RFC 7162
    SIZE = "SIZE"  # RFC 8438
    DELETED = "DELETED"  # RFC 9051
    # RFC 9208 5.1: required of a server advertising QUOTA=RES-STORAGE.
    DELETED_STORAGE = "DELETED-STORAGE"
    APPENDLIMIT = "APPENDLIMIT"  # RFC 7889


class StoreMode(enum.Enum):
    """Same values as storage.interface.FlagMode (kept separate: the parser is pure)."""

    ADD = "add"  # +FLAGS
    REMOVE = "remove"  # -FLAGS
    REPLACE = "replace"  # FLAGS


# ----------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: ClassVar[str] = ""
    allowed_states: ClassVar[frozenset[State]] = _ANY


# Any state ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: ``ID NIL`` (params None) or ``ID ("name" "x" "version" NIL)``."""

    params: tuple[tuple[str, str | None], ...] | None = None
    name: ClassVar[str] = "ID"


# Not authenticated ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    name: ClassVar[str] = "STARTTLS"
    allowed_states: ClassVar[frozenset[State]] = _NOT_AUTH


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``AUTHENTICATE mech [initial]``. mechanism is upper-cased.

    initial_response is None without SASL-IR, ``b""`` for ``=``, else the
    base64-decoded bytes (invalid base64 is a parse failure).
    """

    mechanism: str = ""
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"
    allowed_states: ClassVar[frozenset[State]] = _NOT_AUTH


@dataclass(frozen=True, slots=True)
class Login(Command):
    username: str = ""
    password: str = field(default="", repr=False)
    name: ClassVar[str] = "LOGIN"
    allowed_states: ClassVar[frozenset[State]] = _NOT_AUTH


# Authenticated ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QResync:
    """RFC 7162 SELECT (QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select(Command):
    mailbox: str = ""
    condstore: bool = False
    qresync: QResync | None = None
    name: ClassVar[str] = "SELECT"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Examine(Command):
    mailbox: str = ""
    condstore: bool = False
    qresync: QResync | None = None
    name: ClassVar[str] = "EXAMINE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str = ""
    special_use: tuple[str, ...] = ()  # RFC 6154 CREATE ... (USE (\Drafts))
    name: ClassVar[str] = "CREATE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str = ""
    name: ClassVar[str] = "DELETE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str = ""
    new: str = ""
    name: ClassVar[str] = "RENAME"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str = ""
    name: ClassVar[str] = "SUBSCRIBE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str = ""
    name: ClassVar[str] = "UNSUBSCRIBE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST, basic or RFC 5258 extended (RFC 6154 SPECIAL-USE, RFC 5819 STATUS).

    ``extended`` is True when selection options, several patterns or return
    options were given (the server then answers in the extended form).
    ``return_status`` is None unless RETURN (STATUS (...)) was asked.
    """

    reference: str = ""
    patterns: tuple[str, ...] = ()
    select_subscribed: bool = False
    select_remote: bool = False
    select_recursive_match: bool = False
    select_special_use: bool = False
    return_subscribed: bool = False
    return_children: bool = False
    return_special_use: bool = False
    return_myrights: bool = False
    return_status: tuple[StatusItem, ...] | None = None
    extended: bool = False
    name: ClassVar[str] = "LIST"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str = ""
    pattern: str = ""
    name: ClassVar[str] = "LSUB"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str = ""
    items: tuple[StatusItem, ...] = ()
    name: ClassVar[str] = "STATUS"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class CatenateText:
    """RFC 4469 ``TEXT literal`` (``literal8`` with RFC 3516 BINARY: binary),
    or RFC 6855 ``UTF8 (literal8)`` (utf8)."""

    data: bytes = field(default=b"", repr=False)
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class CatenateUrl:
    """RFC 4469 ``URL astring``: an IMAP URL (RFC 5092), as the client sent it."""

    url: str = ""


CatenatePart = CatenateText | CatenateUrl


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (RFC 3502 MULTIAPPEND: one or more).

    ``message`` is the literal; ``binary`` if it came as literal8 ``~{n}``
    (RFC 3516), ``utf8`` if as RFC 6855 ``UTF8 (~{n})``. With RFC 4469
    CATENATE, ``catenate`` holds the parts and ``message`` is empty.
    """

    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    message: bytes = field(default=b"", repr=False)
    binary: bool = False
    utf8: bool = False
    catenate: tuple[CatenatePart, ...] | None = None


@dataclass(frozen=True, slots=True)
class Append(Command):
    """``APPEND mailbox message...``: one message, or several (RFC 3502),
    each a literal or a CATENATE list (RFC 4469)."""

    mailbox: str = ""
    messages: tuple[AppendMessage, ...] = ()
    name: ClassVar[str] = "APPEND"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Enable(Command):
    """RFC 5161. Capability names upper-cased."""

    capabilities: tuple[str, ...] = ()
    name: ClassVar[str] = "ENABLE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


class NotifyFilter(enum.Enum):
    """RFC 5465 6: which mailboxes an event group is about."""

    SELECTED = "SELECTED"
    SELECTED_DELAYED = "SELECTED-DELAYED"
    INBOXES = "INBOXES"
    PERSONAL = "PERSONAL"
    SUBSCRIBED = "SUBSCRIBED"
    SUBTREE = "SUBTREE"
    MAILBOXES = "MAILBOXES"

    @property
    def selected(self) -> bool:
        return self in (NotifyFilter.SELECTED, NotifyFilter.SELECTED_DELAYED)


# RFC 5465 5: the event names it defines, spelt as the RFC does; any other
# atom is an extension event this grammar keeps (upper-cased) for the
# handler to refuse with BADEVENT.
NOTIFY_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange",
                 "MailboxName", "SubscriptionChange", "MailboxMetadataChange",
                 "ServerMetadataChange")
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"})


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    """``(filter events)``. `events` empty: NONE. `fetch`: the attributes
    MessageNew asks for (selected mailbox only)."""

    filter: NotifyFilter
    mailboxes: tuple[str, ...] = ()  # SUBTREE / MAILBOXES names
    events: tuple[str, ...] = ()
    fetch: tuple[FetchAttribute, ...] = ()


@dataclass(frozen=True, slots=True)
class Notify(Command):
    """RFC 5465 ``NOTIFY NONE`` (no groups) or ``NOTIFY SET [STATUS] groups``."""

    groups: tuple[NotifyGroup, ...] = ()
    status: bool = False
    name: ClassVar[str] = "NOTIFY"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class Compress(Command):
    """RFC 4978 COMPRESS DEFLATE (mechanism upper-cased)."""

    mechanism: str = ""
    name: ClassVar[str] = "COMPRESS"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


# ACL (RFC 4314) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetAcl(Command):
    mailbox: str = ""
    name: ClassVar[str] = "GETACL"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class SetAcl(Command):
    """rights keeps its leading ``+``/``-`` modifier if any (RFC 4314 mod-rights)."""

    mailbox: str = ""
    identifier: str = ""
    rights: str = ""
    name: ClassVar[str] = "SETACL"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class DeleteAcl(Command):
    mailbox: str = ""
    identifier: str = ""
    name: ClassVar[str] = "DELETEACL"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class ListRights(Command):
    mailbox: str = ""
    identifier: str = ""
    name: ClassVar[str] = "LISTRIGHTS"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class MyRights(Command):
    mailbox: str = ""
    name: ClassVar[str] = "MYRIGHTS"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


# QUOTA (RFC 9208) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str = ""
    name: ClassVar[str] = "GETQUOTA"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str = ""
    name: ClassVar[str] = "GETQUOTAROOT"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """limits: (resource name upper-cased, limit) pairs."""

    root: str = ""
    limits: tuple[tuple[str, int], ...] = ()
    name: ClassVar[str] = "SETQUOTA"
    allowed_states: ClassVar[frozenset[State]] = _AUTH


# Selected ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or RFC 4315 ``UID EXPUNGE set`` (uid=True, uids set)."""

    uid: bool = False
    uids: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Search(Command):
    """``[UID] SEARCH [RETURN (...)] [CHARSET x] keys``.

    key is a SearchAnd of the top-level keys (or the single key). charset is
    upper-cased, None when absent. return_options (RFC 4731 ESEARCH: MIN, MAX,
    ALL, COUNT, SAVE; RFC 5267 PARTIAL, CONTEXT, UPDATE) is None for the classic SEARCH
    response; ``RETURN ()`` is given as ("ALL",). partial is PARTIAL's range
    of result positions (low, high), 1-based, inclusive.
    """

    key: SearchKey = field(default_factory=SearchAll)
    charset: str | None = None
    uid: bool = False
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    name: ClassVar[str] = "SEARCH"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


class SortKey(enum.Enum):
    """RFC 5256 sort-key, RFC 5957 DISPLAYFROM / DISPLAYTO."""

    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"
    DISPLAYFROM = "DISPLAYFROM"
    DISPLAYTO = "DISPLAYTO"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """RFC 5256 ``[UID] SORT [RETURN (...)] (criteria) charset keys``; the
    RETURN options are RFC 5267 ESORT's (as in `Search`)."""

    criteria: tuple[SortCriterion, ...] = ()
    charset: str = "UTF-8"
    key: SearchKey = field(default_factory=SearchAll)
    uid: bool = False
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    name: ClassVar[str] = "SORT"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class CancelUpdate(Command):
    """RFC 5267 4.3.5 ``CANCELUPDATE "tag" ...``: stop the updates of the
    searching commands with these tags."""

    tags: tuple[str, ...] = ()
    name: ClassVar[str] = "CANCELUPDATE"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


class ThreadAlgorithm(enum.Enum):
    ORDEREDSUBJECT = "ORDEREDSUBJECT"
    REFERENCES = "REFERENCES"


@dataclass(frozen=True, slots=True)
class Thread(Command):
    """RFC 5256 ``[UID] THREAD algorithm charset keys``."""

    algorithm: ThreadAlgorithm = ThreadAlgorithm.REFERENCES
    charset: str = "UTF-8"
    key: SearchKey = field(default_factory=SearchAll)
    uid: bool = False
    name: ClassVar[str] = "THREAD"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """``[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])]``; macros expanded.

    The parser does not add UID for UID FETCH: the server must always return it.
    """

    sequence_set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    attributes: tuple[FetchAttribute, ...] = ()
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False
    name: ClassVar[str] = "FETCH"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Store(Command):
    """``[UID] STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags``."""

    sequence_set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    mode: StoreMode = StoreMode.REPLACE
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    unchanged_since: int | None = None
    name: ClassVar[str] = "STORE"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Copy(Command):
    sequence_set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    mailbox: str = ""
    uid: bool = False
    name: ClassVar[str] = "COPY"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Move(Command):
    """RFC 6851 MOVE / UID MOVE."""

    sequence_set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    mailbox: str = ""
    uid: bool = False
    name: ClassVar[str] = "MOVE"
    allowed_states: ClassVar[frozenset[State]] = _SELECTED


# Every concrete command type: the server's dispatch table must cover them all.
ALL_COMMANDS: tuple[type[Command], ...] = (
    Capability,
    Noop,
    Logout,
    Id,
    StartTls,
    Authenticate,
    Login,
    Select,
    Examine,
    Create,
    Delete,
    Rename,
    Subscribe,
    Unsubscribe,
    List,
    Lsub,
    Status,
    Append,
    Namespace,
    Enable,
    Idle,
    Notify,
    Compress,
    GetAcl,
    SetAcl,
    DeleteAcl,
    ListRights,
    MyRights,
    GetQuota,
    GetQuotaRoot,
    SetQuota,
    Check,
    Close,
    Unselect,
    Expunge,
    Search,
    Sort,
    Thread,
    CancelUpdate,
    Fetch,
    Store,
    Copy,
    Move,
)
