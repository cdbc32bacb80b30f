"""Property tests: random typed commands, written out as a client would, parse back
to the same value (whole, and split at random points)."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from imapd import responses as r
from imapd.parser import (
    Command,
    CommandReader,
    CommandReady,
    DateField,
    DateRelation,
    Event,
    Fetch,
    FetchAttribute,
    FetchBinary,
    FetchBinarySize,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchModSeq,
    FetchRfc822,
    FetchRfc822Header,
    FetchRfc822Size,
    FetchRfc822Text,
    FetchUid,
    NeedContinuation,
    Partial,
    Search,
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
    Section,
    SectionText,
    SeqRange,
    SequenceSet,
    Store,
    StoreMode,
)
from imapd.responses import MONTHS


def parse_all(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    reader = CommandReader(max_line=1 << 16, max_literal=1 << 20)
    out: list[Event] = []
    points = sorted(set(cuts or [])) + [len(data)]
    last = 0
    for cut in points:
        if cut <= last:
            continue
        reader.feed(data[last:cut])
        last = cut
        while (event := reader.next_event()) is not None:
            if not isinstance(event, NeedContinuation):
                out.append(event)
    return out


def check(command: Command, wire: bytes, cuts: list[int]) -> None:
    whole = parse_all(wire)
    assert whole == [CommandReady(command)], wire
    assert parse_all(wire, [c % len(wire) for c in cuts]) == whole


# ------------------------------------------------------------ sequence sets

numbers = st.integers(min_value=1, max_value=2**32 - 1)
seq_numbers = st.one_of(numbers, st.none())


@st.composite
def sequence_sets(draw: st.DrawFn) -> SequenceSet:
    ranges = draw(
        st.lists(
            st.one_of(
                seq_numbers.map(lambda n: SeqRange(n, n)),
                st.tuples(seq_numbers, seq_numbers).map(lambda t: SeqRange(*t)),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return SequenceSet(tuple(ranges))


def write_seq(value: int | None) -> bytes:
    return b"*" if value is None else b"%d" % value


def write_set(s: SequenceSet) -> bytes:
    if s.saved:
        return b"$"
    parts = []
    for rg in s.ranges:
        if rg.start == rg.end:
            parts.append(write_seq(rg.start))
        else:
            parts.append(write_seq(rg.start) + b":" + write_seq(rg.end))
    return b",".join(parts)


# ------------------------------------------------------------ search keys

atoms = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$_-",
    min_size=1,
    max_size=12,
)
header_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
    min_size=1,
    max_size=15,
)
texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20
)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))
SYSTEM = ["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"]
FLAG_WORDS = {
    ("\\Answered", True): b"ANSWERED",
    ("\\Deleted", True): b"DELETED",
    ("\\Draft", True): b"DRAFT",
    ("\\Flagged", True): b"FLAGGED",
    ("\\Seen", True): b"SEEN",
    ("\\Recent", True): b"RECENT",
    ("\\Answered", False): b"UNANSWERED",
    ("\\Deleted", False): b"UNDELETED",
    ("\\Draft", False): b"UNDRAFT",
    ("\\Flagged", False): b"UNFLAGGED",
    ("\\Seen", False): b"UNSEEN",
}

leaf_keys = st.one_of(
    st.just(SearchAll()),
    st.sampled_from(sorted(FLAG_WORDS)).map(lambda fp: SearchFlag(*fp)),
    st.tuples(atoms, st.booleans()).map(lambda t: SearchFlag(*t)),
    sequence_sets().map(SearchSeqSet),
    sequence_sets().map(SearchUid),
    st.tuples(st.sampled_from(list(DateField)), st.sampled_from(list(DateRelation)), dates).map(
        lambda t: SearchDate(*t)
    ),
    st.integers(min_value=0, max_value=2**40).map(SearchLarger),
    st.integers(min_value=0, max_value=2**40).map(SearchSmaller),
    st.tuples(st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT"]), texts).map(
        lambda t: SearchHeader(*t)
    ),
    st.tuples(header_names, texts).map(lambda t: SearchHeader(*t)),
    texts.map(SearchBody),
    texts.map(SearchText),
    st.integers(min_value=0, max_value=2**63 - 1).map(SearchModSeq),
    st.tuples(
        st.integers(min_value=0, max_value=2**63 - 1),
        st.sampled_from(["/flags/\\seen", "/flags/$label1"]),
        st.sampled_from(["priv", "shared", "all"]),
    ).map(lambda t: SearchModSeq(*t)),
    numbers.map(SearchOlder),
    numbers.map(SearchYounger),
)

search_keys = st.recursive(
    leaf_keys,
    lambda children: st.one_of(
        children.map(SearchNot),
        st.tuples(children, children).map(lambda t: SearchOr(*t)),
        st.lists(children, min_size=2, max_size=4).map(lambda ks: SearchAnd(tuple(ks))),
    ),
    max_leaves=12,
)


def write_date(d: date) -> bytes:
    return f"{d.day}-{MONTHS[d.month - 1]}-{d.year:04d}".encode()


def write_key(key: SearchKey) -> bytes:
    match key:
        case SearchAll():
            return b"ALL"
        case SearchFlag(flag, present) if (flag, present) in FLAG_WORDS:
            return FLAG_WORDS[(flag, present)]
        case SearchFlag(flag, present):
            return (b"KEYWORD " if present else b"UNKEYWORD ") + flag.encode()
        case SearchSeqSet(s):
            return write_set(s)
        case SearchUid(s):
            return b"UID " + write_set(s)
        case SearchDate(field, relation, d):
            prefix = b"SENT" if field is DateField.SENT else b""
            return prefix + relation.value.upper().encode() + b" " + write_date(d)
        case SearchLarger(n):
            return b"LARGER %d" % n
        case SearchSmaller(n):
            return b"SMALLER %d" % n
        case SearchHeader(name, value) if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return name.encode() + b" " + r.astring(value)
        case SearchHeader(name, value):
            return b"HEADER " + r.astring(name) + b" " + r.astring(value)
        case SearchBody(text):
            return b"BODY " + r.astring(text)
        case SearchText(text):
            return b"TEXT " + r.astring(text)
        case SearchModSeq(n, None, None):
            return b"MODSEQ %d" % n
        case SearchModSeq(n, name, kind):
            assert name is not None and kind is not None
            return b"MODSEQ " + r.quoted(name) + b" " + kind.encode() + b" %d" % n
        case SearchOlder(n):
            return b"OLDER %d" % n
        case SearchYounger(n):
            return b"YOUNGER %d" % n
        case SearchNot(inner):
            return b"NOT " + write_key(inner)
        case SearchOr(left, right):
            return b"OR " + write_key(left) + b" " + write_key(right)
        case SearchAnd(keys):
            return b"(" + b" ".join(write_key(k) for k in keys) + b")"
    raise AssertionError(key)


@settings(max_examples=150, deadline=None)
@given(
    search_keys,
    st.booleans(),
    st.sampled_from([None, "UTF-8"]),
    st.lists(st.integers(min_value=1), max_size=6),
)
def test_search_round_trip(key: SearchKey, uid: bool, charset: str | None, cuts: list[int]) -> None:
    wire = (b"t UID SEARCH " if uid else b"t SEARCH ") + (
        b"CHARSET " + charset.encode() + b" " if charset else b""
    )
    wire += write_key(key) + b"\r\n"
    check(Search("t", key, charset, uid), wire, cuts)


# ------------------------------------------------------------ FETCH items

SIMPLE: dict[FetchAttribute, bytes] = {
    FetchFlags(): b"FLAGS",
    FetchUid(): b"UID",
    FetchInternalDate(): b"INTERNALDATE",
    FetchRfc822Size(): b"RFC822.SIZE",
    FetchEnvelope(): b"ENVELOPE",
    FetchBodyStructure(): b"BODYSTRUCTURE",
    FetchBodyStructure(extensible=False): b"BODY",
    FetchModSeq(): b"MODSEQ",
    FetchRfc822(): b"RFC822",
    FetchRfc822Header(): b"RFC822.HEADER",
    FetchRfc822Text(): b"RFC822.TEXT",
}

parts = st.lists(st.integers(min_value=1, max_value=99), max_size=4).map(tuple)
partials = st.one_of(
    st.none(),
    st.tuples(
        st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=2**32 - 1)
    ).map(lambda t: Partial(*t)),
)


@st.composite
def sections(draw: st.DrawFn) -> Section:
    part = draw(parts)
    choices: list[SectionText | None] = [None, *SectionText]
    if not part:
        choices.remove(SectionText.MIME)
    text = draw(st.sampled_from(choices))
    headers: tuple[str, ...] = ()
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        headers = tuple(draw(st.lists(header_names, min_size=1, max_size=5)))
    return Section(part, text, headers, draw(partials))


fetch_atts = st.one_of(
    st.sampled_from(list(SIMPLE)),
    st.tuples(sections(), st.booleans()).map(lambda t: FetchBodySection(*t)),
    st.tuples(parts, partials, st.booleans()).map(
        lambda t: FetchBinary(Section(t[0], partial=t[1]), peek=t[2])
    ),
    parts.map(FetchBinarySize),
)


def write_att(att: FetchAttribute) -> bytes:
    if att in SIMPLE:
        return SIMPLE[att]
    if isinstance(att, FetchBodySection):
        name = b"BODY.PEEK" if att.peek else b"BODY"
        section = att.section
        kind = "BODY"
    elif isinstance(att, FetchBinary):
        name = b"BINARY.PEEK" if att.peek else b"BINARY"
        section = att.section
        kind = "BINARY"
    else:
        assert isinstance(att, FetchBinarySize)
        return att.label().encode()
    out = name + section.label(kind).encode()[len(kind) :]
    if section.partial is not None:
        out = out[: out.rindex(b"<")] + b"<%d.%d>" % (section.partial.start, section.partial.length)
    return out


@settings(max_examples=100, deadline=None)
@given(
    sequence_sets(),
    st.lists(fetch_atts, min_size=1, max_size=6, unique=True),
    st.booleans(),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
    st.lists(st.integers(min_value=1), max_size=6),
)
def test_fetch_round_trip(
    seqset: SequenceSet,
    atts: list[FetchAttribute],
    uid: bool,
    changed_since: int | None,
    cuts: list[int],
) -> None:
    wire = b"t UID FETCH " if uid else b"t FETCH "
    wire += write_set(seqset) + b" (" + b" ".join(write_att(a) for a in atts) + b")"
    if changed_since is not None:
        wire += b" (CHANGEDSINCE %d)" % changed_since
    check(Fetch("t", seqset, tuple(atts), uid, changed_since), wire + b"\r\n", cuts)


# ------------------------------------------------------------ STORE

flags = st.one_of(st.sampled_from(SYSTEM), atoms)
STORE_WORDS = {StoreMode.ADD: b"+FLAGS", StoreMode.REMOVE: b"-FLAGS", StoreMode.REPLACE: b"FLAGS"}


@settings(max_examples=60, deadline=None)
@given(
    sequence_sets(),
    st.sampled_from(list(StoreMode)),
    st.booleans(),
    st.lists(flags, max_size=6, unique=True),
    st.booleans(),
    st.booleans(),
)
def test_store_round_trip(
    seqset: SequenceSet,
    mode: StoreMode,
    silent: bool,
    flag_names: list[str],
    uid: bool,
    parens: bool,
) -> None:
    if not flag_names:
        parens = True
    wire = (b"t UID STORE " if uid else b"t STORE ") + write_set(seqset) + b" "
    wire += STORE_WORDS[mode] + (b".SILENT" if silent else b"") + b" "
    body = b" ".join(f.encode() for f in flag_names)
    wire += (b"(" + body + b")" if parens else body) + b"\r\n"
    check(Store("t", seqset, mode, silent, tuple(flag_names), uid), wire, [])
