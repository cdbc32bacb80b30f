"""RFC 4314 rights per folder (issue 11 B): a grant on the whole mailbox
applies to all its folders, a grant on one folder adds to it there; every
decision (access, ACL commands, session rechecks, the namespaces) reads both."""

from __future__ import annotations

import datetime as dt

import pytest
from test_policy_decisions import D, make_world

from policy.decisions import ALL_RIGHTS, Verdict


@pytest.fixture
def world(tmp_path, dev_pki, settings_factory, store):
    w = make_world(tmp_path, dev_pki, settings_factory, store)
    yield w
    w.audit.close()


def test_a_folder_grant_adds_rights_on_that_folder_only(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    stranger = world.identity("stranger")
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr", folder="INBOX")
    assert pol.mailbox_rights(stranger, mb["cardio"], "INBOX") == "lr"
    assert pol.mailbox_rights(stranger, mb["cardio"], "Sent") == ""
    assert pol.mailbox_rights(stranger, mb["cardio"]) == ""  # nothing on the whole box
    # On top of a grant on the whole mailbox (reader holds "lr" on cardio).
    reader = world.identity("reader")
    store.set_grant(reader.account.id, mb["cardio"].id, "ite", folder="Archive")
    assert pol.mailbox_rights(reader, mb["cardio"], "Archive") == "lrite"
    assert pol.mailbox_rights(reader, mb["cardio"], "INBOX") == "lr"
    # Access decisions follow: allowed there, "not-visible" elsewhere.
    assert pol.check_mailbox_access(stranger, mb["cardio"], "INBOX", "r", "select").allowed
    d = pol.check_mailbox_access(stranger, mb["cardio"], "Sent", "r", "select")
    assert d.reason == "not-visible"
    d = pol.check_mailbox_access(stranger, mb["cardio"], "INBOX", "i", "append")
    assert d.reason == "no-access"  # "l" there: visible, the right is missing
    assert pol.check_mailbox_access(reader, mb["cardio"], "Archive", "i", "copy").allowed


def test_a_folder_grant_outside_its_window_counts_for_nothing(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    stranger = world.identity("stranger")
    now = dt.datetime.now(dt.UTC)
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr", folder="INBOX",
                    valid_until=now - dt.timedelta(days=1))
    assert pol.mailbox_rights(stranger, mb["cardio"], "INBOX") == ""
    assert mb["cardio"].id not in [a.mailbox.id for a in pol.accessible_mailboxes(stranger)]


def test_namespaces_carry_folder_rights(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    stranger, reader = world.identity("stranger"), world.identity("reader")
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr", folder="INBOX")
    store.set_grant(reader.account.id, mb["cardio"].id, "w", folder="INBOX")
    (cardio,) = [a for a in pol.accessible_mailboxes(stranger) if not a.owned]
    assert (cardio.mailbox.address, cardio.rights, cardio.folder_rights) == (
        f"cardiologie@{D}", "", (("INBOX", "lr"),))
    assert (cardio.rights_on("INBOX"), cardio.rights_on("Sent")) == ("lr", "")
    (cardio,) = [a for a in pol.accessible_mailboxes(reader) if not a.owned]
    assert (cardio.rights_on("INBOX"), cardio.rights_on("Sent")) == ("lrw", "lr")


def test_session_access_of_a_folder_selected_through_a_folder_grant(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    stranger = world.identity("stranger")
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr", folder="INBOX",
                    valid_until=until)
    access = pol.session_access(stranger, mb["cardio"], "INBOX")
    assert access.decision.allowed and access.valid_until == until
    assert pol.session_access(stranger, mb["cardio"], "Sent").decision.reason == (
        "mailbox-withdrawn")
    store.set_grant(stranger.account.id, mb["cardio"].id, "", folder="INBOX")
    assert pol.session_access(stranger, mb["cardio"], "INBOX").decision.reason == (
        "mailbox-withdrawn")


def test_getacl_shows_the_rights_on_the_folder(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    durand = world.identity("durand")
    store.set_grant(world.accounts["reader"].id, mb["cardio"].id, "w", folder="INBOX")
    store.set_grant(world.accounts["stranger"].id, mb["cardio"].id, "lr", folder="Sent")
    assert pol.acl(durand, mb["cardio"], "INBOX").entries == (
        (f"sec.durand@{D}", ALL_RIGHTS), (f"sec.reader@{D}", "lrw"))
    assert pol.acl(durand, mb["cardio"], "Sent").entries == (
        (f"sec.durand@{D}", ALL_RIGHTS), (f"sec.reader@{D}", "lr"), (f"stranger@{D}", "lr"))


def test_setacl_ignores_a_whole_box_grant_not_in_force(world):
    # Found by review: an ended whole-box grant was taken from the folder's,
    # so SETACL stored an empty grant and answered OK.
    pol, store, mb = world.policy, world.store, world.mailboxes
    durand, stranger = world.identity("durand"), world.identity("stranger")
    past = world.policy.now() - dt.timedelta(days=1)
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr", valid_until=past)
    assert pol.set_rights(durand, mb["cardio"], "INBOX", f"stranger@{D}", "lr").allowed
    assert pol.mailbox_rights(stranger, mb["cardio"], "INBOX") == "lr"
    assert world.audit.events[-1].details == {"identifier": f"stranger@{D}", "rights": "lr"}
    # nor does one that has not begun fix rights: "-r" is no MAILBOX_RIGHTS_FIXED
    store.set_grant(stranger.account.id, mb["cardio"].id, "lr",
                    valid_from=world.policy.now() + dt.timedelta(days=30))
    assert pol.set_rights(durand, mb["cardio"], "INBOX", f"stranger@{D}", "-r").allowed
    assert pol.mailbox_rights(stranger, mb["cardio"], "INBOX") == "l"


def test_setacl_changes_the_folder_grant_and_is_audited(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    durand, reader = world.identity("durand"), world.identity("reader")
    before = len(world.audit.events)
    # reader holds "lr" on the whole box: "+w" on INBOX is a folder grant "w"
    assert pol.set_rights(durand, mb["cardio"], "INBOX", f"sec.reader@{D}", "+w").allowed
    check, change = world.audit.events[before:]
    assert (check.actor, check.action, check.target, check.result) == (
        f"sec.durand@{D}", "setacl", f"cardiologie@{D}/INBOX", "allow")
    assert (change.actor, change.action, change.target, change.result) == (
        f"sec.durand@{D}", "setacl", f"cardiologie@{D}/INBOX", "ok")
    assert change.details == {"identifier": f"sec.reader@{D}", "rights": "w",
                              "mailbox_rights": "lr"}
    grants = [(g.folder, g.rights) for g in store.grants_for_mailbox(mb["cardio"].id)
              if g.account_id == reader.account.id]
    assert sorted(grants) == [("", "lr"), ("INBOX", "w")]
    assert pol.mailbox_rights(reader, mb["cardio"], "INBOX") == "lrw"
    assert pol.mailbox_rights(reader, mb["cardio"], "Sent") == "lr"
    # Replacing keeps the whole-box rights out of the folder grant.
    assert pol.set_rights(durand, mb["cardio"], "INBOX", f"sec.reader@{D}", "lrs").allowed
    assert pol.mailbox_rights(reader, mb["cardio"], "INBOX") == "lrs"
    # Removing a right the whole-box grant gives is refused, audited, changes nothing.
    before = len(world.audit.events)
    d = pol.set_rights(durand, mb["cardio"], "INBOX", f"sec.reader@{D}", "-r")
    assert (d.verdict, d.reason) == (Verdict.DENY, "mailbox-rights-fixed")
    assert world.audit.events[-1].details == {
        "reason": "mailbox-rights-fixed", "identifier": f"sec.reader@{D}",
        "mailbox_rights": "lr"}
    assert len(world.audit.events) == before + 2
    assert pol.mailbox_rights(reader, mb["cardio"], "INBOX") == "lrs"
    # DELETEACL removes the folder's grant; the whole-box grant stays.
    assert pol.set_rights(durand, mb["cardio"], "INBOX", f"sec.reader@{D}", "").allowed
    assert pol.mailbox_rights(reader, mb["cardio"], "INBOX") == "lr"
    assert [(g.folder, g.rights) for g in store.grants_for_mailbox(mb["cardio"].id)
            if g.account_id == reader.account.id] == [("", "lr")]


def test_a_folder_grant_never_sends_as_the_box(world):
    pol, store, mb = world.policy, world.store, world.mailboxes
    stranger = world.identity("stranger")
    grant = store.set_grant(stranger.account.id, mb["cardio"].id, ALL_RIGHTS,
                            folder="INBOX", send_as=True)
    assert (grant.folder, grant.send_as) == ("INBOX", False)
    assert f"cardiologie@{D}" not in pol.addresses_of(stranger)
