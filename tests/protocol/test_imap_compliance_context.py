"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 4, 5): results kept up to date
with ADDTO / REMOVEFROM, over the real store, changed by other sessions,
deliveries and the session itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import compliance_support
import pytest
from compliance_support import (
    SECRETARY,
    ImapClient,
    ImapEnv,
    deliver,
    lines,
    literal_append,
    message,
    selected,
    two_sessions,
)
from imap_transcript import make_env, populate

env = compliance_support.env


def put(env: ImapEnv, *subjects: str, flags: tuple[str, ...] = ()) -> None:
    for s in subjects:
        deliver(env.store, SECRETARY, message(s, f"body {s}\r\n"), flags)


def cmd(c: ImapClient, line: str) -> list[bytes]:
    """The lines answering `line` (its tag first), the tagged one OK."""
    out = lines(c.cmd(line))
    tag = line.split(" ", 1)[0].encode()
    assert out[-1].startswith(tag + b" OK"), out
    return out[:-1]


def no_recent(out: list[bytes]) -> list[bytes]:
    """Without RECENT (which session claims \\Recent is not the point)."""
    return [x for x in out if not x.endswith(b" RECENT")]


def esearch(out: list[bytes]) -> list[bytes]:
    return [x for x in out if x.startswith(b"* ESEARCH ")]


@pytest.fixture
def env_one(tmp_path: Path, store: Any) -> ImapEnv:
    """A session may keep one updating context."""
    populate(store)
    return make_env(tmp_path, store, limits={"imap_update_contexts": 1})


# ------------------------------------------------------------------ SEARCH


def test_rfc5267_update_search_other_session_store_and_expunge(env: ImapEnv) -> None:
    """4.3, 4.3.3, 4.3.4: B01 UID SEARCH RETURN (UPDATE) DELETED; another
    session's STORE adds to the result (position 0, mailbox order), its
    EXPUNGE removes from it (REMOVEFROM before the EXPUNGE)."""
    put(env, "a", "b", "c", "d")
    a, b = two_sessions(env)
    assert cmd(a, "B01 UID SEARCH RETURN (UPDATE) DELETED") == [b'* ESEARCH (TAG "B01") UID']
    b.ok("STORE 2,3 +FLAGS.SILENT (\\Deleted)")
    out = cmd(a, "B02 NOOP")
    assert out[-1] == b'* ESEARCH (TAG "B01") UID ADDTO (0 2:3)', out
    assert [x.split(b" (")[0] for x in out[:-1]] == [b"* 2 FETCH", b"* 3 FETCH"], out
    assert cmd(a, "B03 NOOP") == []  # told once
    b.ok("STORE 3 -FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    out = cmd(a, "B04 NOOP")
    # 3 left the result by its flags (told at once), 2 by its expunge (told
    # just before the EXPUNGE)
    assert out[:3] == [b'* ESEARCH (TAG "B01") UID REMOVEFROM (0 3)',
                       b'* ESEARCH (TAG "B01") UID REMOVEFROM (0 2)', b"* 2 EXPUNGE"], out
    assert out[3].startswith(b"* 2 FETCH (FLAGS (") and len(out) == 4, out


def test_sequence_numbers_stay_valid_around_expunge_and_exists(env: ImapEnv) -> None:
    """4.3.3 / 4.3.4: a SEARCH (not UID) context names sequence numbers: the
    REMOVEFROM of an expunged message comes before its EXPUNGE, the ADDTO of
    a delivered message after its EXISTS."""
    put(env, "a", "b", "c")
    put(env, "d", flags=("\\Flagged",))
    a, b = two_sessions(env)
    assert cmd(a, "C1 SEARCH RETURN (UPDATE ALL) FLAGGED") == [b'* ESEARCH (TAG "C1") ALL 4']
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    put(env, "e", flags=("\\Flagged",))  # UID 5, sequence 4 once 1 is gone
    out = no_recent(cmd(a, "C2 NOOP"))
    assert out == [b"* 1 EXPUNGE", b"* 4 EXISTS", b'* ESEARCH (TAG "C1") ADDTO (0 4)'], out
    b.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")  # UID 4, flagged, sequence 3
    b.ok("EXPUNGE")
    out = cmd(a, "C3 NOOP")
    assert out == [b'* ESEARCH (TAG "C1") REMOVEFROM (0 3)', b"* 3 EXPUNGE"], out


def test_delivery_and_append_reach_an_idling_client(env: ImapEnv) -> None:
    """4.3.2: updates may come during IDLE; a delivery (as the SMTP daemon
    stores it) and another session's APPEND both join the result."""
    put(env, "a")
    a, b = two_sessions(env)
    assert cmd(a, 'D1 UID SEARCH RETURN (UPDATE COUNT) SUBJECT "urgent"') == [
        b'* ESEARCH (TAG "D1") UID COUNT 0']
    assert a.cmd("D2 IDLE") == b"+ idling\r\n"
    put(env, "urgent: scanner", "routine")  # UIDs 2, 3
    env.clock.advance(0.3)
    out = lines(a.read())
    assert out[0] == b"* 3 EXISTS" and out[-1] == b'* ESEARCH (TAG "D1") UID ADDTO (0 2)', out
    raw = message("urgent: labo", "results\r\n")
    assert b"OK" in literal_append(b, "b1", "INBOX", raw)  # UID 4
    env.clock.advance(0.3)
    out = lines(a.read())
    assert out[0] == b"* 4 EXISTS" and out[-1] == b'* ESEARCH (TAG "D1") UID ADDTO (0 4)', out
    assert a.cmd("DONE").startswith(b"D2 OK")


def test_own_store_and_expunge_update_the_context(env: ImapEnv) -> None:
    """The session's own STORE and EXPUNGE change its results too, told with
    the command's own responses."""
    put(env, "a", "b", "c")
    a = selected(env)
    assert cmd(a, "E1 SEARCH RETURN (UPDATE MIN) SEEN") == [b'* ESEARCH (TAG "E1")']
    out = cmd(a, "E2 STORE 2:3 +FLAGS (\\Seen \\Deleted)")
    assert out[-1] == b'* ESEARCH (TAG "E1") ADDTO (0 2:3)', out
    out = cmd(a, "E3 EXPUNGE")
    assert out == [b'* ESEARCH (TAG "E1") REMOVEFROM (0 2:3)', b"* 3 EXPUNGE",
                   b"* 2 EXPUNGE"], out


def test_update_does_not_narrow_to_the_other_return_options(env: ImapEnv) -> None:
    """4.3: RETURN (UPDATE MIN) notifies about every matching message, and so
    does UPDATE with PARTIAL (4.4): the window is not what is kept."""
    put(env, "a", "b", "c", "d", "e")
    a, b = two_sessions(env)
    assert cmd(a, "F1 UID SEARCH RETURN (UPDATE PARTIAL 1:2) UNSEEN") == [
        b'* ESEARCH (TAG "F1") UID PARTIAL (1:2 1:2)']
    b.ok("STORE 4 +FLAGS.SILENT (\\Seen)")
    out = cmd(a, "F2 NOOP")
    assert esearch(out) == [b'* ESEARCH (TAG "F1") UID REMOVEFROM (0 4)'], out


def test_sequence_set_keys_follow_the_renumbering(env: ImapEnv) -> None:
    """A key naming sequence numbers (or ``*``) is computed again whole: an
    expunge moves another message into ``1:2``, a delivery changes ``*``."""
    put(env, "a", "b", "c")
    a, b = two_sessions(env)
    assert cmd(a, "T1 UID SEARCH RETURN (UPDATE ALL) 1:2") == [b'* ESEARCH (TAG "T1") UID ALL 1:2']
    assert cmd(a, "T2 UID SEARCH RETURN (UPDATE ALL) UID *") == [b'* ESEARCH (TAG "T2") UID ALL 3']
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    put(env, "d")  # UID 4
    out = esearch(cmd(a, "T3 NOOP"))
    # T1's 1:2 names UID 3 once the EXPUNGE of 1 is told: told right after it
    assert out == [b'* ESEARCH (TAG "T2") UID REMOVEFROM (0 3)',
                   b'* ESEARCH (TAG "T1") UID REMOVEFROM (0 1)',
                   b'* ESEARCH (TAG "T2") UID ADDTO (0 4)',
                   b'* ESEARCH (TAG "T1") UID ADDTO (0 3)'], out
    assert esearch(cmd(a, "T4 NOOP")) == []


def test_only_what_changed_is_looked_at_again(env: ImapEnv, monkeypatch: Any) -> None:
    """A key about each message alone (here a header) reads the stored
    metadata of the messages that came or changed, not of the folder."""
    put(env, *[f"routine {i}" for i in range(30)])
    a, b = two_sessions(env)
    cmd(a, 'V1 UID SEARCH RETURN (UPDATE) SUBJECT "urgent"')
    asked: list[list[int]] = []
    real = env.store.message_infos

    def counting(folder_id: int, uids: Any) -> Any:
        asked.append(list(uids))
        return real(folder_id, uids)

    monkeypatch.setattr(env.store, "message_infos", counting)
    put(env, "urgent: scanner")  # UID 31
    b.ok("STORE 5 +FLAGS.SILENT (\\Flagged)")
    assert esearch(cmd(a, "V2 NOOP")) == [b'* ESEARCH (TAG "V1") UID ADDTO (0 31)']
    assert asked == [[5, 31]], asked


def test_context_hint_alone_changes_nothing(env: ImapEnv) -> None:
    """4.2: CONTEXT is a hint; no updates are kept for it."""
    put(env, "a", "b")
    a, b = two_sessions(env)
    assert cmd(a, "A01 SEARCH RETURN (CONTEXT COUNT) UNDELETED") == [
        b'* ESEARCH (TAG "A01") COUNT 2']
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert esearch(cmd(a, "A02 NOOP")) == []


# ------------------------------------------------------------------ SORT


def test_rfc5267_update_sort_positions(env: ImapEnv) -> None:
    """4.3.3 / 4.3.4 for SORT: pairs at positions in the sorted result, sets
    in sort order, applied in order."""
    put(env, "b", "d")  # UIDs 1, 2
    a, b = two_sessions(env)
    assert cmd(a, "S1 UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNDELETED") == [
        b'* ESEARCH (TAG "S1") UID ALL 1:2']
    put(env, "a", "c", "e", "f")  # UIDs 3..6: sorted a b c d e f = 3 1 4 2 5 6
    out = cmd(a, "S2 NOOP")
    assert out[-1] == b'* ESEARCH (TAG "S1") UID ADDTO (1 3 3 4 5 5:6)', out
    b.ok("STORE 1,2 +FLAGS.SILENT (\\Deleted)")  # b and d leave: a c e f
    out = cmd(a, "S3 NOOP")
    assert esearch(out) == [b'* ESEARCH (TAG "S1") UID REMOVEFROM (2 1 3 2)'], out
    b.ok("STORE 1 -FLAGS.SILENT (\\Deleted)")  # b comes back
    b.ok("NOOP")
    b.ok("UID STORE 6 +FLAGS.SILENT (\\Deleted)")  # f goes
    out = cmd(a, "S4 NOOP")
    assert esearch(out) == [b'* ESEARCH (TAG "S1") UID REMOVEFROM (4 6)',
                            b'* ESEARCH (TAG "S1") UID ADDTO (2 1)'], out


def test_sort_sequence_numbers_and_reverse_order(env: ImapEnv) -> None:
    """SORT (not UID) names sequence numbers; REVERSE keeps its order in the
    sets; an expunge's REMOVEFROM names the position before the EXPUNGE."""
    put(env, "a", "b", "c")
    a, b = two_sessions(env)
    assert cmd(a, "R1 SORT RETURN (UPDATE ALL PARTIAL 1:1) (REVERSE SUBJECT) UTF-8 ALL") == [
        b'* ESEARCH (TAG "R1") ALL 3,2,1 PARTIAL (1:1 3)']
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    put(env, "d", "bb")  # UIDs 4, 5: sorted d c bb a = seq 3 2 4 1 after the expunge
    out = no_recent(cmd(a, "R2 NOOP"))
    assert out == [b'* ESEARCH (TAG "R1") REMOVEFROM (2 2)', b"* 2 EXPUNGE", b"* 4 EXISTS",
                   b'* ESEARCH (TAG "R1") ADDTO (1 3 3 4)'], out


# ------------------------------------------------------------------ lifetime, limits


def test_cancelupdate_stops_the_updates(env: ImapEnv) -> None:
    """4.3.5: CANCELUPDATE "tag" ...; the others go on; an unknown tag is no
    error; the tag may then be used again for a new context."""
    put(env, "a", "b")
    a, b = two_sessions(env)
    cmd(a, "G1 UID SEARCH RETURN (UPDATE) DELETED")
    cmd(a, "G2 UID SEARCH RETURN (UPDATE) FLAGGED")
    assert cmd(a, 'G3 CANCELUPDATE "G1" "nothing"') == []
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted \\Flagged)")
    assert esearch(cmd(a, "G4 NOOP")) == [b'* ESEARCH (TAG "G2") UID ADDTO (0 1)']
    cmd(a, 'G5 CANCELUPDATE "G2"')
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted \\Flagged)")
    assert esearch(cmd(a, "G6 NOOP")) == []
    assert cmd(a, "G1 UID SEARCH RETURN (UPDATE) DELETED") == [b'* ESEARCH (TAG "G1") UID']


def test_tag_reuse_is_bad(env: ImapEnv) -> None:
    """4.3: UPDATE with the tag of a kept updating search is BAD, and the
    context is unchanged."""
    put(env, "a")
    a, b = two_sessions(env)
    cmd(a, "H1 UID SEARCH RETURN (UPDATE) DELETED")
    assert a.cmd("H1 UID SORT RETURN (UPDATE) (DATE) UTF-8 SEEN").startswith(b"H1 BAD")
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert esearch(cmd(a, "H2 NOOP")) == [b'* ESEARCH (TAG "H1") UID ADDTO (0 1)']


def test_limit_refuses_with_noupdate(env_one: ImapEnv) -> None:
    """4.3.1: past the limit, an untagged NO [NOUPDATE "tag"], the other
    return options still honoured, and no updates for that search."""
    put(env_one, "a", "b")
    a, b = two_sessions(env_one)
    cmd(a, "K1 UID SEARCH RETURN (UPDATE) DELETED")
    out = cmd(a, "K2 UID SORT RETURN (UPDATE COUNT) (DATE) UTF-8 UNDELETED")
    assert out == [b'* NO [NOUPDATE "K2"] Too many updating searches, will not notify',
                   b'* ESEARCH (TAG "K2") UID COUNT 2'], out
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert esearch(cmd(a, "K3 NOOP")) == [b'* ESEARCH (TAG "K1") UID ADDTO (0 1)']
    cmd(a, 'K4 CANCELUPDATE "K1"')
    assert esearch(cmd(a, "K5 UID SEARCH RETURN (UPDATE) DELETED")) == [
        b'* ESEARCH (TAG "K5") UID']


def test_contexts_end_with_the_selection(env: ImapEnv) -> None:
    """4.3: updates cease when the mailbox is no longer selected: SELECT,
    EXAMINE, CLOSE and UNSELECT drop every context; CANCELUPDATE needs a
    selected mailbox."""
    put(env, "a", "b", "c", "d", "e")
    a, b = two_sessions(env)
    for n, leave in enumerate(("SELECT INBOX", "EXAMINE INBOX", "CLOSE", "UNSELECT"), 1):
        cmd(a, f"L{n} UID SEARCH RETURN (UPDATE) DELETED")
        cmd(a, f"M{n} {leave}")
        if leave in ("CLOSE", "UNSELECT"):
            cmd(a, f"N{n} SELECT INBOX")
        b.ok(f"STORE {n} +FLAGS.SILENT (\\Deleted)")
        assert esearch(cmd(a, f"P{n} NOOP")) == [], leave
    cmd(a, "Q1 UNSELECT")
    assert a.cmd('Q2 CANCELUPDATE "L1"').startswith(b"Q2 BAD")


def test_a_failed_search_keeps_no_context(env: ImapEnv) -> None:
    """A SEARCH with UPDATE that fails (here BADCHARSET) keeps nothing: no
    updates come, and its tag is free for another."""
    put(env, "a")
    a, b = two_sessions(env)
    out = a.cmd("W1 SEARCH RETURN (UPDATE) CHARSET X-UNKNOWN DELETED")
    assert out.startswith(b"W1 NO [BADCHARSET"), out
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert esearch(cmd(a, "W2 NOOP")) == []
    assert cmd(a, "W1 UID SEARCH RETURN (UPDATE ALL) DELETED") == [
        b'* ESEARCH (TAG "W1") UID ALL 1']
