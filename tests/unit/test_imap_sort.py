"""The sort keys kept at delivery (`storage.sortkeys`: RFC 5256 2.1 base
subject, RFC 5957 display names, message-ids) and the SORT / THREAD engine
(`imapd.sort`) on its own: tables, and threads too deep for recursion."""

from __future__ import annotations

import time
from array import array

import pytest

from imapd.parser.commands import SortCriterion, SortKey, ThreadAlgorithm
from imapd.sort import Item, ResultCache, casemap, sort_items, thread
from storage import sortkeys
from storage.interface import SortKeys
from storage.mime import parse_message

# (subject as written, base subject, reply/forward?)
SUBJECTS = [
    ("", "", False),
    ("Hello", "Hello", False),
    ("Re: Hello", "Hello", True),
    ("RE:Hello", "Hello", True),
    ("re : Hello", "Hello", True),
    ("Re: Re: RE: Hello", "Hello", True),
    ("Fw: Hello", "Hello", True),
    ("FWD: Hello", "Hello", True),
    ("Fwd:Re: Hello", "Hello", True),
    ("Re[2]: Hello", "Hello", True),  # subj-refwd allows a blob before the colon
    ("Re [2]: Hello", "Hello", True),
    ("Re: [list] Hello", "Hello", True),
    ("[list] Re: Hello", "Hello", True),
    ("[list] [tag] Hello", "Hello", False),
    ("[list]", "[list]", False),  # a blob that would leave nothing stays
    ("[list] ", "[list]", False),
    ("Hello (fwd)", "Hello", True),
    ("Hello (FWD) (fwd)  ", "Hello", True),
    ("Hello(fwd)", "Hello", True),
    ("[Fwd: Hello]", "Hello", True),
    ("[fwd: Re: Hello (fwd)]", "Hello", True),
    ("Re: [Fwd: [list] Hello]", "Hello", True),
    ("[Fwd: Hello", "[Fwd: Hello", False),  # no trailer: not a wrapper
    ("Hello\t \tworld", "Hello world", False),
    ("   Hello  ", "Hello", False),
    ("Request: help", "Request: help", False),
    ("Fwdx: x", "Fwdx: x", False),
    ("Re:", "", True),
    ("Réunion: Re: été", "Réunion: Re: été", False),
    ("Re: Réunion", "Réunion", True),
]


@pytest.mark.parametrize(("subject", "base", "reply"), SUBJECTS)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert sortkeys.base_subject(subject) == (base, reply)


def test_base_subject_is_fast_on_hostile_input() -> None:
    nasty = "[" * 5000 + "Re: " * 5000 + "(fwd)" * 5000
    start = time.perf_counter()
    sortkeys.base_subject(nasty)
    sortkeys.base_subject("[fwd: " * 2000 + "x" + "]" * 2000)
    assert time.perf_counter() - start < 2.0


def test_casemap_is_ascii_only() -> None:
    assert casemap("abc-été-XYZ") == "ABC-éTé-XYZ"


def keys_of(raw: bytes) -> SortKeys:
    return sortkeys.sort_keys(raw, parse_message(raw))


def test_sort_keys_of_a_message() -> None:
    raw = (b"From: =?utf-8?q?Dr_=C3=89lise_Martin?= <Elise.Martin@h.test>, x@y.test\r\n"
           b"To: undisclosed:;, <dest@h.test>\r\n"
           b"Cc: Group: a@b.test;\r\n"
           b"Subject: =?utf-8?q?Re=3A_R=C3=A9sultats?= (fwd)\r\n"
           b"Date: Tue, 2 Jan 2024 10:00:00 +0200\r\n"
           b"Message-ID: < abc @h.test>\r\n"
           b"In-Reply-To: <irt@h.test>\r\n"
           b"References: <r1@h.test>\r\n <r2@h.test> junk <r3@h.test>\r\n"
           b"\r\nbody\r\n")
    k = keys_of(raw)
    assert k.sent == 1704182400  # 08:00 UTC
    assert (k.subject, k.reply) == ("Résultats", True)
    assert k.from_ == "Elise.Martin" and k.display_from == "Dr Élise Martin"
    assert k.to == "dest" and k.display_to == "dest@h.test"  # group markers skipped
    assert k.cc == "a"
    assert k.message_id == "<abc@h.test>"
    assert k.references == ("<r1@h.test>", "<r2@h.test>", "<r3@h.test>")
    assert sortkeys.decode(sortkeys.encode(k)) == k


def test_sort_keys_defaults_and_in_reply_to() -> None:
    k = keys_of(b"In-Reply-To: <a@x> <b@x>\r\nDate: not a date\r\n\r\n")
    assert k.sent is None and k.subject == "" and k.from_ == "" and k.display_to == ""
    assert k.message_id is None and k.references == ("<a@x>",)
    # a stored value of another version is recomputed, not misread
    assert sortkeys.decode(b'[0, 1, "s"]') is None


def item(seq: int, *, subject: str = "s", date: int | None = None, mid: str | None = None,
         refs: tuple[str, ...] = (), reply: bool = False, size: int = 0) -> Item:
    k = SortKeys(date, subject, reply, "", "", "", "", "", mid, refs, size, 1000 + seq)
    return Item(seq, seq * 10, k)


def test_sort_items_multiple_criteria() -> None:
    items = [item(1, subject="b", size=5), item(2, subject="a", size=5),
             item(3, subject="b", size=1), item(4, subject="a", size=9)]
    crit = (SortCriterion(SortKey.SUBJECT), SortCriterion(SortKey.SIZE, reverse=True))
    assert [i.seq for i in sort_items(items, crit)] == [4, 2, 1, 3]
    crit = (SortCriterion(SortKey.SIZE), SortCriterion(SortKey.SUBJECT, reverse=True))
    assert [i.seq for i in sort_items(items, crit)] == [3, 1, 2, 4]


def test_thread_of_a_100000_deep_chain() -> None:
    """Each message replies to the previous one: no recursion, and linear."""
    n = 100_000
    items = [item(i, date=i, mid=f"<{i}@x>", refs=(f"<{i - 1}@x>",) if i > 1 else ())
             for i in range(1, n + 1)]
    start = time.perf_counter()
    text = thread(items, ThreadAlgorithm.REFERENCES)
    assert time.perf_counter() - start < 10
    assert text == "(" + " ".join(str(i) for i in range(1, n + 1)) + ")"


def test_thread_of_a_chain_of_missing_parents_is_linear() -> None:
    """Found by review: message i refers to <x(i-1)> <x(i)>, ids no message
    has (anyone who can mail the box can make such a folder). Pruning the
    40,000 dummies took about 3 minutes (quadratic); now well under the
    bound, and every message ends up a thread of its own."""
    n = 40_000
    items = [item(i, date=i, mid=f"<m{i}@x>",
                  refs=(f"<x{i - 1}@x>", f"<x{i}@x>") if i > 1 else (f"<x{i}@x>",))
             for i in range(1, n + 1)]
    start = time.process_time()
    text = thread(items, ThreadAlgorithm.REFERENCES)
    assert time.process_time() - start < 10
    # x1 <- x2 <- ... each dummy with one message and the next dummy: the
    # messages move up to the root dummy x1 (RFC 5256 step 3)
    assert text == "(" + "".join(f"({i})" for i in range(1, n + 1)) + ")"


def _random_folder(seed: int) -> list[Item]:
    """Up to 40 messages: ids shared, missing or referred to before they
    arrive, References in any order (loops, self-references), subjects
    that merge, dates that tie; in a shuffled sequence order."""
    import random

    r = random.Random(seed)
    n = r.randint(1, 40)
    out = []
    for i in range(1, n + 1):
        refs = tuple(f"<{r.choice('mmx')}{r.randint(1, n)}@x>" for _ in range(r.randint(0, 5)))
        mid = f"<m{i}@x>" if r.random() < 0.85 else (
            f"<m{r.randint(1, n)}@x>" if r.random() < 0.5 else None)
        out.append(item(i, subject=r.choice(["a", "b", "c", "Re: a", "Re: b", ""]),
                        date=r.choice([None, r.randint(0, 30)]), mid=mid, refs=refs,
                        reply=r.random() < 0.3))
    r.shuffle(out)  # thread() takes them in any order
    return out


@pytest.mark.parametrize("algorithm", list(ThreadAlgorithm))
def test_threads_agree_with_the_container_oracle(algorithm: ThreadAlgorithm) -> None:
    """The int-based engine against the first one, a container object per
    message and the quadratic pruning (tests/unit/thread_oracle.py), on
    4,000 random folders, both forms (sequence numbers, UIDs)."""
    from thread_oracle import render_threads as oracle_render
    from thread_oracle import thread as oracle_thread

    answers = set()
    for seed in range(4000):
        items = _random_folder(seed)
        for uid in (False, True):
            expected = oracle_render(oracle_thread(items, algorithm), uid)
            assert thread(items, algorithm, uid) == expected, (seed, uid)
            answers.add(expected)
    assert len(answers) > 3000  # the folders are varied enough to say something


def _threads_folder(seed: int, n: int) -> list[Item]:
    """n messages in threads of 1 to 12, as mailers write them (References
    to the last ancestors, some roots missing, a few duplicate ids,
    subjects shared between threads), in arrival order."""
    import random

    r = random.Random(seed)
    out: list[Item] = []
    t = 0
    while len(out) < n:
        t += 1
        subject = f"topic {r.randrange(n // 20 + 1)}"
        missing_root = r.random() < 0.1
        ids: list[str] = [f"<t{t}@x>"] if missing_root else []
        when = r.randrange(10_000)
        for k in range(r.choice((1, 1, 2, 3, 4, 6, 12))):
            mid = f"<t{t}.{k}@x>" if r.random() < 0.98 else f"<t{r.randint(1, t)}.0@x>"
            refs = tuple(r.sample(ids, len(ids)) if r.random() < 0.05 else ids[-5:])
            out.append(item(0, subject=("Re: " if refs else "") + subject, date=when,
                            mid=mid, refs=refs, reply=bool(refs)))
            ids.append(mid)
            when += r.randrange(0, 300)
    r.shuffle(out)
    return [it._replace(seq=i, uid=i * 10) for i, it in enumerate(out[:n], 1)]


def test_threads_of_big_folders_agree_with_the_container_oracle() -> None:
    from thread_oracle import render_threads as oracle_render
    from thread_oracle import thread as oracle_thread

    for seed in range(12):
        items = _threads_folder(seed, 2000)
        for algorithm in ThreadAlgorithm:
            expected = oracle_render(oracle_thread(items, algorithm), uid=True)
            assert thread(items, algorithm, uid=True) == expected, (seed, algorithm)


def test_thread_of_deep_branches() -> None:
    """Every node has two children, one of which continues: nested lists
    5,000 deep render without recursion."""
    items = []
    seq = 1
    parent: str | None = None
    for depth in range(5000):
        mid = f"<n{depth}@x>"
        items.append(item(seq, date=seq, mid=mid, refs=(parent,) if parent else ()))
        seq += 1
        items.append(item(seq, date=seq, mid=f"<leaf{depth}@x>", refs=(mid,)))
        seq += 1
        parent = mid
    text = thread(items, ThreadAlgorithm.REFERENCES)
    assert text.startswith("(1 (2)(3 (4)(5 (6)(7") and text.count("(") == text.count(")")


def test_thread_references_parent_arriving_after_children() -> None:
    items = [item(1, date=3, mid="<c@x>", refs=("<a@x>", "<b@x>")),
             item(2, date=1, mid="<a@x>"),
             item(3, date=2, mid="<b@x>", refs=("<a@x>",))]
    assert thread(items, ThreadAlgorithm.REFERENCES) == "(2 3 1)"
    assert thread(items, ThreadAlgorithm.REFERENCES, uid=True) == "(20 30 10)"


def test_result_cache_keys_and_bound() -> None:
    cache = ResultCache(size=2)
    k1 = ResultCache.key(1, 7, ThreadAlgorithm.REFERENCES, False, range(1, 4), [5, 6, 9])
    # the same messages named as a list or an array give the same key
    assert k1 == ResultCache.key(1, 7, ThreadAlgorithm.REFERENCES, False, [1, 2, 3],
                                 array("I", [5, 6, 9]))
    others = [
        ResultCache.key(1, 8, ThreadAlgorithm.REFERENCES, False, range(1, 4), [5, 6, 9]),
        ResultCache.key(1, 7, ThreadAlgorithm.ORDEREDSUBJECT, False, range(1, 4), [5, 6, 9]),
        ResultCache.key(1, 7, ThreadAlgorithm.REFERENCES, True, range(1, 4), [5, 6, 9]),
        ResultCache.key(1, 7, ThreadAlgorithm.REFERENCES, False, range(1, 4), [5, 6, 10]),
        ResultCache.key(1, 7, ThreadAlgorithm.REFERENCES, False, [1, 2, 4], [5, 6, 9]),
        ResultCache.key(2, 7, ThreadAlgorithm.REFERENCES, False, range(1, 4), [5, 6, 9]),
    ]
    assert len({k1, *others}) == 7
    cache.put(k1, "(1 2 3)")
    cache.put(others[0], "a")
    assert cache.get(k1) == "(1 2 3)"  # now the most recent
    cache.put(others[1], "b")
    assert cache.get(others[0]) is None and cache.get(k1) == "(1 2 3)"


def test_message_ids_longer_than_a_header_line_are_left_out() -> None:
    # Found by review: References of multi-megabyte ids were kept whole in
    # every worker's sort-key cache.
    long_id = "x" * 5000 + "@y"
    raw = (f"Message-ID: <{long_id}>\r\nReferences: <a@b> <{long_id}>\r\n"
           "Subject: s\r\n\r\nbody\r\n").encode()
    keys = sortkeys.sort_keys(raw, parse_message(raw))
    assert keys.references == ("<a@b>",) and keys.message_id is None
    assert sortkeys.message_ids("<" + "z" * sortkeys.MAX_ID_LENGTH + ">") != []
