"""Mailbox commands: CREATE, DELETE, RENAME, LIST, LSUB, SUBSCRIBE, APPEND, COPY
(RFC 3501 6.3.3-6.3.9, 6.3.11, 6.4.7; RFC 4315 3; imaptest `list`, `subscribe`,
`copy`, `nil`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import compliance_support
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    literal_append,
    message,
    selected,
    status_of,
    tagged_line,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def _names(out: bytes, kind: bytes = b"LIST") -> list[bytes]:
    # The name may be followed by extended data, e.g. ("CHILDINFO" ("SUBSCRIBED")).
    return re.findall(rb"\* " + kind + rb' \([^)]*\) "/" "?([^"\r\n]*)"?(?: \(.*\))?\r\n', out)


def _attrs(out: bytes, name: str, kind: bytes = b"LIST") -> set[bytes] | None:
    m = re.search(rb"\* " + kind + rb' \(([^)]*)\) "/" "?' + re.escape(name.encode()) + rb'"?\r\n', out)
    return None if m is None else {a.lower() for a in m.group(1).split()}


def test_list_empty_name_gives_delimiter(env: ImapEnv) -> None:
    """RFC 3501 6.3.8: LIST "" "" returns the hierarchy delimiter and root, \\Noselect."""
    c = env.login()
    assert c.ok('LIST "" ""') == b'* LIST (\\Noselect) "/" ""\r\n'


def test_imaptest_list_script(env: ImapEnv) -> None:
    """imaptest `list`: % matches one level, * any number; reference name prefix."""
    c = env.login()
    for name in ("box/", "box/test", "box/test2", "box/test3/", "box/test3/test4/", "box/test3/test4/test5"):
        c.ok(f"CREATE {name}")
    assert set(_names(c.ok('LIST "" box/%'))) == {b"box/test", b"box/test2", b"box/test3"}
    assert set(_names(c.ok('LIST "" box/%/%'))) == {b"box/test3/test4"}
    star = {b"box/test", b"box/test2", b"box/test3", b"box/test3/test4", b"box/test3/test4/test5"}
    assert set(_names(c.ok('LIST "" box/*'))) == star
    assert set(_names(c.ok("LIST box/ *"))) == star
    assert set(_names(c.ok('LIST "" box/*test4'))) == {b"box/test3/test4"}
    assert set(_names(c.ok('LIST "" box/*test*'))) == star
    assert set(_names(c.ok('LIST "" box/%3/%'))) == {b"box/test3/test4"}
    assert set(_names(c.ok('LIST "" box/%3/%4'))) == {b"box/test3/test4"}
    assert set(_names(c.ok('LIST "" box/%t*4'))) == {b"box/test3/test4"}
    c.ok("DELETE box/test2")
    assert b"box/test2" not in c.ok('LIST "" box/*')
    assert c.ok('LIST "" INBOX') == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    assert c.ok('LIST "" inbox') == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'


def test_list_nil_pattern_is_ok(env: ImapEnv) -> None:
    """imaptest `nil`: LIST "" NIL is a valid command."""
    c = env.login()
    c.ok('LIST "" NIL')


def test_children_attributes(env: ImapEnv) -> None:
    """RFC 3348 / RFC 5258 4: \\HasChildren and \\HasNoChildren."""
    c = env.login()
    c.ok("CREATE parent/child")
    out = c.ok('LIST "" parent*')
    assert _attrs(out, "parent") == {b"\\haschildren"}
    assert _attrs(out, "parent/child") == {b"\\hasnochildren"}


def test_delete_with_inferiors_leaves_noselect(env: ImapEnv) -> None:
    """RFC 3501 6.3.4: deleting a name with inferiors removes its messages "and the
    name will acquire the \\Noselect mailbox name attribute"; 6.3.8: "%" returns
    hierarchy levels that are not selectable with \\Noselect."""
    c = env.login()
    c.ok("CREATE foo/bar")
    c.ok("DELETE foo")
    out = c.ok('LIST "" %')
    attrs = _attrs(out, "foo")
    assert attrs is not None and b"\\noselect" in attrs, out
    _, done = c.tagged("SELECT foo")
    assert b" NO " in done


def test_create_with_trailing_separator_and_superiors(env: ImapEnv) -> None:
    """RFC 3501 6.3.3: a trailing separator declares intent to create inferiors;
    the name created has no trailing separator; superiors are created as needed."""
    c = env.login()
    c.ok("CREATE owatagusiam/")
    assert _names(c.ok('LIST "" owatagusiam')) == [b"owatagusiam"]
    c.ok("CREATE a/b/c")
    out = c.ok('LIST "" a*')
    assert set(_names(out)) == {b"a", b"a/b", b"a/b/c"}
    _, done = c.tagged("CREATE owatagusiam")
    assert b" NO " in done


def test_create_and_delete_inbox_refused(env: ImapEnv) -> None:
    """RFC 3501 6.3.3: "It is an error to attempt to create INBOX"; 6.3.4: "It is
    an error to attempt to delete INBOX" (any case)."""
    c = env.login()
    for cmd in ("CREATE INBOX", "CREATE inbox", "DELETE INBOX", "DELETE Inbox"):
        _, done = c.tagged(cmd)
        assert b" NO " in done, cmd


def test_delete_and_rename_nonexistent(env: ImapEnv) -> None:
    c = env.login()
    _, done = c.tagged("DELETE nowhere")
    assert b" NO " in done
    _, done = c.tagged("RENAME nowhere other")
    assert b" NO " in done


def test_rename_to_existing_is_no(env: ImapEnv) -> None:
    """RFC 3501 6.3.5: "It is an error to attempt to rename ... to a mailbox name that already exists"."""
    c = env.login()
    c.ok("CREATE one")
    _, done = c.tagged("RENAME one Trash")
    assert b" NO " in done


def test_rename_moves_inferiors(env: ImapEnv) -> None:
    """RFC 3501 6.3.5: inferior names are renamed too."""
    c = env.login()
    c.ok("CREATE old/sub")
    c.ok("RENAME old new")
    out = c.ok('LIST "" *')
    assert b'"new/sub"' in out and b'"old' not in out


def test_rename_inbox_moves_messages_and_leaves_inbox_empty(env3: ImapEnv) -> None:
    """RFC 3501 6.3.5: renaming INBOX moves all its messages to the new name,
    leaving INBOX empty (and existing)."""
    c = env3.login()
    c.ok("RENAME INBOX Old")
    assert status_of(c, "INBOX", "MESSAGES") == {"MESSAGES": 0}
    assert status_of(c, "Old", "MESSAGES") == {"MESSAGES": 3}


def test_imaptest_subscribe_script(env: ImapEnv) -> None:
    """imaptest `subscribe` / RFC 3501 6.3.9: LSUB with % shows an unsubscribed
    parent of a subscribed child as \\Noselect."""
    c = env.login()
    for name in ("sub/", "sub/test", "sub/test2/", "sub/test3/", "sub/test2/test", "sub/test3/test3"):
        c.ok(f"CREATE {name}")
    for name in ("sub/test", "sub/test2/test", "sub/test3/test3"):
        c.ok(f"SUBSCRIBE {name}")
    out = c.ok('LSUB "" sub/%')
    assert set(_names(out, b"LSUB")) == {b"sub/test", b"sub/test2", b"sub/test3"}
    assert _attrs(out, "sub/test", b"LSUB") == set()
    assert _attrs(out, "sub/test2", b"LSUB") == {b"\\noselect"}
    mine = {n for n in _names(c.ok('LSUB "" *test'), b"LSUB") if n.startswith(b"sub")}
    assert mine == {b"sub/test", b"sub/test2/test"}
    c.ok("UNSUBSCRIBE sub/test")
    assert b'"sub/test"' not in c.ok('LSUB "" sub/%')
    c.ok("UNSUBSCRIBE sub/test2/test")
    assert set(_names(c.ok('LSUB "" sub/*'), b"LSUB")) == {b"sub/test3/test3"}


def test_lsub_noselect_parent_only_for_percent(env: ImapEnv) -> None:
    """RFC 3501 6.3.9: only "%" as the last character makes LSUB return an
    unsubscribed superior (flagged \\Noselect); "*" and literal names return
    subscribed names only."""
    c = env.login()
    c.ok("CREATE par/kid")
    c.ok("SUBSCRIBE par/kid")
    assert _names(c.ok('LSUB "" par/%'), b"LSUB") == [b"par/kid"]
    assert _names(c.ok('LSUB "" %'), b"LSUB").count(b"par") == 1
    assert c.ok('LSUB "" par') == b""
    assert _names(c.ok('LSUB "" *ar'), b"LSUB") == []
    assert _names(c.ok('LSUB "" *kid'), b"LSUB") == [b"par/kid"]


def test_append_to_nonexistent_is_trycreate(env: ImapEnv) -> None:
    """RFC 3501 6.3.11: "If the destination mailbox does not exist, a server MUST
    return an error, and MUST NOT automatically create the mailbox ... the
    [TRYCREATE] response code"."""
    c = env.login()
    out = literal_append(c, "a1", "nowhere", message("x"))
    assert tagged_line(out, "a1").startswith(b"a1 NO [TRYCREATE]")
    assert b"nowhere" not in c.ok('LIST "" *')


def test_append_appenduid_flags_and_internaldate(env: ImapEnv) -> None:
    """RFC 4315 3 APPENDUID; RFC 3501 6.3.11 flags and date-time are kept."""
    c = env.login()
    uidvalidity = status_of(c, "INBOX", "UIDVALIDITY")["UIDVALIDITY"]
    out = literal_append(c, "a1", "INBOX", message("x"), '(\\Seen $Label1) "05-Jan-2020 10:00:00 +0100"')
    assert tagged_line(out, "a1").startswith(f"a1 OK [APPENDUID {uidvalidity} 1]".encode())
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1 (FLAGS INTERNALDATE)")
    assert b"\\Seen" in out and b"$Label1" in out
    m = re.search(rb'INTERNALDATE "([^"]+)"', out)
    assert m is not None
    when = datetime.strptime(m.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
    assert when == datetime(2020, 1, 5, 9, 0, tzinfo=UTC)


def test_append_with_literal_plus(env: ImapEnv) -> None:
    """RFC 7888 LITERAL+: {n+} is sent without waiting; no "+" continuation."""
    c = env.login()
    raw = message("lp")
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n" % len(raw) + raw)
    assert not out.startswith(b"+") and tagged_line(out, "a1").startswith(b"a1 OK")
    other = selected(env)
    assert other.ok("FETCH 1 UID") == b"* 1 FETCH (UID 1)\r\n"


def test_copy_to_nonexistent_is_trycreate(env3: ImapEnv) -> None:
    """RFC 3501 6.4.7: "If the destination mailbox does not exist, a server SHOULD
    return an error ... [TRYCREATE]"."""
    c = selected(env3)
    _, done = c.tagged("COPY 1 nowhere")
    assert b" NO [TRYCREATE]" in done


def test_imaptest_copy_keeps_flags_and_internaldate(env: ImapEnv) -> None:
    """imaptest `copy`: flags (\\Seen, \\Draft \\Flagged, keywords) and INTERNALDATE
    are kept; the other session sees EXISTS/RECENT; COPYUID (RFC 4315 3)."""
    for i in range(5):
        deliver(env.store, SECRETARY, message(f"m{i}"))
    a = selected(env)
    b = env.login()
    b.ok("CREATE box2")
    b.ok("SELECT box2")
    a.ok("STORE 1 FLAGS.SILENT (\\Seen)")
    a.ok("STORE 2 FLAGS.SILENT (\\Draft \\Flagged)")
    a.ok("STORE 5 FLAGS.SILENT (\\Flagged $$keyword1 $$keyword2)")
    dates = dict(re.findall(rb'\* (\d) FETCH \(INTERNALDATE ("[^"]+")\)', a.ok("FETCH 1:5 INTERNALDATE")))
    _, done = a.tagged("COPY 1:2,4 box2")
    uidv = status_of(a, "box2", "UIDVALIDITY")["UIDVALIDITY"]
    assert f" OK [COPYUID {uidv} 1:2,4 1:3]".encode() in done, done
    out = b.ok("NOOP")
    assert b"* 3 EXISTS" in out and b"* 3 RECENT" in out
    out = b.ok("FETCH 1:3 (FLAGS INTERNALDATE)")
    assert re.search(rb"\* 1 FETCH \(FLAGS \((?=[^)]*\\Recent)(?=[^)]*\\Seen)[^)]*\) INTERNALDATE " + re.escape(dates[b"1"]), out)
    assert re.search(rb"\* 2 FETCH \(FLAGS \((?=[^)]*\\Draft)(?=[^)]*\\Flagged)[^)]*\)", out)
    assert re.search(rb"\* 3 FETCH \(FLAGS \(\\Recent\) INTERNALDATE " + re.escape(dates[b"4"]), out)
    a.ok("COPY 5 box2")
    assert b"* 4 EXISTS" in b.ok("NOOP")
    out = b.ok("FETCH 4 FLAGS")
    assert b"$$keyword1" in out and b"$$keyword2" in out and b"\\Flagged" in out


def test_copy_with_no_matching_uid_is_ok(env3: ImapEnv) -> None:
    """RFC 3501 6.4.8: a UID range matching nothing is not an error."""
    c = selected(env3)
    _, done = c.tagged("UID COPY 99 Trash")
    assert b" OK" in done


def _listext_setup(c: object) -> None:
    for name in ("lx/test1", "lx/test2/", "lx/test2/test1", "lx/test3", "lx/test4/test5",
                 "lx/test4/test52", "lx/test6", "lx/test7/test7", "lx/test8/test8", "lx/test8/test9"):
        c.ok(f"CREATE {name}")  # type: ignore[attr-defined]
    for name in ("lx/test1", "lx/test2/test1", "lx/test6", "lx/test7/test7", "lx/test8/test8",
                 "lx/test8/test9"):
        c.ok(f"SUBSCRIBE {name}")  # type: ignore[attr-defined]
    c.ok("DELETE lx/test6")  # type: ignore[attr-defined]


def test_imaptest_listext_script(env: ImapEnv) -> None:
    """imaptest `listext` (RFC 5258): multiple patterns, errors, SUBSCRIBED,
    RECURSIVEMATCH with CHILDINFO, RETURN (CHILDREN SUBSCRIBED)."""
    c = env.login()
    _listext_setup(c)
    out = c.ok('LIST "" (lx/*2 lx/test3)')
    assert set(_names(out)) == {b"lx/test2", b"lx/test3", b"lx/test4/test52"}
    for bad in ('LIST (imaptest) "" ""', 'LIST (recursivematch) "" ""',
                'LIST "" "" RETURN (imaptest)'):
        _, done = c.tagged(bad)
        assert b" BAD " in done, bad
    c.ok('LIST (remote) "" %')
    out = c.ok('LIST (SUBSCRIBED) "" lx/*')
    for name in ("lx/test1", "lx/test2/test1", "lx/test7/test7", "lx/test8/test9"):
        attrs = _attrs(out, name)
        assert attrs is not None and b"\\subscribed" in attrs, (name, out)
    out = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" lx/test2% RETURN (CHILDREN)')
    assert re.search(rb'\* LIST \([^)]*\\HasChildren[^)]*\) "/" "?lx/test2"? \("CHILDINFO" \("SUBSCRIBED"\)\)', out, re.I), out
    assert b"lx/test2/test1" not in out
    out = c.ok('LIST "" lx/% RETURN (CHILDREN SUBSCRIBED)')
    assert _attrs(out, "lx/test1") == {b"\\subscribed", b"\\hasnochildren"}
    for name, kids in (("lx/test2", b"\\haschildren"), ("lx/test3", b"\\hasnochildren"),
                       ("lx/test4", b"\\haschildren"), ("lx/test7", b"\\haschildren"),
                       ("lx/test8", b"\\haschildren")):
        attrs = _attrs(out, name)
        assert attrs is not None and kids in attrs and b"\\subscribed" not in attrs, (name, out)
    out = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" *test7')
    assert _names(out) == [b"lx/test7/test7"]
    out = c.ok('LIST "" (lx/test7 lx/test7/test7)')
    assert b"lx/test7/test7" in out
    attrs = _attrs(out, "lx/test7")
    assert attrs is None or b"\\nonexistent" not in attrs


def test_listext_recursivematch_with_only_remote_is_bad(env: ImapEnv) -> None:
    """RFC 5258 3: RECURSIVEMATCH "MUST NOT occur as the only selection option
    (or only with REMOTE) ... The server MUST return BAD tagged response in such
    case" (imaptest `listext`: "bad list (recursivematch remote)")."""
    c = env.login()
    _, done = c.tagged('LIST (RECURSIVEMATCH REMOTE) "" ""')
    assert b" BAD " in done


def test_listext_recursivematch_childinfo_for_unmatched_child(env: ImapEnv) -> None:
    """imaptest `listext` / RFC 5258 3 (RECURSIVEMATCH): "*test8" must return
    lx/test8 with CHILDINFO ("SUBSCRIBED") because its subscribed child
    lx/test8/test9 does not match the pattern (lx/test8/test8, which does, is
    returned on its own)."""
    c = env.login()
    _listext_setup(c)
    out = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" *test8')
    assert set(_names(out)) == {b"lx/test8", b"lx/test8/test8"}, out
    assert re.search(rb'"?lx/test8"? \("CHILDINFO" \("SUBSCRIBED"\)\)', out, re.I)
    # ... and the converse: no CHILDINFO parent when the subscribed child is itself returned
    out = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" (lx/test2 lx/test2/test1)')
    assert b"CHILDINFO" not in out.upper() and _names(out) == [b"lx/test2/test1"], out


def test_listext_subscribed_deleted_is_nonexistent(env: ImapEnv) -> None:
    """imaptest `listext` / RFC 5258 3.1 + 3.4: LIST (SUBSCRIBED) returns
    subscribed names that no longer exist, with \\NonExistent (and not \\Noselect
    alone)."""
    c = env.login()
    _listext_setup(c)
    attrs = _attrs(c.ok('LIST (SUBSCRIBED) "" lx/*'), "lx/test6")
    assert attrs is not None and {b"\\subscribed", b"\\nonexistent"} <= attrs
