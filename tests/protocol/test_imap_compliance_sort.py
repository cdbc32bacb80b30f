"""SORT, SORT=DISPLAY, THREAD, ESORT (RFC 5256, RFC 5957, RFC 5267): the
RFCs' examples and the REFERENCES algorithm's steps, over the real store.

Messages are appended with chosen internal dates and headers; sequence
numbers are their order of arrival."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import compliance_support
from compliance_support import SECRETARY, ImapClient, ImapEnv, selected

env = compliance_support.env

_BASE = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def mail(subject: str = "x", *, sender: str = "a@h.test", to: str = "b@h.test",
         cc: str | None = None, date: str | None = "Fri, 1 Mar 2024 09:00:00 +0000",
         mid: str | None = None, refs: str | None = None, irt: str | None = None,
         body: str = "text\r\n") -> bytes:
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if cc is not None:
        head.append(f"Cc: {cc}")
    if date is not None:
        head.append(f"Date: {date}")
    if mid is not None:
        head.append(f"Message-ID: {mid}")
    if refs is not None:
        head.append(f"References: {refs}")
    if irt is not None:
        head.append(f"In-Reply-To: {irt}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def put(env: ImapEnv, *raws: bytes, start: int = 0) -> None:
    """Appends in order; the n-th (from `start`) arrives n minutes after _BASE."""
    folder = env.store.get_folder(env.store.get_mailbox(SECRETARY).id, "INBOX")
    for i, raw in enumerate(raws, start):
        env.store.append(folder.id, raw, internal_date=_BASE + timedelta(minutes=i))


def day(n: int, hour: int = 9, tz: str = "+0000") -> str:
    return f"Mon, {n} Jan 2024 {hour:02d}:00:00 {tz}"


def sort(c: ImapClient, rest: str) -> str:
    out = c.ok(rest)
    assert out.startswith(b"* SORT") and out.endswith(b"\r\n") and out.count(b"\r\n") == 1, out
    return out[len(b"* SORT"):].decode().strip()


def esearch(c: ImapClient, rest: str) -> str:
    """The ESEARCH response's data after its (TAG "...") correlator."""
    out = c.ok(rest)
    prefix = f'* ESEARCH (TAG "t{c._n}")'.encode()
    assert out.startswith(prefix) and out.count(b"\r\n") == 1, out
    return out[len(prefix):].decode().strip()


def thread(c: ImapClient, rest: str) -> str:
    out = c.ok(rest)
    assert out.startswith(b"* THREAD") and out.count(b"\r\n") == 1, out
    return out[len(b"* THREAD"):].decode().strip()


# ------------------------------------------------------------------ SORT


def test_capabilities_advertised(env: ImapEnv) -> None:
    c = env.login()
    caps = c.ok("CAPABILITY").split()
    for cap in (b"SORT", b"SORT=DISPLAY", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES",
                b"ESEARCH", b"ESORT", b"SEARCHRES", b"WITHIN", b"CONTEXT=SEARCH",
                b"CONTEXT=SORT"):
        assert cap in caps, cap


def test_rfc5256_sort_examples(env: ImapEnv) -> None:
    """RFC 5256 4: SORT (SUBJECT) with a search key, (SUBJECT REVERSE DATE),
    and an empty result."""
    put(env,
        mail("Re: beta", date=day(3)),
        mail("gamma", date=day(2)),
        mail("alpha", date=day(1)),
        mail("[list] Alpha (fwd)", date=day(5)),
        mail("alpha", date=day(4)))
    c = selected(env)
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "3 4 5 1 2"
    assert sort(c, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == "4 5 3 1 2"
    assert sort(c, "SORT (SUBJECT) UTF-8 SENTSINCE 2-Jan-2024") == "4 5 1 2"
    assert sort(c, 'SORT (SUBJECT) US-ASCII TEXT "not in mailbox"') == ""
    assert sort(c, "UID SORT (REVERSE SUBJECT) UTF-8 ALL") == "2 1 3 4 5"


def test_sort_every_key(env: ImapEnv) -> None:
    put(env,
        mail("s", sender="Zoe <zed@h.test>", to="c@h.test", cc="y@h.test", date=day(2),
             body="x" * 300),
        mail("s", sender="bob@h.test", to="Aline <z@h.test>", date=day(1)),
        mail("s", sender="\"Martin, Dr\" <Alice@h.test>", to="b@h.test", cc="a@h.test",
             date=None, body="x" * 100))
    c = selected(env)
    assert sort(c, "SORT (ARRIVAL) UTF-8 ALL") == "1 2 3"
    assert sort(c, "SORT (REVERSE ARRIVAL) UTF-8 ALL") == "3 2 1"
    # no Date: the internal date (2024-03-01) stands in for it
    assert sort(c, "SORT (DATE) UTF-8 ALL") == "2 1 3"
    assert sort(c, "SORT (SIZE) UTF-8 ALL") == "2 3 1"
    # addr-mailbox of the first address, i;ascii-casemap; no Cc sorts first
    assert sort(c, "SORT (FROM) UTF-8 ALL") == "3 2 1"
    assert sort(c, "SORT (TO) UTF-8 ALL") == "3 1 2"
    assert sort(c, "SORT (CC) UTF-8 ALL") == "2 3 1"
    # RFC 5957: the display name, else the address
    assert sort(c, "SORT (DISPLAYFROM) UTF-8 ALL") == "2 3 1"
    assert sort(c, "SORT (DISPLAYTO) UTF-8 ALL") == "2 3 1"
    assert sort(c, "SORT (REVERSE DISPLAYFROM) UTF-8 ALL") == "1 3 2"


def test_sort_date_is_compared_in_utc(env: ImapEnv) -> None:
    put(env,
        mail(date=day(1, 7, "-0500")),  # 12:00 UTC
        mail(date=day(1, 10, "+0200")),  # 08:00 UTC
        mail(date=day(1, 9, "+0000")))  # 09:00 UTC
    c = selected(env)
    assert sort(c, "SORT (DATE) UTF-8 ALL") == "2 3 1"  # local times would give 1 3 2


def test_sort_ties_fall_back_to_sequence_numbers(env: ImapEnv) -> None:
    put(env, *(mail("same", date=day(1)) for _ in range(4)))
    c = selected(env)
    assert sort(c, "SORT (SUBJECT DATE) UTF-8 ALL") == "1 2 3 4"
    # REVERSE reverses its criterion, not the tie-break
    assert sort(c, "SORT (REVERSE SUBJECT) UTF-8 ALL") == "1 2 3 4"


def test_sort_subject_decoded_and_casemapped(env: ImapEnv) -> None:
    put(env,
        mail("=?utf-8?q?=C3=A9t=C3=A9?="),  # "été": non-ASCII sorts after ASCII
        mail("Zebra"),
        mail("=?iso-8859-1?q?apple?="),
        mail("RE: [Fwd: banana]"))
    c = selected(env)
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "3 4 2 1"


def test_sort_charset_and_errors(env: ImapEnv) -> None:
    put(env, mail("a"), mail("b"))
    c = selected(env)
    out = c.cmd("s1 SORT (SUBJECT) KOI8-R ALL")
    assert out.startswith(b"s1 NO [BADCHARSET"), out
    for bad in ("SORT (SUBJECT) ALL", "SORT () UTF-8 ALL", "SORT (SUBJECT BOGUS) UTF-8 ALL",
                "SORT (REVERSE) UTF-8 ALL", "SORT (REVERSE REVERSE DATE) UTF-8 ALL",
                "SORT SUBJECT UTF-8 ALL", "THREAD BOGUS UTF-8 ALL", "THREAD REFERENCES ALL"):
        assert c.cmd("s2 " + bad).startswith(b"s2 BAD"), bad
    c.ok("UNSELECT")
    assert c.cmd("s3 SORT (DATE) UTF-8 ALL").startswith(b"s3 BAD")


def test_sort_with_seq_and_uid_gaps(env: ImapEnv) -> None:
    put(env, mail("c"), mail("b"), mail("a"), mail("d"))
    c = selected(env)
    c.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "2 1 3"
    assert sort(c, "UID SORT (SUBJECT) UTF-8 ALL") == "3 1 4"
    assert sort(c, "UID SORT (SUBJECT) UTF-8 UID 3:4") == "3 4"


# ------------------------------------------------------------------ ESORT


def test_esort_return_options(env: ImapEnv) -> None:
    """RFC 5267 3: MIN and MAX are the first and last in sort order; ALL
    keeps the order (ascending runs only are ranges)."""
    put(env, mail("e"), mail("d"), mail("a"), mail("b"), mail("c"))
    c = selected(env)
    assert esearch(c, "SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL") == (
        "MIN 3 MAX 1 COUNT 5 ALL 3:5,2,1")
    assert esearch(c, "UID SORT RETURN () (REVERSE SUBJECT) UTF-8 ALL") == "UID ALL 1:2,5,4,3"
    assert esearch(c, "SORT RETURN (COUNT MIN) (SUBJECT) UTF-8 SUBJECT nothing") == "COUNT 0"


def test_esort_and_esearch_partial(env: ImapEnv) -> None:
    put(env, *(mail(f"m{9 - i}") for i in range(8)))
    c = selected(env)
    assert esearch(c, "SORT RETURN (PARTIAL 2:4) (SUBJECT) UTF-8 ALL") == "PARTIAL (2:4 7,6,5)"
    assert esearch(c, "UID SEARCH RETURN (PARTIAL 7:20 COUNT) ALL") == (
        "UID COUNT 8 PARTIAL (7:20 7:8)")
    assert esearch(c, "SEARCH RETURN (PARTIAL 9:10) ALL") == "PARTIAL (9:10 NIL)"
    assert c.cmd("a6 SEARCH RETURN (PARTIAL 0:3) ALL").startswith(b"a6 BAD")


# ------------------------------------------------------------------ THREAD


def test_thread_orderedsubject_rfc5256_shape(env: ImapEnv) -> None:
    """RFC 5256 4: groups by base subject, the first by date the parent of
    the others; threads by their first message's date."""
    put(env,
        mail("solo", date=day(1)),  # 1
        mail("Re: topic", date=day(4)),  # 2
        mail("topic", date=day(2)),  # 3
        mail("pair", date=day(5)),  # 4
        mail("Re: pair", date=day(6)),  # 5
        mail("RE: Topic", date=day(3)))  # 6
    c = selected(env)
    assert thread(c, "THREAD ORDEREDSUBJECT UTF-8 ALL") == "(1)(3 (6)(2))(4 5)"
    assert thread(c, "UID THREAD ORDEREDSUBJECT UTF-8 ALL") == "(1)(3 (6)(2))(4 5)"
    assert thread(c, 'THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"') == ""
    assert thread(c, "THREAD ORDEREDSUBJECT UTF-8 SUBJECT pair") == "(4 5)"


def test_thread_references_rfc5256_shape(env: ImapEnv) -> None:
    """RFC 5256 4's picture: (2)(3 6 (4 23)(44 7 96)), renumbered 1..8."""
    put(env,
        mail("lone", mid="<a@x>", date=day(1)),  # 1
        mail("root", mid="<b@x>", date=day(2)),  # 2
        mail("re", mid="<c@x>", refs="<b@x>", date=day(3)),  # 3
        mail("re", mid="<d@x>", refs="<b@x> <c@x>", date=day(4)),  # 4
        mail("re", mid="<e@x>", refs="<b@x> <c@x> <d@x>", date=day(5)),  # 5
        mail("re", mid="<f@x>", irt="<c@x>", date=day(6)),  # 6: In-Reply-To only
        mail("re", mid="<g@x>", refs="<c@x> <f@x>", date=day(7)),  # 7
        mail("re", mid="<h@x>", refs="<f@x>\r\n <g@x>", date=day(8)))  # 8: folded
    c = selected(env)
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1)(2 3 (4 5)(6 7 8))"
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert thread(c, "UID THREAD REFERENCES UTF-8 ALL") == "(2 3 (4 5)(6 7 8))"
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1 2 (3 4)(5 6 7))"


def test_thread_references_dummy_parents(env: ImapEnv) -> None:
    """A parent never seen: a dummy at the root with two children stays
    (``((1)(2))``); with one child it is dropped; inside a thread its
    children move up."""
    put(env,
        mail("one", mid="<1@x>", refs="<gone@x>", date=day(1)),
        mail("two", mid="<2@x>", refs="<gone@x>", date=day(2)),
        mail("three", mid="<3@x>", refs="<other@x>", date=day(3)),
        mail("four", mid="<4@x>", date=day(4)),
        mail("five", mid="<5@x>", refs="<4@x> <lost@x>", date=day(5)),
        mail("six", mid="<6@x>", refs="<4@x> <lost@x>", date=day(6)))
    c = selected(env)
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "((1)(2))(3)(4 (5)(6))"


def test_thread_references_duplicates_loops_and_sibling_dates(env: ImapEnv) -> None:
    put(env,
        mail("a", mid="<dup@x>", date=day(5)),  # 1
        mail("b", mid="<dup@x>", date=day(1)),  # 2: duplicate id, a thread of its own
        mail("c", mid="<loop1@x>", refs="<loop2@x>", date=day(2)),  # 3
        mail("d", mid="<loop2@x>", refs="<loop1@x>", date=day(3)),  # 4: would loop
        mail("e", mid="<kid1@x>", refs="<dup@x>", date=day(9)),  # 5
        mail("f", mid="<kid2@x>", refs="<dup@x>", date=day(6)),  # 6: older sibling first
        mail("g", mid="<self@x>", refs="<self@x>", date=day(4)))  # 7: refers to itself
    c = selected(env)
    # 4 claims 3 as parent, but 3 already hangs under 4 (its References): the
    # last message read wins and the loop is not made
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(2)(4 3)(7)(1 (6)(5))"


def test_thread_references_subject_merging(env: ImapEnv) -> None:
    """Step 5: roots sharing a base subject are merged: a reply under the
    original, two originals under a dummy; messages without subject never."""
    put(env,
        mail("Report", mid="<r1@x>", date=day(1)),  # 1
        mail("Re: report", mid="<r2@x>", date=day(2)),  # 2 (no references)
        mail("Meeting", mid="<m1@x>", date=day(3)),  # 3
        mail("meeting", mid="<m2@x>", date=day(4)),  # 4
        mail("", mid="<n1@x>", date=day(5)),  # 5
        mail("", mid="<n2@x>", date=day(6)))  # 6
    c = selected(env)
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1 2)((3)(4))(5)(6)"


def test_thread_searches_first(env: ImapEnv) -> None:
    put(env,
        mail("x", mid="<p@x>", date=day(1)),
        mail("y", mid="<q@x>", refs="<p@x>", date=day(2)))
    c = selected(env)
    assert thread(c, "THREAD REFERENCES UTF-8 2") == "(2)"
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1 2)"


def test_answers_follow_the_folder(env: ImapEnv) -> None:
    """Answers are kept per process (webmails sort again on every page); a
    new message, an expunge or another session's numbering gives a new one."""
    put(env, mail("b", mid="<b@x>"), mail("a", mid="<a@x>"))
    c = selected(env)
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "2 1"
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "2 1"
    put(env, mail("0", mid="<0@x>", refs="<b@x>"), start=2)
    c.ok("NOOP")
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "3 2 1"
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1 3)(2)"
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert thread(c, "THREAD REFERENCES UTF-8 ALL") == "(1)(2)"
    other = selected(env)
    assert thread(other, "UID THREAD REFERENCES UTF-8 ALL") == "(2)(3)"


def test_sort_with_a_modseq_key_gives_the_highest_modseq(env: ImapEnv) -> None:
    # RFC 7162 3.1.5, as SEARCH answers (found by review)
    put(env, mail("b"), mail("a"), mail("c"))
    c = selected(env)
    c.ok("STORE 2 +FLAGS (\\Flagged)")
    out = c.ok("FETCH 2 (MODSEQ)").decode()
    top = int(out.split("MODSEQ (")[1].split(")")[0])
    assert sort(c, "SORT (SUBJECT) UTF-8 MODSEQ 1") == f"2 1 3 (MODSEQ {top})"
    assert sort(c, "SORT (SUBJECT) UTF-8 ALL") == "2 1 3"
    assert esearch(c, "SORT RETURN (MIN) (SUBJECT) UTF-8 MODSEQ 1") == f"MIN 2 MODSEQ {top}"
