"""RFC 4314 rights per folder (issue 11 B): a grant may name one folder of a
mailbox (`Shared/cardiologie@…/INBOX` alone). LIST shows only the folders one
may look up, every other one answers exactly like a missing mailbox, each
command checks the rights of the folder it names, SETACL/DELETEACL/GETACL/
MYRIGHTS/LISTRIGHTS work on the folder's grant, and a withdrawn folder grant
ends the session that has that folder selected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    SECRETARY2,
    ImapEnv,
    add_user,
    deliver,
    make_env,
    message,
    populate,
)

from policy.decisions import ALL_RIGHTS

AGENT = "interim@hopital.test"  # a stand-in, granted the functional INBOX only
INBOX = f'"Shared/{CARDIO}/INBOX"'
SENT = f'"Shared/{CARDIO}/Sent"'
MISSING = b"NO [NONEXISTENT] No such mailbox\r\n"
BYE_WITHDRAWN = b"* BYE Access to the selected mailbox was withdrawn\r\n"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    ids = populate(store)
    # the first secretary administers the box ("a"); the stand-in has no grant yet
    store.set_grant(ids["sec"].id, ids["cardio"].id, ALL_RIGHTS)
    add_user(store, AGENT)
    deliver(store, CARDIO, message("Résultats", "Kaliémie 4,1 mmol/l\r\n", to=CARDIO))
    sent = store.get_folder(ids["cardio"].id, "Sent")
    store.append(sent.id, store.prepare(message("Réponse", "envoyé\r\n")))
    return make_env(tmp_path, store)


def _grant_inbox(env: ImapEnv, rights: str = "lr") -> None:
    account = env.store.get_account(AGENT)
    env.store.set_grant(account.id, env.store.get_mailbox(CARDIO).id, rights, folder="INBOX")


def _listed(out: bytes) -> list[bytes]:
    return re.findall(rb'\* LIST \([^)]*\) "/" "?([^"\r\n]*)"?\r\n', out)


def test_a_folder_grant_shows_that_folder_only(env: ImapEnv) -> None:
    _grant_inbox(env)
    c = env.login(AGENT)
    assert c.ok("NAMESPACE").endswith(b'(("Shared/" "/"))\r\n')
    shared = [n for n in _listed(c.ok('LIST "" "*"')) if n.startswith(b"Shared")]
    assert shared == [b"Shared", f"Shared/{CARDIO}".encode(), f"Shared/{CARDIO}/INBOX".encode()]
    out = c.ok(f'LIST "" "Shared/{CARDIO}/%" RETURN (MYRIGHTS)')
    assert out == (f'* LIST (\\HasNoChildren) "/" "Shared/{CARDIO}/INBOX"\r\n'
                   f'* MYRIGHTS "Shared/{CARDIO}/INBOX" lr\r\n').encode()
    # The subscription list of the box shows the same folder only.
    lsub = c.ok(f'LSUB "" "Shared/{CARDIO}/*"')
    assert lsub == f'* LSUB () "/" "Shared/{CARDIO}/INBOX"\r\n'.encode()
    # Every other folder of the box answers exactly like one that does not exist.
    for name in (SENT, f'"Shared/{CARDIO}/Nope"'):
        for command in (f"SELECT {name}", f"EXAMINE {name}", f"STATUS {name} (MESSAGES)",
                        f"MYRIGHTS {name}", f"GETACL {name}", f"LISTRIGHTS {name} {AGENT}",
                        f"SETACL {name} {AGENT} lr", f"DELETE {name}", f"SUBSCRIBE {name}",
                        f"RENAME {name} {name[:-1]}2\""):
            _, done = c.tagged(command)
            assert done.split(b" ", 1)[1] == MISSING, (command, done)
    _, done = c.tagged(f"APPEND {SENT} {{5+}}\r\nhello")
    assert b"NO [TRYCREATE]" in done
    # The granted folder works with its rights: read-only ("lr"), no APPEND ("i").
    out = c.ok(f"SELECT {INBOX}")
    assert b"[READ-ONLY]" not in out  # the tagged line carries it
    _, done = c.tagged(f"SELECT {INBOX}")
    assert b"OK [READ-ONLY]" in done
    assert b"Kali" in c.ok("FETCH 1 BODY.PEEK[]")
    assert c.ok(f"MYRIGHTS {INBOX}") == f'* MYRIGHTS "Shared/{CARDIO}/INBOX" lr\r\n'.encode()
    _, done = c.tagged(f"STATUS {INBOX} (MESSAGES)")
    assert b" OK " in done
    _, done = c.tagged(f"GETACL {INBOX}")
    assert b"NO [NOPERM]" in done  # visible ("l"), but no "a"
    # COPY out of it into a folder of the box she cannot see: as if missing.
    _, done = c.tagged(f"COPY 1 {SENT}")
    assert b"NO [TRYCREATE]" in done


def test_rights_of_the_box_and_of_the_folder_add_up(env: ImapEnv) -> None:
    """The second secretary holds lrswipkxte on the whole box; a grant of
    "a" on INBOX alone lets her administer INBOX, not Sent."""
    account = env.store.get_account(SECRETARY2)
    env.store.set_grant(account.id, env.store.get_mailbox(CARDIO).id, "a", folder="INBOX")
    c = env.login(SECRETARY2)
    assert c.ok(f"MYRIGHTS {INBOX}").endswith(b" lrswipkxtea\r\n")
    assert c.ok(f"MYRIGHTS {SENT}").endswith(b" lrswipkxte\r\n")
    assert b"* ACL " in c.ok(f"GETACL {INBOX}")
    _, done = c.tagged(f"GETACL {SENT}")
    assert b"NO [NOPERM]" in done


def test_setacl_on_a_folder_grants_that_folder(env: ImapEnv) -> None:
    admin = env.login(SECRETARY)
    admin.ok(f"SETACL {INBOX} {AGENT} lrs")
    acl = admin.ok(f"GETACL {INBOX}")
    assert f'"{AGENT}" lrs'.encode() in acl
    assert AGENT.encode() not in admin.ok(f"GETACL {SENT}")
    # The change is audited under the folder, naming the agent who made it.
    done = [e for e in env.audit.events if e.action == "setacl" and e.result == "ok"]
    assert [(e.actor, e.target, e.details) for e in done] == [
        (SECRETARY, f"{CARDIO}/INBOX", {"identifier": AGENT, "rights": "lrs"})]
    c = env.login(AGENT)
    c.ok(f"SELECT {INBOX}")
    assert b"\\Seen" not in c.ok("FETCH 1 FLAGS")
    c.ok("STORE 1 +FLAGS.SILENT (\\Seen)")  # "s"
    assert b"\\Seen" in c.ok("FETCH 1 FLAGS")
    _, done = c.tagged("STORE 1 +FLAGS.SILENT (\\Flagged)")  # no "w"
    assert b"NO [NOPERM]" in done
    _, done = c.tagged(f"STATUS {SENT} (MESSAGES)")
    assert done.endswith(MISSING)
    # On the whole-box grant of the other secretary, SETACL adds on INBOX only
    # and cannot take away what the box grant gives.
    admin.ok(f"SETACL {INBOX} {SECRETARY2} +a")
    assert f'"{SECRETARY2}" lrswipkxtea'.encode() in admin.ok(f"GETACL {INBOX}")
    assert f'"{SECRETARY2}" lrswipkxte '.encode() in admin.ok(f"GETACL {SENT}")
    _, done = admin.tagged(f"SETACL {INBOX} {SECRETARY2} -w")
    assert done.endswith(
        b"NO [CANNOT] Rights granted on the whole mailbox cannot be removed on one folder\r\n")
    admin.ok(f"DELETEACL {INBOX} {SECRETARY2}")  # the folder's grant goes, the box's stays
    assert f'"{SECRETARY2}" lrswipkxte '.encode() in admin.ok(f"GETACL {INBOX}")


def test_deleteacl_of_the_folder_ends_the_session_reading_it(env: ImapEnv) -> None:
    _grant_inbox(env)
    c = env.login(AGENT)
    c.ok(f"SELECT {INBOX}")
    admin = env.login(SECRETARY)
    admin.ok(f'SETACL "Shared/{CARDIO}/Drafts" {AGENT} lr')  # another folder: no effect
    env.clock.advance(1)
    assert b"Kali" in c.ok("FETCH 1 BODY.PEEK[]")
    admin.ok(f"DELETEACL {INBOX} {AGENT}")
    assert c.cmd("f FETCH 1 BODY.PEEK[]") == BYE_WITHDRAWN and c.closed
    d = env.login(AGENT)
    _, done = d.tagged(f"SELECT {INBOX}")
    assert done.endswith(MISSING)
    assert b"INBOX" not in b"".join(n for n in _listed(d.ok('LIST "" "Shared/*"')))


def test_a_folder_grant_follows_rename(env: ImapEnv) -> None:
    account = env.store.get_account(AGENT)
    cardio = env.store.get_mailbox(CARDIO)
    env.store.create_folder(cardio.id, "Dossiers")
    env.store.set_grant(account.id, cardio.id, "lr", folder="Dossiers")
    admin = env.login(SECRETARY)
    admin.ok(f'RENAME "Shared/{CARDIO}/Dossiers" "Shared/{CARDIO}/Patients"')
    c = env.login(AGENT)
    names = _listed(c.ok(f'LIST "" "Shared/{CARDIO}/*"'))
    assert names == [f"Shared/{CARDIO}/Patients".encode()]


def _patients(env: ImapEnv) -> None:
    account = env.store.get_account(AGENT)
    cardio = env.store.get_mailbox(CARDIO)
    env.store.create_folder(cardio.id, "Patients")
    folder = env.store.get_folder(cardio.id, "Patients")
    env.store.append(folder.id, env.store.prepare(message("Dossier 2025", "Diagnostic\r\n")))
    env.store.set_grant(account.id, cardio.id, "lr", folder="Patients")


def test_an_open_session_keeps_its_folder_grant_through_a_rename(env: ImapEnv) -> None:
    # The grant follows the folder (not its name); the session goes on, and
    # what it reads is audited under the folder's new name.
    _patients(env)
    c = env.login(AGENT)
    c.ok(f'SELECT "Shared/{CARDIO}/Patients"')
    admin = env.login(SECRETARY)
    admin.ok(f'RENAME "Shared/{CARDIO}/Patients" "Shared/{CARDIO}/Patients-2025"')
    env.clock.advance(1)
    assert b"Diagnostic" in c.ok("FETCH 1 BODY.PEEK[]")
    fetches = [e for e in env.audit.events if e.action == "fetch" and e.actor == AGENT]
    assert fetches[-1].target == f"{CARDIO}/Patients-2025"


def test_a_folder_grant_moved_away_by_rename_and_revoked_ends_the_open_session(
    env: ImapEnv,
) -> None:
    # Found by review: the session was rechecked by the folder's old name,
    # which a new folder (granted to the same agent) had taken, so it kept
    # reading the renamed folder after its grant there was revoked.
    _patients(env)
    c = env.login(AGENT)
    c.ok(f'SELECT "Shared/{CARDIO}/Patients"')
    assert b"Diagnostic" in c.ok("FETCH 1 BODY.PEEK[]")
    admin = env.login(SECRETARY)
    admin.ok(f'RENAME "Shared/{CARDIO}/Patients" "Shared/{CARDIO}/Patients-2025"')
    admin.ok(f'CREATE "Shared/{CARDIO}/Patients"')
    admin.ok(f'SETACL "Shared/{CARDIO}/Patients" {AGENT} lr')
    admin.ok(f'DELETEACL "Shared/{CARDIO}/Patients-2025" {AGENT}')
    env.clock.advance(1)
    assert c.cmd("f FETCH 1 BODY.PEEK[]") == BYE_WITHDRAWN and c.closed


def test_deleting_a_granted_folder_moves_the_access_epoch(env: ImapEnv) -> None:
    _patients(env)
    before = env.store.access_epoch()
    cardio = env.store.get_mailbox(CARDIO)
    env.store.rename_folder(cardio.id, "Patients", "Archives")
    assert env.store.access_epoch() == before + 1  # its grant moved with it
    env.store.delete_folder(cardio.id, "Archives")
    assert env.store.access_epoch() == before + 2  # its grant went with it
    env.store.create_folder(cardio.id, "Vide")
    env.store.rename_folder(cardio.id, "Vide", "Vide2")
    env.store.delete_folder(cardio.id, "Vide2")
    assert env.store.access_epoch() == before + 2  # no grant: no session to check


def test_quota_of_a_box_seen_through_a_folder_grant(env: ImapEnv) -> None:
    """GETQUOTAROOT of the granted folder names the box's root; GETQUOTA of
    that root answers too (RFC 9208), as it does for a grant on the whole box."""
    env.store.set_quota(env.store.get_mailbox(CARDIO).id, 1024 * 1024)
    _grant_inbox(env)
    c = env.login(AGENT)
    out = c.ok(f"GETQUOTAROOT {INBOX}")
    assert f'* QUOTAROOT "Shared/{CARDIO}/INBOX" "{CARDIO}"'.encode() in out
    assert c.ok(f'GETQUOTA "{CARDIO}"').startswith(f'* QUOTA "{CARDIO}" (STORAGE '.encode())
    _, done = c.tagged("GETQUOTA pneumologie@hopital.test")
    assert b"NO [NONEXISTENT]" in done


# ---------------------------------------------------------------- CREATE / RENAME: "k" on the parent

NOPERM = b"NO [NOPERM]"


def _grant(env: ImapEnv, folder: str, rights: str) -> None:
    account = env.store.get_account(AGENT)
    env.store.set_grant(account.id, env.store.get_mailbox(CARDIO).id, rights, folder=folder)


def _folders(env: ImapEnv) -> list[str]:
    return sorted(f.name for f in env.store.list_folders(env.store.get_mailbox(CARDIO).id))


def test_create_needs_k_on_the_parent_folder(env: ImapEnv) -> None:
    """RFC 4314 4: "k" on the parent of the new name, here the folder INBOX
    (as Dovecot: a grant on INBOX lets one make INBOX/x, not a folder beside it)."""
    _grant_inbox(env, "lrk")
    c = env.login(AGENT)
    c.ok(f'CREATE "Shared/{CARDIO}/INBOX/Tri"')
    # A level that does not exist yet: its nearest existing parent decides.
    c.ok(f'CREATE "Shared/{CARDIO}/INBOX/2026/Janvier"')
    # The parent of a top-level folder is the mailbox's root: the grant on
    # the whole mailbox, which she has not.
    _, done = c.tagged(f'CREATE "Shared/{CARDIO}/Tri"')
    assert NOPERM in done
    assert _folders(env) == sorted(["INBOX", "INBOX/2026", "INBOX/2026/Janvier", "INBOX/Tri",
                                    "Sent", "Drafts", "Trash", "Junk", "Archive"])
    # Each decision is audited under the new name, naming the agent and the parent.
    creates = [(e.actor, e.target, e.result, e.details.get("parent"))
               for e in env.audit.events if e.action == "create"]
    assert creates == [
        (AGENT, f"{CARDIO}/INBOX/Tri", "allow", f"{CARDIO}/INBOX"),
        (AGENT, f"{CARDIO}/INBOX/2026/Janvier", "allow", f"{CARDIO}/INBOX"),
        (AGENT, f"{CARDIO}/Tri", "deny", f"{CARDIO}/"),
    ]


def test_create_with_k_on_the_new_name_only_is_refused(env: ImapEnv) -> None:
    """A grant holding "k" on the name to make, not on its parent, makes
    nothing (before the fix, "k" was looked up on the new name itself)."""
    _grant_inbox(env, "lr")
    _grant(env, "Nouveau", "lrk")
    _grant(env, "INBOX/Tri", "lrk")
    c = env.login(AGENT)
    for name in ("Nouveau", "INBOX/Tri"):
        _, done = c.tagged(f'CREATE "Shared/{CARDIO}/{name}"')
        assert NOPERM in done, name
    assert "Nouveau" not in _folders(env) and "INBOX/Tri" not in _folders(env)


def test_create_without_k_is_refused_alike_whether_the_parent_exists_or_not(
        env: ImapEnv) -> None:
    """No "k": NOPERM, whether the parent is a folder she may look up, one
    she may not (Sent) or none: the answer tells nothing of hidden folders."""
    _grant_inbox(env, "lr")
    c = env.login(AGENT)
    for name in ("INBOX/Tri", "Sent/Tri", "Nulle/Part", "Tri"):
        _, done = c.tagged(f'CREATE "Shared/{CARDIO}/{name}"')
        assert done.split(b" ", 1)[1].startswith(NOPERM), (name, done)


def test_whole_mailbox_k_creates_top_level_folders(env: ImapEnv) -> None:
    c = env.login(SECRETARY2)  # lrswipkxte on the whole box
    c.ok(f'CREATE "Shared/{CARDIO}/Tri"')
    c.ok(f'RENAME "Shared/{CARDIO}/Tri" "Shared/{CARDIO}/Archive/Tri"')
    assert "Archive/Tri" in _folders(env)


def test_rename_needs_k_on_the_parent_of_the_new_name(env: ImapEnv) -> None:
    """RENAME: "x" on the old name, "k" on the parent of the new one."""
    _grant_inbox(env, "lrk")
    _grant(env, "Archive", "lrx")
    c = env.login(AGENT)
    # k on the new name only (a grant on "Rangé"): refused.
    _grant(env, "Rangé", "lrk")
    _, done = c.tagged(f'RENAME "Shared/{CARDIO}/Archive" "Shared/{CARDIO}/Rangé"')
    assert NOPERM in done
    # No k at the root: refused.
    _, done = c.tagged(f'RENAME "Shared/{CARDIO}/Archive" "Shared/{CARDIO}/Archives"')
    assert NOPERM in done
    assert "Archive" in _folders(env)
    # k on the parent (INBOX): done.
    c.ok(f'RENAME "Shared/{CARDIO}/Archive" "Shared/{CARDIO}/INBOX/Archive"')
    assert "INBOX/Archive" in _folders(env) and "Archive" not in _folders(env)
    renames = [(e.target, e.result, e.details.get("right"), e.details.get("parent"))
               for e in env.audit.events if e.action == "rename" and e.details.get("right") == "k"]
    assert renames == [
        (f"{CARDIO}/Rangé", "deny", "k", f"{CARDIO}/"),
        (f"{CARDIO}/Archives", "deny", "k", f"{CARDIO}/"),
        (f"{CARDIO}/INBOX/Archive", "allow", "k", f"{CARDIO}/INBOX"),
    ]
