"""The MessageStore contract, run against SQLite and PostgreSQL (`any_store`).

Every method of storage.interface.MessageStore is exercised here, with the
errors its docstring names.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.interface import (
    DEFAULT_FOLDERS,
    AccountClass,
    AlreadyExists,
    AuditEvent,
    Delivery,
    DirectoryFields,
    DSNParams,
    FlagMode,
    InvalidName,
    LoginFailures,
    MailboxAccess,
    MailboxType,
    NotFound,
    QuotaExceeded,
    SpecialUse,
    ThrottleScope,
)
from storage.sqlbase import MAX_NAME_OCTETS


def msg(subject: str = "hello", body: str = "body text") -> bytes:
    return (
        f"From: Dr A <a@hopital.test>\r\nTo: b@hopital.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@hopital.test>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def box(any_store: Any) -> Any:
    """(store, mailbox, inbox folder) for dr.martin@hopital.test."""
    acc = any_store.add_account("Dr.Martin@hopital.test", "Dr Martin", AccountClass.PRACTITIONER)
    mb = any_store.add_mailbox("Dr.Martin@Hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return any_store, mb, any_store.get_folder(mb.id, "INBOX")


# ---------------------------------------------------------------- directory


def test_domains(any_store: Any) -> None:
    with pytest.raises(AlreadyExists):
        any_store.add_domain("HOPITAL.test")
    d = any_store.add_domain("clinique.test")
    assert d.name == "clinique.test"
    assert [x.name for x in any_store.list_domains()] == ["clinique.test", "hopital.test"]


def test_accounts(any_store: Any) -> None:
    a = any_store.add_account(
        "Dr.Martin@hopital.test",
        "Dr Martin",
        AccountClass.PRACTITIONER,
        idnat="810002813839",
        cert_subject="CN=Martin,O=Hopital",
        password_hash="$hash",
    )
    assert a.login == "dr.martin@hopital.test" and a.active
    with pytest.raises(AlreadyExists):
        any_store.add_account("DR.MARTIN@hopital.test", "x", AccountClass.STAFF)
    assert any_store.get_account("DR.martin@HOPITAL.TEST") == a
    assert any_store.get_account_by_id(a.id) == a
    assert any_store.find_account_by_idnat("810002813839") == a
    assert any_store.find_account_by_idnat("000") is None
    assert any_store.find_account_by_cert_subject("CN=Martin,O=Hopital") == a
    assert any_store.find_account_by_cert_subject("CN=Other") is None
    b = any_store.add_account("app@hopital.test", "App", AccountClass.SYSTEM)
    assert [x.login for x in any_store.list_accounts()] == [b.login, a.login]
    any_store.set_password_hash(a.login, None)
    any_store.set_account_active(a.login, False)
    a2 = any_store.get_account(a.login)
    assert a2.password_hash is None and not a2.active
    assert a2.account_class is AccountClass.PRACTITIONER
    for fn, args in [
        (any_store.get_account, ("nobody@hopital.test",)),
        (any_store.get_account_by_id, (999,)),
        (any_store.set_password_hash, ("nobody@hopital.test", "h")),
        (any_store.set_account_active, ("nobody@hopital.test", True)),
    ]:
        with pytest.raises(NotFound):
            fn(*args)


def test_mailboxes(any_store: Any) -> None:
    acc = any_store.add_account("sec@hopital.test", "Secretariat", AccountClass.STAFF)
    org = any_store.add_mailbox(
        "Cardio@hopital.test",
        MailboxType.ORG,
        display_name="Cardiologie",
        responsible="Chef de service",
        quota_bytes=10_000,
    )
    per = any_store.add_mailbox("sec@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    assert org.address == "cardio@hopital.test" and org.owner_account_id is None
    assert org.mailbox_type is MailboxType.ORG and org.quota_bytes == 10_000
    assert any_store.get_mailbox("CARDIO@hopital.test") == org
    assert any_store.get_mailbox_by_id(per.id) == per
    assert any_store.find_mailbox("cardio@HOPITAL.test") == org
    assert any_store.find_mailbox("none@hopital.test") is None
    assert [m.address for m in any_store.list_mailboxes()] == [org.address, per.address]
    assert any_store.mailboxes_owned_by(acc.id) == [per]
    with pytest.raises(AlreadyExists):
        any_store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    with pytest.raises(NotFound):  # not a served domain
        any_store.add_mailbox("x@elsewhere.test", MailboxType.PER)
    with pytest.raises(NotFound):  # owner missing
        any_store.add_mailbox("y@hopital.test", MailboxType.PER, owner_account_id=9999)
    names = {f.name: f.special_use for f in any_store.list_folders(org.id)}
    assert names == dict(DEFAULT_FOLDERS)
    any_store.set_mailbox_active("cardio@hopital.test", False)
    assert not any_store.get_mailbox_by_id(org.id).active
    any_store.set_quota(org.id, None)
    assert any_store.get_mailbox_by_id(org.id).quota_bytes is None
    assert any_store.mailbox_usage(org.id) == (0, 0)
    for fn, args in [
        (any_store.get_mailbox, ("none@hopital.test",)),
        (any_store.get_mailbox_by_id, (999,)),
        (any_store.set_mailbox_active, ("none@hopital.test", True)),
        (any_store.set_quota, (999, 1)),
        (any_store.mailbox_usage, (999,)),
        (any_store.list_folders, (999,)),
    ]:
        with pytest.raises(NotFound):
            fn(*args)


def test_directory_fields(any_store: Any) -> None:
    """What the national directory publishes: set at creation, changed
    field by field (the box as it was is returned), read with the owner's
    IdNat_PS in one call; over-long or multi-line text is refused."""
    doc = any_store.add_account("dr.b@hopital.test", "Dr B", AccountClass.PRACTITIONER,
                                idnat="810002813839")
    per = any_store.add_mailbox("dr.b@hopital.test", MailboxType.PER, owner_account_id=doc.id,
                                display_name="Dr B", description="Cardiologue",
                                service="Cardiologie", unlisted=True)
    assert (per.description, per.service, per.unlisted) == ("Cardiologue", "Cardiologie", True)
    assert any_store.get_mailbox(per.address) == per
    org = any_store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    assert (org.description, org.service, org.unlisted) == ("", "", False)
    before = any_store.set_directory_fields(
        org.address, DirectoryFields(description="Secrétariat, cardiologie", service="Cardio",
                                     responsible="Dr Chef", unlisted=True))
    assert before == org
    after = any_store.get_mailbox(org.address)
    assert (after.description, after.service, after.responsible, after.unlisted) == (
        "Secrétariat, cardiologie", "Cardio", "Dr Chef", True)
    assert any_store.set_directory_fields(org.address, DirectoryFields(unlisted=False)) == after
    again = any_store.get_mailbox(org.address)
    assert again == replace(after, unlisted=False)  # the other fields kept
    assert [(e.mailbox.address, e.owner_login, e.owner_idnat)
            for e in any_store.directory_entries()] == [
        ("cardio@hopital.test", None, None),
        ("dr.b@hopital.test", "dr.b@hopital.test", "810002813839"),
    ]
    with pytest.raises(NotFound):
        any_store.set_directory_fields("none@hopital.test", DirectoryFields(service="x"))
    with pytest.raises(ValueError, match="service: at most 255"):
        any_store.set_directory_fields(org.address, DirectoryFields(service="x" * 256))
    with pytest.raises(ValueError, match="description: control characters"):
        any_store.add_mailbox("z@hopital.test", MailboxType.ORG, description="a\nb")
    assert any_store.find_mailbox("z@hopital.test") is None
    assert any_store.get_mailbox(org.address) == again  # nothing changed by the refusals


def test_mailbox_access_is_owned_then_granted(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    assert store.mailbox_access(agent.id) == MailboxAccess(owned=[], shared=[])
    own = store.add_mailbox("agent@hopital.test", MailboxType.PER, owner_account_id=agent.id)
    other = store.add_mailbox("accueil@hopital.test", MailboxType.ORG)
    until = datetime(2030, 1, 1, tzinfo=UTC)
    g1 = store.set_grant(agent.id, other.id, "lr", valid_until=until)
    g2 = store.set_grant(agent.id, mb.id, "lrswi")
    store.set_mailbox_active("accueil@hopital.test", False)
    access = store.mailbox_access(agent.id)
    assert access.owned == [own]
    # Grants in grant order, each with its mailbox as stored (inactive too:
    # what that means is the policy's call).
    assert access.shared == [(g1, store.get_mailbox_by_id(other.id)), (g2, mb)]
    assert not access.shared[0][1].active and access.shared[0][0].valid_until == until
    store.set_grant(agent.id, other.id, "")
    assert store.mailbox_access(agent.id).shared == [(g2, mb)]
    # Someone else's grants are not mine.
    assert store.mailbox_access(9999) == MailboxAccess(owned=[], shared=[])


def test_grants(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    until = datetime(2030, 1, 1, tzinfo=UTC)
    g = store.set_grant(agent.id, mb.id, "lrs", valid_until=until)
    assert (g.rights, g.valid_until, g.valid_from) == ("lrs", until, None)
    assert store.grants_for_account(agent.id) == [g]
    assert store.grants_for_mailbox(mb.id) == [g]
    g2 = store.set_grant(agent.id, mb.id, "lrswi")  # replaces
    assert store.grants_for_account(agent.id) == [g2]
    assert g2.valid_until is None
    gone = store.set_grant(agent.id, mb.id, "")
    assert gone.rights == ""
    assert store.grants_for_account(agent.id) == []
    assert store.grants_for_mailbox(mb.id) == []
    with pytest.raises(NotFound):
        store.set_grant(9999, mb.id, "lr")
    with pytest.raises(NotFound):
        store.set_grant(agent.id, 9999, "lr")


def test_send_as_is_a_right_of_its_own(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    g = store.set_grant(agent.id, mb.id, "lr", send_as=True)
    assert g.send_as and store.grants_for_account(agent.id) == [g]
    kept = store.set_grant(agent.id, mb.id, "lrs")  # an ACL change keeps send-as
    assert kept.send_as and store.grants_for_mailbox(mb.id) == [kept]
    only = store.set_grant(agent.id, mb.id, "", send_as=True)  # send-as alone
    assert (only.rights, only.send_as) == ("", True)
    assert store.grants_for_account(agent.id) == [only]
    assert store.set_grant(agent.id, mb.id, "lr", send_as=False).send_as is False
    gone = store.set_grant(agent.id, mb.id, "", send_as=False)
    assert (gone.rights, gone.send_as) == ("", False)
    assert store.grants_for_account(agent.id) == []


def test_access_epoch_grows_with_every_withdrawal(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    epoch = store.access_epoch()

    def moved() -> bool:
        nonlocal epoch
        now = store.access_epoch()
        grew, epoch = now > epoch, now
        return grew

    store.set_grant(agent.id, mb.id, "lrs")
    assert not moved()  # a new grant withdraws nothing
    store.set_grant(agent.id, mb.id, "lr")
    assert moved()  # replaced: rights may be fewer
    store.set_grant(agent.id, mb.id, "")
    assert moved()
    store.set_grant(agent.id, mb.id, "")
    assert not moved()  # nothing was there to remove
    store.set_password_hash("agent@hopital.test", None)
    store.set_account_active("agent@hopital.test", True)
    assert not moved()
    store.set_account_active("agent@hopital.test", False)
    assert moved()
    store.set_mailbox_active(mb.address, True)
    assert not moved()
    store.set_mailbox_active(mb.address, False)
    assert moved()
    with pytest.raises(NotFound):
        store.set_account_active("none@hopital.test", False)
    assert not moved()


# ---------------------------------------------------------------- folders


def test_folder_create_get_names(box: Any) -> None:
    store, mb, inbox = box
    assert store.get_folder(mb.id, "inbox") == inbox
    assert store.get_folder_by_id(inbox.id) == inbox
    f = store.create_folder(mb.id, "Patients/2026/Dupont")
    names = [x.name for x in store.list_folders(mb.id)]
    assert {"Patients", "Patients/2026", "Patients/2026/Dupont"} <= set(names)
    assert names == sorted(names)
    assert f.uidnext == 1 and f.highestmodseq >= 1 and f.special_use is None
    assert store.create_folder(mb.id, "Trailing/").name == "Trailing"
    assert store.create_folder(mb.id, "inbox/Sub").name == "INBOX/Sub"
    assert store.get_folder(mb.id, "Inbox/Sub").name == "INBOX/Sub"
    s = store.create_folder(mb.id, "Lettres", SpecialUse.ARCHIVE)
    assert store.get_folder(mb.id, "Lettres").special_use is SpecialUse.ARCHIVE
    assert s.special_use is SpecialUse.ARCHIVE
    with pytest.raises(AlreadyExists):
        store.create_folder(mb.id, "Patients/2026")
    with pytest.raises(AlreadyExists):
        store.create_folder(mb.id, "INBOX")
    for bad in ["", "/", "a//b", "/abs", "a*b", "a%b", "tab\there", "x" * 2000]:
        with pytest.raises(InvalidName):
            store.create_folder(mb.id, bad)
    with pytest.raises(NotFound):
        store.create_folder(9999, "X")
    with pytest.raises(NotFound):
        store.get_folder(mb.id, "Nope")
    with pytest.raises(NotFound):
        store.get_folder(mb.id, "sent")  # only INBOX is case-insensitive
    with pytest.raises(NotFound):
        store.get_folder_by_id(99999)


def test_delete_folder_new_uidvalidity(box: Any) -> None:
    store, mb, inbox = box
    f = store.create_folder(mb.id, "Tmp")
    store.append(f.id, msg())
    store.delete_folder(mb.id, "Tmp")
    with pytest.raises(NotFound):
        store.get_folder(mb.id, "Tmp")
    assert store.mailbox_usage(mb.id) == (0, 0)
    again = store.create_folder(mb.id, "Tmp")
    assert again.uidvalidity != f.uidvalidity
    assert store.index(again.id) == []
    with pytest.raises(InvalidName):
        store.delete_folder(mb.id, "inbox")
    with pytest.raises(NotFound):
        store.delete_folder(mb.id, "Nope")


def test_long_multibyte_folder_names_refused_alike_on_every_backend(box: Any) -> None:
    """A name of many distinct multibyte characters (incompressible) fits the
    1,024-character bound but not PostgreSQL's unique index (at most about
    2,700 bytes per entry): it was a StoreUnavailable there and stored on
    SQLite. Names are bounded in UTF-8 octets too, the same on both."""
    store, mb, _ = box
    cjk = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1000))  # 3,000 octets
    emoji = "".join(chr(0x1F300 + i % 700) for i in range(600))  # 2,400 octets
    for bad in (cjk, emoji, "a/" + cjk[:700]):
        with pytest.raises(InvalidName, match="too long"):
            store.create_folder(mb.id, bad)
    store.create_folder(mb.id, "Sent/X")
    with pytest.raises(InvalidName, match="too long"):
        store.rename_folder(mb.id, "Sent/X", cjk)
    # Up to the bound, multibyte names are stored and found on both backends.
    fits = cjk[:MAX_NAME_OCTETS // 3]
    made = store.create_folder(mb.id, fits)
    assert store.get_folder(mb.id, fits).id == made.id
    store.rename_folder(mb.id, "Sent/X", "Sent/" + emoji[: (MAX_NAME_OCTETS - 5) // 4])


def test_rename_folder_with_inferiors(box: Any) -> None:
    store, mb, _ = box
    a = store.create_folder(mb.id, "A/B")
    store.append(a.id, msg())
    store.rename_folder(mb.id, "A", "X/Y")
    names = {f.name for f in store.list_folders(mb.id)}
    assert {"X", "X/Y", "X/Y/B"} <= names and not {"A", "A/B"} & names
    moved = store.get_folder(mb.id, "X/Y/B")
    assert moved.id == a.id and moved.uidvalidity == a.uidvalidity
    assert [e.uid for e in store.index(moved.id)] == [1]
    with pytest.raises(NotFound):
        store.rename_folder(mb.id, "A", "Z")
    with pytest.raises(AlreadyExists):
        store.rename_folder(mb.id, "X/Y/B", "Sent")
    with pytest.raises(AlreadyExists):
        store.rename_folder(mb.id, "Sent", "inbox")
    with pytest.raises(InvalidName):
        store.rename_folder(mb.id, "Sent", "a//b")
    with pytest.raises(InvalidName):
        store.rename_folder(mb.id, "X", "X/Y/Z")


def test_rename_inbox_moves_messages(box: Any) -> None:
    store, mb, inbox = box
    store.create_folder(mb.id, "INBOX/Child")
    for i in range(3):
        store.append(inbox.id, msg(f"m{i}"), flags=["\\Seen"] if i == 0 else [])
    before = store.folder_status(inbox.id)
    store.rename_folder(mb.id, "INBOX", "Old/Inbox")
    new = store.get_folder(mb.id, "Old/Inbox")
    assert [e.uid for e in store.index(new.id)] == [1, 2, 3]
    assert store.message_body(new.id, 1) == msg("m0")
    assert store.index(new.id)[0].flags == frozenset({"\\Seen"})
    assert new.uidvalidity != inbox.uidvalidity
    still = store.get_folder(mb.id, "INBOX")
    assert still.id == inbox.id and store.index(inbox.id) == []
    assert still.uidnext == before.uidnext  # UIDs are never reused
    assert store.get_folder(mb.id, "INBOX/Child")  # inferiors stay (RFC 3501 6.3.5)
    changes = store.changes_since(inbox.id, before.highestmodseq)
    assert changes.expunged == (1, 2, 3)
    assert store.append(inbox.id, msg()).uid == 4
    assert store.mailbox_usage(mb.id)[1] == 4


def test_subscribe(box: Any) -> None:
    store, mb, _ = box
    defaults = sorted(name for name, _ in DEFAULT_FOLDERS)
    assert store.list_subscriptions(mb.id) == defaults
    assert all(f.subscribed for f in store.list_folders(mb.id))
    f = store.create_folder(mb.id, "Sub")
    assert not f.subscribed  # CREATE does not subscribe
    store.set_subscribed(mb.id, "Sub", True)
    store.set_subscribed(mb.id, "Sub", True)  # idempotent
    assert store.get_folder_by_id(f.id).subscribed
    assert store.get_folder(mb.id, "Sub").subscribed
    assert "Sub" in store.list_subscriptions(mb.id)
    store.set_subscribed(mb.id, "Sub", False)
    assert not store.get_folder_by_id(f.id).subscribed
    store.set_subscribed(mb.id, "inbox", False)
    assert "INBOX" not in store.list_subscriptions(mb.id)
    with pytest.raises(NotFound):
        store.set_subscribed(mb.id, "Nope", True)
    with pytest.raises(NotFound):
        store.set_subscribed(mb.id, "Nope", False)
    with pytest.raises(NotFound):
        store.list_subscriptions(99999)


def test_subscription_outlives_its_folder(box: Any) -> None:
    """RFC 3501 6.3.6: DELETE does not unsubscribe; UNSUBSCRIBE still works."""
    store, mb, _ = box
    store.create_folder(mb.id, "Gone")
    store.set_subscribed(mb.id, "Gone", True)
    store.delete_folder(mb.id, "Gone")
    assert "Gone" in store.list_subscriptions(mb.id)
    again = store.create_folder(mb.id, "Gone")
    assert again.subscribed  # subscriptions are by name
    store.delete_folder(mb.id, "Gone")
    store.set_subscribed(mb.id, "Gone", False)
    assert "Gone" not in store.list_subscriptions(mb.id)


def test_rename_carries_subscriptions(box: Any) -> None:
    store, mb, _ = box
    store.create_folder(mb.id, "P/Q")
    store.set_subscribed(mb.id, "P/Q", True)
    store.rename_folder(mb.id, "P", "R")
    subs = store.list_subscriptions(mb.id)
    assert "R/Q" in subs and "P/Q" not in subs
    assert store.get_folder(mb.id, "R/Q").subscribed
    assert not store.get_folder(mb.id, "R").subscribed


# ---------------------------------------------------------------- messages


def test_append_index_infos_body(box: Any) -> None:
    store, mb, inbox = box
    when = datetime(2026, 3, 1, 8, 30, 15, tzinfo=UTC)
    r1 = store.append(
        inbox.id, msg("one"), flags=["\\seen", "$Label1", "\\Recent"], internal_date=when
    )
    r2 = store.append(inbox.id, msg("two"))
    assert (r1.uid, r2.uid) == (1, 2) and r2.modseq > r1.modseq
    assert r1.uidvalidity == inbox.uidvalidity and r1.folder_id == inbox.id
    idx = store.index(inbox.id)
    assert [e.uid for e in idx] == [1, 2]
    assert idx[0].flags == frozenset({"\\Seen", "$Label1"})  # canonical, no \Recent
    assert idx[0].internal_date == when and idx[0].size == len(msg("one"))
    assert isinstance(idx[1].flags, frozenset) and idx[1].internal_date.tzinfo is not None
    infos = store.message_infos(inbox.id, [2, 1, 77])
    assert [i.uid for i in infos] == [1, 2]
    assert infos[0].metadata["envelope"]["subject"] == "one"
    assert infos[0].flags == idx[0].flags and infos[0].modseq == idx[0].modseq
    assert store.message_body(inbox.id, 2) == msg("two")
    assert list(store.iter_bodies(inbox.id, [2, 5, 1])) == [(1, msg("one")), (2, msg("two"))]
    with pytest.raises(NotFound):
        store.message_body(inbox.id, 5)
    with pytest.raises(NotFound):
        store.append(99999, msg())
    with pytest.raises(NotFound):
        store.index(99999)
    f = store.get_folder_by_id(inbox.id)
    assert f.uidnext == 3 and f.highestmodseq == r2.modseq
    assert store.mailbox_usage(mb.id) == (len(msg("one")) + len(msg("two")), 2)


def test_folder_status_and_recent(box: Any) -> None:
    store, mb, inbox = box
    store.append(inbox.id, msg("a"), flags=["\\Seen"])
    store.append(inbox.id, msg("b"))
    st = store.folder_status(inbox.id)
    assert (st.messages, st.unseen, st.recent) == (2, 1, 2)
    assert st.size == len(msg("a")) + len(msg("b")) and st.uidnext == 3
    assert store.claim_recent(inbox.id) == frozenset({1, 2})
    assert store.claim_recent(inbox.id) == frozenset()  # one session sees them recent
    assert store.folder_status(inbox.id).recent == 0
    store.append(inbox.id, msg("c"))
    assert store.claim_recent(inbox.id) == frozenset({3})
    with pytest.raises(NotFound):
        store.folder_status(99999)
    with pytest.raises(NotFound):
        store.claim_recent(99999)


def test_uid_modseq_monotonic(box: Any) -> None:
    store, mb, inbox = box
    last_uid = last_mod = 0
    for i in range(20):
        r = store.append(inbox.id, msg(str(i)))
        assert r.uid > last_uid and r.modseq > last_mod
        last_uid, last_mod = r.uid, r.modseq
        if i % 5 == 4:
            store.store_flags(inbox.id, [r.uid], FlagMode.ADD, ["\\Deleted"])
            assert store.expunge(inbox.id) == [r.uid]
            last_mod = store.get_folder_by_id(inbox.id).highestmodseq
    # expunged UIDs are never reused
    assert store.append(inbox.id, msg()).uid == 21


def test_store_flags_modes_and_unchangedsince(box: Any) -> None:
    store, mb, inbox = box
    for i in range(3):
        store.append(inbox.id, msg(str(i)))
    hms = store.get_folder_by_id(inbox.id).highestmodseq
    changes, failed = store.store_flags(inbox.id, [1, 2, 99], FlagMode.ADD, ["\\Flagged", "x"])
    assert failed == [] and [c.uid for c in changes] == [1, 2]
    assert changes[0].flags == frozenset({"\\Flagged", "x"}) and changes[0].modseq > hms
    # no-op: nothing changes, no new MODSEQ
    again, _ = store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\flagged"])
    assert again == []
    changes, _ = store.store_flags(inbox.id, [1], FlagMode.REMOVE, ["x"])
    assert changes[0].flags == frozenset({"\\Flagged"})
    changes, _ = store.store_flags(inbox.id, [2], FlagMode.REPLACE, ["\\Seen"])
    assert changes[0].flags == frozenset({"\\Seen"})
    idx = {e.uid: e for e in store.index(inbox.id)}
    assert idx[2].flags == frozenset({"\\Seen"}) and idx[2].modseq == changes[0].modseq
    assert store.get_folder_by_id(inbox.id).highestmodseq == changes[0].modseq
    # UNCHANGEDSINCE (RFC 7162): message 2 changed after idx[3].modseq
    changes, failed = store.store_flags(
        inbox.id, [2, 3], FlagMode.ADD, ["\\Answered"], unchanged_since=idx[3].modseq
    )
    assert failed == [2] and [c.uid for c in changes] == [3]


def test_expunge_and_changes_since(box: Any) -> None:
    store, mb, inbox = box
    for i in range(5):
        store.append(inbox.id, msg(str(i)))
    base = store.get_folder_by_id(inbox.id).highestmodseq
    store.store_flags(inbox.id, [2, 3, 4], FlagMode.ADD, ["\\Deleted"])
    assert store.expunge(inbox.id, [3, 4, 5]) == [3, 4]  # UID EXPUNGE
    store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Seen"])
    ch = store.changes_since(inbox.id, base)
    assert ch.expunged == (3, 4)
    assert [e.uid for e in ch.changed] == [1, 2]
    assert ch.highestmodseq == store.get_folder_by_id(inbox.id).highestmodseq
    assert ch.uidnext == 6
    assert store.expunge(inbox.id) == [2]
    assert store.expunge(inbox.id) == []
    assert [e.uid for e in store.index(inbox.id)] == [1, 5]
    assert store.mailbox_usage(mb.id) == (len(msg("0")) * 2, 2)
    top = store.changes_since(inbox.id, store.get_folder_by_id(inbox.id).highestmodseq)
    assert top.changed == () and top.expunged == ()
    with pytest.raises(NotFound):
        store.changes_since(99999, 0)


def test_message_ids_and_traced_expunge(box: Any) -> None:
    """The audit trail's Message-IDs come from the metadata stored at
    delivery; an expunge reports those of what it removed, read before the
    rows go (a body shared with a copy elsewhere is not needed for that)."""
    store, mb, inbox = box
    for i in range(4):
        store.append(inbox.id, msg(f"m{i}"))
    store.append(inbox.id, b"Subject: no id\r\n\r\nx\r\n")
    assert store.message_ids(inbox.id, [2, 1, 5, 99]) == {
        1: "<m0@hopital.test>", 2: "<m1@hopital.test>"}
    assert store.message_ids(inbox.id, []) == {}
    store.store_flags(inbox.id, [1, 2, 3, 5], FlagMode.ADD, ["\\Deleted"])
    done = store.expunge_traced(inbox.id, [2, 3, 4, 5])  # UID EXPUNGE
    assert done.uids == (2, 3, 5)
    assert done.message_ids == {2: "<m1@hopital.test>", 3: "<m2@hopital.test>"}
    capped = store.expunge_traced(inbox.id, max_ids=0)
    assert capped.uids == (1,) and capped.message_ids == {}
    assert store.expunge_traced(inbox.id).uids == ()
    assert [e.uid for e in store.index(inbox.id)] == [4]


def test_audit_message_ids_in_a_write_batch_come_from_the_metadata_cache(
    box: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STORE and EXPUNGE name their messages' Message-IDs while holding the
    write lock (in a write batch): metadata a client already had decoded is
    not decrypted and parsed again there, and a batch that rolls back leaves
    only correct entries (the cache is keyed by the encrypted blob)."""
    store, mb, inbox = box
    for i in range(3):
        store.append(inbox.id, msg(f"m{i}"))
    assert store.message_ids(inbox.id, [1, 2]) == {
        1: "<m0@hopital.test>", 2: "<m1@hopital.test>"}
    decrypted: list[str] = []
    real = store._decrypt
    monkeypatch.setattr(store, "_decrypt",
                        lambda key_id, blob, aad: decrypted.append(aad) or real(key_id, blob, aad))
    with store.write_batch() as batch:
        batch.call(store.store_flags, inbox.id, [1, 2, 3], FlagMode.ADD, ["\\Deleted"])
        done = batch.call(store.expunge_traced, inbox.id, [1, 2, 3])
    assert done.message_ids == {1: "<m0@hopital.test>", 2: "<m1@hopital.test>",
                                3: "<m2@hopital.test>"}
    assert len(decrypted) == 1  # only message 3's, never read before


def test_index_sees_changes_made_through_another_store(box: Any, open_any: Any) -> None:
    """The index must never serve a stale copy (other processes write too)."""
    store, mb, inbox = box
    for i in range(5):
        store.append(inbox.id, msg(str(i)))
    other = open_any()
    assert [e.uid for e in other.index(inbox.id)] == [1, 2, 3, 4, 5]
    store.store_flags(inbox.id, [2], FlagMode.ADD, ["\\Deleted"])
    store.expunge(inbox.id)
    store.append(inbox.id, msg("new"))
    store.store_flags(inbox.id, [4], FlagMode.ADD, ["\\Seen"])
    assert other.index(inbox.id) == store.index(inbox.id)
    assert [e.uid for e in other.index(inbox.id)] == [1, 3, 4, 5, 6]


def test_copy_move(box: Any) -> None:
    store, mb, inbox = box
    for i in range(3):
        store.append(inbox.id, msg(str(i)), flags=["\\Seen"] if i == 1 else [])
    store.claim_recent(inbox.id)
    dest = store.create_folder(mb.id, "Dossier")
    cr = store.copy(inbox.id, [3, 2, 42], dest.id)
    assert (cr.uidvalidity, cr.source_uids, cr.dest_uids) == (dest.uidvalidity, (2, 3), (1, 2))
    idx = store.index(dest.id)
    assert idx[0].flags == frozenset({"\\Seen"})
    assert store.message_body(dest.id, 2) == msg("2")
    assert store.claim_recent(dest.id) == frozenset({1, 2})  # \Recent in the destination
    assert len(store.index(inbox.id)) == 3
    base = store.get_folder_by_id(inbox.id).highestmodseq
    mr = store.move(inbox.id, [1, 2], dest.id)
    assert mr.source_uids == (1, 2) and mr.dest_uids == (3, 4)
    assert [e.uid for e in store.index(inbox.id)] == [3]
    assert store.changes_since(inbox.id, base).expunged == (1, 2)
    assert store.message_body(dest.id, 3) == msg("0")
    assert store.mailbox_usage(mb.id)[1] == 5
    assert store.copy(inbox.id, [99], dest.id).dest_uids == ()
    with pytest.raises(NotFound):
        store.copy(inbox.id, [3], 99999)
    with pytest.raises(NotFound):
        store.move(inbox.id, [3], 99999)


def test_move_between_mailboxes_moves_usage(box: Any) -> None:
    store, mb, inbox = box
    other = store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    oinbox = store.get_folder(other.id, "INBOX")
    store.append(inbox.id, msg())
    store.move(inbox.id, [1], oinbox.id)
    assert store.mailbox_usage(mb.id) == (0, 0)
    assert store.mailbox_usage(other.id) == (len(msg()), 1)


def test_shared_body_survives_until_last_copy(box: Any) -> None:
    store, mb, inbox = box
    dest = store.create_folder(mb.id, "Copy")
    store.append(inbox.id, msg("shared"))
    store.copy(inbox.id, [1], dest.id)
    store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Deleted"])
    store.expunge(inbox.id)
    assert store.message_body(dest.id, 1) == msg("shared")
    store.delete_folder(mb.id, "Copy")
    from sqlalchemy import func, select

    from storage.models import BodyRow

    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(BodyRow)).scalar() == 0


def test_quota(box: Any) -> None:
    store, mb, inbox = box
    size = len(msg())
    store.set_quota(mb.id, size * 2)
    store.append(inbox.id, msg())
    store.append(inbox.id, msg())
    with pytest.raises(QuotaExceeded):
        store.append(inbox.id, msg())
    with pytest.raises(QuotaExceeded):
        store.deliver(Delivery(msg(), (mb.id,)))
    dest = store.create_folder(mb.id, "D")
    with pytest.raises(QuotaExceeded):
        store.copy(inbox.id, [1], dest.id)
    store.move(inbox.id, [1], dest.id)  # a move inside the mailbox does not grow it
    assert store.mailbox_usage(mb.id) == (size * 2, 2)
    assert store.get_folder_by_id(inbox.id).uidnext == 3  # refused appends took no UID


def test_deliver_multi_recipient(box: Any) -> None:
    store, mb, inbox = box
    org = store.add_mailbox("cardio@hopital.test", MailboxType.ORG, quota_bytes=10)
    other = store.add_mailbox("urgences@hopital.test", MailboxType.ORG)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    res = store.deliver(Delivery(msg("multi"), (mb.id, other.id, mb.id), when, frozenset({"$X"})))
    assert [r.uid for r in res] == [1, 1]
    assert res[0].folder_id == inbox.id
    oinbox = store.get_folder(other.id, "INBOX")
    assert store.message_body(oinbox.id, 1) == msg("multi")
    assert store.index(oinbox.id)[0].internal_date == when
    assert store.index(inbox.id)[0].flags == frozenset({"$X"})
    # all or nothing: one mailbox over quota, nobody gets it
    with pytest.raises(QuotaExceeded):
        store.deliver(Delivery(msg("again"), (mb.id, org.id)))
    assert len(store.index(inbox.id)) == 1
    with pytest.raises(NotFound):
        store.deliver(Delivery(msg(), (mb.id, 99999)))
    assert len(store.index(inbox.id)) == 1
    assert store.deliver(Delivery(msg(), ())) == []


# ---------------------------------------------------------------- queue


def test_queue_lifecycle(any_store: Any) -> None:
    s = any_store
    dsn = DSNParams(
        ret="HDRS",
        envid="E1",
        notify={"x@ext.test": "FAILURE"},
        orcpt={"x@ext.test": "rfc822;x@ext.test"},
    )
    e = s.enqueue("a@hopital.test", ["x@ext.test", "y@ext.test"], msg("out"), dsn)
    assert e.recipients == ("x@ext.test", "y@ext.test") and e.attempts == 0 and e.dsn == dsn
    assert e.size == len(msg("out"))
    assert s.queue_body(e.id) == msg("out")
    now = datetime.now(UTC) + timedelta(seconds=1)
    due = s.due_entries(now)
    assert [d.id for d in due] == [e.id]
    assert s.due_entries(now) == []  # leased to the first worker
    later = now + timedelta(minutes=5)
    s.record_attempt(
        e.id, delivered=["x@ext.test"], failed=[], error="451 try later", next_attempt=later
    )
    [q] = s.list_queue()
    assert q.recipients == ("y@ext.test",) and q.attempts == 1 and q.last_error == "451 try later"
    assert q.next_attempt == later.replace(microsecond=q.next_attempt.microsecond)
    assert s.due_entries(now) == []  # not due yet
    s.retry_entry(e.id)
    assert [d.id for d in s.due_entries(datetime.now(UTC) + timedelta(seconds=1))] == [e.id]
    s.record_attempt(e.id, delivered=[], failed=["y@ext.test"], error="550", next_attempt=None)
    assert s.list_queue() == []
    with pytest.raises(NotFound):
        s.queue_body(e.id)
    for fn in (s.remove_entry, s.retry_entry, s.queue_body):
        with pytest.raises(NotFound):
            fn(e.id)
    with pytest.raises(NotFound):
        s.record_attempt(e.id, delivered=[], failed=[], error=None, next_attempt=None)


def test_queue_lease_expires_and_order(any_store: Any) -> None:
    s = any_store
    a = s.enqueue("", ["x@ext.test"], msg("a"))
    b = s.enqueue("s@hopital.test", ["y@ext.test"], msg("b"))
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert [d.id for d in s.due_entries(now, limit=1)] == [a.id]
    assert [d.id for d in s.due_entries(now)] == [b.id]
    assert [d.id for d in s.due_entries(now + timedelta(hours=1))] == [a.id, b.id]
    s.remove_entry(a.id)
    assert [q.id for q in s.list_queue()] == [b.id]
    assert s.list_queue()[0].sender == "s@hopital.test"


def test_queue_stats_count_entries_and_name_the_oldest(any_store: Any) -> None:
    s = any_store
    assert s.queue_stats() == (0, None)
    a = s.enqueue("", ["x@ext.test", "z@ext.test"], msg("a"))
    s.enqueue("s@hopital.test", ["y@ext.test"], msg("b"))
    count, oldest = s.queue_stats()
    assert count == 2
    assert oldest is not None and oldest.tzinfo is not None
    assert oldest == min(q.created for q in s.list_queue())
    assert datetime.now(UTC) - oldest < timedelta(minutes=1)
    s.remove_entry(a.id)
    assert s.queue_stats()[0] == 1


def test_queue_ids_are_never_reused(any_store: Any) -> None:
    """Audit events name a message by its queue id: a new entry must not take
    the id of one that was delivered or deleted (SQLite reuses the highest
    freed rowid unless the table is AUTOINCREMENT)."""
    s = any_store
    first = s.enqueue("a@hopital.test", ["x@ext.test"], msg("1"))
    newest = s.enqueue("a@hopital.test", ["x@ext.test"], msg("2"))
    s.remove_entry(newest.id)
    again = s.enqueue("a@hopital.test", ["x@ext.test"], msg("3"))
    assert again.id not in (first.id, newest.id)
    s.record_attempt(again.id, delivered=["x@ext.test"], failed=[], error=None,
                     next_attempt=None)
    last = s.enqueue("a@hopital.test", ["x@ext.test"], msg("4"))
    assert last.id not in (first.id, newest.id, again.id)


# ---------------------------------------------------------------- audit


def test_audit(any_store: Any) -> None:
    s = any_store
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        AuditEvent(
            t0 + timedelta(days=i), actor, "login", "imap", "allow", {"ip": "127.0.0.1", "n": i}
        )
        for i, actor in enumerate(["dr@hopital.test", "sec@hopital.test", "dr@hopital.test"])
    ]
    s.record_audit(events)
    s.record_audit([])
    assert s.audit_events() == events
    assert s.audit_events(actor="dr@hopital.test") == [events[0], events[2]]
    assert s.audit_events(since=t0 + timedelta(days=1)) == events[1:]
    assert s.audit_events(limit=1) == events[:1]
    assert s.purge_audit(t0 + timedelta(days=2)) == 2
    assert s.audit_events() == [events[2]]


def test_audit_queries(any_store: Any) -> None:
    """What `mssctl audit query` asks: by mailbox (the box and its folders,
    not a box whose name merely starts alike), action, actor (exact or
    prefix), a time window, and the newest N."""
    s = any_store
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        ("sec@hopital.test", "select", "Cardio@hopital.test/INBOX", "allow"),
        ("sec@hopital.test", "store", "cardio@hopital.test/Dossiers/2026", "ok"),
        ("admin:root", "mailbox-revoke", "cardio@hopital.test", "ok"),
        ("sec@hopital.test", "select", "cardio@hopital.test.evil/INBOX", "allow"),
        ("sec@hopital.test", "select", "cardiologue@hopital.test/INBOX", "allow"),
        ("admin:alice", "account-add", "x@hopital.test", "ok"),
        ("-", "login", "imaps", "deny"),
        ("a_b", "login", "imaps", "deny"),
    ]
    events = [AuditEvent(t0 + timedelta(minutes=i), a, act, t, r, {"i": i})
              for i, (a, act, t, r) in enumerate(rows)]
    s.record_audit(events)
    assert s.audit_events(mailbox="cardio@hopital.test") == events[:3]
    assert s.audit_events(mailbox="CARDIO@hopital.test", actions=["store", "mailbox-revoke"]) \
        == events[1:3]
    assert s.audit_events(actor="admin:", actor_prefix=True) == [events[2], events[5]]
    assert s.audit_events(actor="a_", actor_prefix=True) == [events[7]]  # "_" is literal
    # Case-sensitive on every backend (SQLite's LIKE ignores ASCII case).
    assert s.audit_events(actor="ADMIN:", actor_prefix=True) == []
    assert s.audit_events(since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=3)) \
        == events[1:3]
    assert s.audit_events(limit=2, newest=True) == events[-2:]
    assert s.audit_events(mailbox="imaps") == []


# ---------------------------------------------------------------- certificate pins

FP1, FP2, FP3 = "a1" * 32, "b2" * 32, "c3" * 32


def test_cert_pins(any_store: Any) -> None:
    s = any_store
    app = s.add_account("labo@hopital.test", "Labo", AccountClass.SYSTEM,
                        cert_subject="1750000001", cert_pins=[FP2, FP1, FP1])
    other = s.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    assert s.cert_pins(app.id) == [FP1, FP2]
    assert s.cert_pins(other.id) == []
    assert s.find_account_by_cert_pin(FP1) == app
    assert s.find_account_by_cert_pin(FP1.upper()) == app
    assert s.find_account_by_cert_pin(FP3) is None
    # One certificate, one account: the same pin again is refused, also when
    # it comes with a new account (which is then not created).
    with pytest.raises(AlreadyExists):
        s.add_cert_pin("dr@hopital.test", FP1)
    with pytest.raises(AlreadyExists):
        s.add_account("app2@hopital.test", "App 2", AccountClass.SYSTEM, cert_pins=[FP3, FP2])
    with pytest.raises(NotFound):
        s.get_account("app2@hopital.test")
    assert s.find_account_by_cert_pin(FP3) is None
    s.add_cert_pin("DR@hopital.test", FP3)
    assert s.find_account_by_cert_pin(FP3) == other
    for bad in ["", "g" * 64, FP1[:-1], FP1.upper(), "ab:" * 31 + "ab"]:
        with pytest.raises(ValueError):
            s.add_cert_pin("dr@hopital.test", bad)
    with pytest.raises(NotFound):
        s.add_cert_pin("nobody@hopital.test", "d4" * 32)
    with pytest.raises(NotFound):
        s.remove_cert_pins("nobody@hopital.test")
    assert s.remove_cert_pins("labo@hopital.test", FP3) == 0  # someone else's
    assert s.remove_cert_pins("labo@hopital.test", FP2) == 1
    assert s.cert_pins(app.id) == [FP1]
    s.add_cert_pin("labo@hopital.test", FP2)
    assert s.remove_cert_pins("labo@hopital.test") == 2
    assert s.cert_pins(app.id) == [] and s.find_account_by_cert_pin(FP1) is None
    assert s.cert_pins(other.id) == [FP3]


# ---------------------------------------------------------------- login throttling

ACC = (ThrottleScope.ACCOUNT, "sec@hopital.test")
ADDR = (ThrottleScope.ADDRESS, "192.0.2.7")


def _bump(when: datetime) -> Any:
    def update(key: Any, state: LoginFailures | None) -> LoginFailures:
        if state is None:
            return LoginFailures(key[0], key[1], when, (when,))
        return replace(state, last_failure=when, recent=(*state.recent, when))
    return update


def test_login_failures_lifecycle(any_store: Any) -> None:
    s = any_store
    t0 = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert s.login_failures([ACC, ADDR]) == []
    assert s.login_failures([]) == []
    first = s.update_login_failures([ACC, ADDR], _bump(t0))
    assert first == [LoginFailures(*ACC, t0, (t0,)), LoginFailures(*ADDR, t0, (t0,))]
    times = (t0 - timedelta(days=400), t0, t0 + timedelta(microseconds=1))
    locked = LoginFailures(*ADDR, times[-1], times, level=3,
                           locked_until=t0 + timedelta(minutes=4), refused=7)
    got = s.update_login_failures([ADDR], lambda key, state: locked)
    assert got == [locked]
    # Read back exactly (times to the microsecond, in order, time zone aware).
    assert sorted(s.login_failures([ACC, ADDR]), key=lambda f: f.scope.name) == [
        first[0], locked]
    assert s.login_failures([ADDR]) == [locked]
    # Another subject, and the same subject in the other scope, are other keys.
    assert s.login_failures([(ThrottleScope.ACCOUNT, "192.0.2.7"),
                             (ThrottleScope.ADDRESS, "other")]) == []
    seen: list[Any] = []

    def look(key: Any, state: LoginFailures | None) -> LoginFailures | None:
        seen.append((key, state))
        return state  # None stays absent: nothing is created

    missing = (ThrottleScope.ACCOUNT, "nobody@hopital.test")
    assert s.update_login_failures([ADDR, missing], look) == [locked, None]
    assert seen == [(missing, None), (ADDR, locked)]  # one fixed lock order
    assert s.login_failures([missing]) == []
    assert [f.subject for f in s.list_login_failures()] == [ACC[1], ADDR[1]]
    assert s.list_login_failures(ThrottleScope.ADDRESS) == [locked]
    # None deletes; clear returns what was there.
    assert s.update_login_failures([ACC], lambda key, state: None) == [None]
    assert s.login_failures([ACC]) == []
    assert s.clear_login_failures(ADDR) == locked
    assert s.clear_login_failures(ADDR) is None
    with pytest.raises(ValueError):
        s.update_login_failures([(ThrottleScope.ACCOUNT, "x" * 321)], _bump(t0))
    with pytest.raises(ValueError):  # a state for another key: nothing is written
        s.update_login_failures([ACC], lambda key, state: LoginFailures(*ADDR, t0))
    assert s.list_login_failures() == []


def test_purge_login_failures(any_store: Any) -> None:
    s = any_store
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    old = (ThrottleScope.ADDRESS, "192.0.2.1")
    still_locked = (ThrottleScope.ACCOUNT, "locked@hopital.test")
    recent = (ThrottleScope.ACCOUNT, "recent@hopital.test")
    s.update_login_failures([old], _bump(t0))
    s.update_login_failures([still_locked], lambda k, st: LoginFailures(
        *k, t0, (t0,), level=1, locked_until=t0 + timedelta(hours=2)))
    s.update_login_failures([recent], _bump(t0 + timedelta(hours=2)))
    assert s.purge_login_failures(t0 + timedelta(minutes=90)) == 1
    assert [f.subject for f in s.list_login_failures()] == [still_locked[1], recent[1]]
    assert s.purge_login_failures(t0 + timedelta(hours=3)) == 2
    assert s.list_login_failures() == []


def test_update_login_failures_is_atomic_across_stores(any_store: Any, open_any: Any) -> None:
    """Two stores (as two worker processes) counting failures of the same
    keys at once lose none: each update reads the other's last write."""
    import threading

    stores = [any_store, open_any()]
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    rounds = 25
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def work(store: Any) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                store.update_login_failures([ADDR, ACC], _bump(t0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {f.subject: len(f.recent) for f in any_store.list_login_failures()} == {
        ACC[1]: len(stores) * rounds, ADDR[1]: len(stores) * rounds}


# ---------------------------------------------------------------- keys


def test_reencrypt_after_adding_a_key(box: Any, key_file: Any, open_any: Any) -> None:
    from storage.crypto import KeyRing, add_key

    store, mb, inbox = box
    for i in range(3):
        store.append(inbox.id, msg(str(i)))
    e = store.enqueue("a@hopital.test", ["x@ext.test"], msg("q"))
    assert store.reencrypt() == 0  # everything already under the current key
    new_id = add_key(key_file)
    assert KeyRing.load(key_file).current_id == new_id
    other = open_any()  # opened after the rotation
    assert store.reencrypt(batch=2) == 2  # rows: 2 bodies
    assert store.reencrypt(batch=2) == 2  # 1 body, 1 sort keys row
    assert store.reencrypt(batch=3) == 3  # 2 sort keys rows, the queue entry
    assert store.reencrypt() == 0
    from sqlalchemy import select

    from storage.models import BodyRow, QueueRow, SortKeysRow

    with store.engine.connect() as c:
        assert set(c.execute(select(BodyRow.key_id)).scalars()) == {new_id}
        assert set(c.execute(select(SortKeysRow.key_id)).scalars()) == {new_id}
        assert set(c.execute(select(QueueRow.key_id)).scalars()) == {new_id}
    for s in (store, other):
        assert [b for _, b in s.iter_bodies(inbox.id, [1, 2, 3])] == [msg("0"), msg("1"), msg("2")]
        assert s.message_infos(inbox.id, [1])[0].metadata["envelope"]["subject"] == "0"
        assert s.queue_body(e.id) == msg("q")


# ---------------------------------------------------------------- private \Seen

SEEN = frozenset({"\\Seen"})


@pytest.fixture
def cardio(any_store: Any) -> Any:
    """(store, secretary A, secretary B, ORG mailbox with private \\Seen, its INBOX)."""
    a = any_store.add_account("sec.a@hopital.test", "A", AccountClass.STAFF)
    b = any_store.add_account("sec.b@hopital.test", "B", AccountClass.STAFF)
    mb = any_store.add_mailbox("cardio@hopital.test", MailboxType.ORG, private_seen=True)
    return any_store, a, b, mb, any_store.get_folder(mb.id, "INBOX")


def _flags(store: Any, folder_id: int, account: Any) -> dict[int, frozenset[str]]:
    cols = store.index_columns(folder_id, seen_account=account.id if account else None)
    return dict(zip(cols.uids, cols.flags, strict=True))


def test_private_seen_setting(any_store: Any) -> None:
    mb = any_store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    assert not mb.private_seen and not any_store.get_mailbox(mb.address).private_seen
    any_store.set_private_seen("CARDIO@hopital.test", True)
    assert any_store.get_mailbox(mb.address).private_seen
    assert any_store.get_mailbox_by_id(mb.id).private_seen
    assert [m.private_seen for m in any_store.list_mailboxes()] == [True]
    any_store.set_private_seen(mb.address, False)
    assert not any_store.get_mailbox(mb.address).private_seen
    other = any_store.add_mailbox("urgences@hopital.test", MailboxType.ORG, private_seen=True)
    assert other.private_seen and any_store.get_mailbox(other.address) == other
    with pytest.raises(NotFound):
        any_store.set_private_seen("nobody@hopital.test", True)


def test_private_seen_is_per_account(cardio: Any) -> None:
    store, a, b, _, inbox = cardio
    r1 = store.append(inbox.id, msg("one"))
    r2 = store.append(inbox.id, msg("two"), flags=["\\Seen", "\\Flagged"], seen_account=a.id)
    # On the message: the shared flags only.
    assert _flags(store, inbox.id, None) == {1: frozenset(), 2: frozenset({"\\Flagged"})}
    changes, _ = store.store_flags(inbox.id, [r1.uid], FlagMode.ADD, ["\\Seen"],
                                   seen_account=b.id)
    assert [(c.uid, c.flags) for c in changes] == [(1, SEEN)] and changes[0].modseq > r2.modseq
    # A private change bumps the message's and the folder's MODSEQ for everyone.
    assert store.get_folder_by_id(inbox.id).highestmodseq == changes[0].modseq
    assert _flags(store, inbox.id, a) == {1: frozenset(), 2: frozenset({"\\Seen", "\\Flagged"})}
    assert _flags(store, inbox.id, b) == {1: SEEN, 2: frozenset({"\\Flagged"})}
    assert {e.uid: e.flags for e in store.index(inbox.id, seen_account=b.id)} == \
        _flags(store, inbox.id, b)
    assert [i.flags for i in store.message_infos(inbox.id, [1, 2], seen_account=a.id)] == \
        [frozenset(), frozenset({"\\Seen", "\\Flagged"})]
    assert store.folder_status(inbox.id, seen_account=a.id).unseen == 1
    assert store.folder_status(inbox.id, seen_account=b.id).unseen == 1
    assert store.folder_status(inbox.id).unseen == 2
    # Another session of each learns what changed, as its account sees it.
    since = store.changes_since(inbox.id, r2.modseq, seen_account=b.id)
    assert [(e.uid, e.flags) for e in since.changed] == [(1, SEEN)]
    since = store.changes_since(inbox.id, r2.modseq, seen_account=a.id)
    assert [(e.uid, e.flags) for e in since.changed] == [(1, frozenset())]
    # Adding \Seen again is no change: no new MODSEQ.
    again, _ = store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Seen"], seen_account=b.id)
    assert again == []
    # Other flags stay shared; a replace sets B's own \Seen, not A's.
    changes, _ = store.store_flags(inbox.id, [2], FlagMode.REPLACE, ["\\Answered", "\\Seen"],
                                   seen_account=b.id)
    assert changes[0].flags == frozenset({"\\Answered", "\\Seen"})
    assert _flags(store, inbox.id, a)[2] == frozenset({"\\Answered", "\\Seen"})
    changes, _ = store.store_flags(inbox.id, [2], FlagMode.REMOVE, ["\\Seen"], seen_account=a.id)
    assert changes[0].flags == frozenset({"\\Answered"})
    assert _flags(store, inbox.id, b)[2] == frozenset({"\\Answered", "\\Seen"})
    assert _flags(store, inbox.id, a)[2] == frozenset({"\\Answered"})
    # UNCHANGEDSINCE still applies (to the message's MODSEQ).
    changes, failed = store.store_flags(inbox.id, [1, 2], FlagMode.ADD, ["\\Seen"],
                                        unchanged_since=r2.modseq, seen_account=a.id)
    assert failed == [1, 2] and changes == []


def test_private_seen_goes_and_moves_with_the_message(cardio: Any) -> None:
    store, a, b, mb, inbox = cardio
    for i in range(3):
        store.append(inbox.id, msg(f"m{i}"), flags=["\\Seen"], seen_account=a.id)
    store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Deleted"], seen_account=b.id)
    assert store.expunge(inbox.id) == [1]
    # Had A's row for UID 1 stayed, she would count one read message too many.
    st = store.folder_status(inbox.id, seen_account=a.id)
    assert (st.messages, st.unseen) == (2, 0)
    assert store.folder_status(inbox.id, seen_account=b.id).unseen == 2
    # MOVE within the box: A's \Seen goes with the message; B's state stays hers.
    archive = store.get_folder(mb.id, "Archive")
    moved = store.move(inbox.id, [2], archive.id, seen_account=a.id, dest_seen_account=a.id)
    assert _flags(store, archive.id, a) == {moved.dest_uids[0]: SEEN}
    assert _flags(store, archive.id, b) == {moved.dest_uids[0]: frozenset()}
    assert store.folder_status(inbox.id, seen_account=a.id).unseen == 0
    # COPY out to a shared-seen mailbox: the copier's \Seen becomes the shared flag.
    per = store.add_mailbox("sec.a.box@hopital.test", MailboxType.PER, owner_account_id=a.id)
    per_inbox = store.get_folder(per.id, "INBOX")
    copied = store.copy(inbox.id, [3], per_inbox.id, seen_account=b.id)
    assert _flags(store, per_inbox.id, None) == {copied.dest_uids[0]: frozenset()}
    copied = store.copy(inbox.id, [3], per_inbox.id, seen_account=a.id)
    assert _flags(store, per_inbox.id, None)[copied.dest_uids[0]] == SEEN
    # COPY in from a shared-seen mailbox: the copier's private \Seen, nobody else's.
    back = store.copy(per_inbox.id, list(copied.dest_uids), inbox.id, dest_seen_account=b.id)
    assert _flags(store, inbox.id, b)[back.dest_uids[0]] == SEEN
    assert _flags(store, inbox.id, a)[back.dest_uids[0]] == frozenset()
    assert _flags(store, inbox.id, None)[back.dest_uids[0]] == frozenset()
    # Renaming INBOX moves the messages, and the agents' states with them.
    store.rename_folder(mb.id, "INBOX", "Old")
    old = store.get_folder(mb.id, "Old")
    assert _flags(store, old.id, a) == {3: SEEN, back.dest_uids[0]: frozenset()}
    assert _flags(store, old.id, b) == {3: frozenset(), back.dest_uids[0]: SEEN}
    store.delete_folder(mb.id, "Old")
    assert store.folder_status(archive.id, seen_account=a.id).unseen == 0


# ------------------------------------------------- folder grants (RFC 4314)


def test_folder_grants_sit_beside_the_mailbox_grant(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    whole = store.set_grant(agent.id, mb.id, "lr", send_as=True)
    inbox = store.set_grant(agent.id, mb.id, "w", folder="inbox", send_as=True)
    assert (inbox.folder, inbox.rights, inbox.send_as) == ("INBOX", "w", False)
    assert store.grants_for_mailbox(mb.id) == [whole, inbox]
    assert store.grants_for_account(agent.id) == [whole, inbox]
    assert store.mailbox_access(agent.id).shared == [(whole, mb), (inbox, mb)]
    # Each is replaced and removed on its own.
    sent = store.set_grant(agent.id, mb.id, "lrs", folder="Sent")
    inbox2 = store.set_grant(agent.id, mb.id, "ws", folder="INBOX")
    assert store.grants_for_mailbox(mb.id) == [whole, sent, inbox2]
    assert store.set_grant(agent.id, mb.id, "", folder="INBOX").folder == "INBOX"
    assert store.grants_for_mailbox(mb.id) == [whole, sent]
    store.set_grant(agent.id, mb.id, "", send_as=False)
    assert store.grants_for_mailbox(mb.id) == [sent]
    with pytest.raises(InvalidName):
        store.set_grant(agent.id, mb.id, "lr", folder="a//b")


def test_folder_grants_follow_rename_and_go_with_delete(box: Any) -> None:
    store, mb, _ = box
    agent = store.add_account("agent@hopital.test", "Agent", AccountClass.STAFF)
    store.create_folder(mb.id, "Projets/2026")
    store.set_grant(agent.id, mb.id, "lr", folder="Projets")
    store.set_grant(agent.id, mb.id, "lrw", folder="Projets/2026")
    store.set_grant(agent.id, mb.id, "lr", folder="INBOX")
    store.rename_folder(mb.id, "Projets", "Dossiers")
    assert sorted((g.folder, g.rights) for g in store.grants_for_mailbox(mb.id)) == [
        ("Dossiers", "lr"), ("Dossiers/2026", "lrw"), ("INBOX", "lr")]
    # RENAME INBOX moves its messages, not INBOX: its grant stays.
    store.rename_folder(mb.id, "INBOX", "Old")
    assert "INBOX" in [g.folder for g in store.grants_for_mailbox(mb.id)]
    # A deleted folder's grant goes; made again, it has none.
    store.delete_folder(mb.id, "Dossiers/2026")
    store.create_folder(mb.id, "Dossiers/2026")
    assert sorted(g.folder for g in store.grants_for_mailbox(mb.id)) == ["Dossiers", "INBOX"]


def test_uidvalidity_is_unique_across_mailboxes(any_store: Any) -> None:
    """Clients that cache by UIDVALIDITY (or share a cache between the
    accounts of one agent) expect no two folders of the server to share one:
    two mailboxes made in the same second used to."""
    a = any_store.add_account("a@hopital.test", "A", AccountClass.STAFF)
    boxes = [any_store.add_mailbox("a@hopital.test", MailboxType.PER, owner_account_id=a.id),
             any_store.add_mailbox("cardiologie@hopital.test", MailboxType.ORG),
             any_store.add_mailbox("pneumologie@hopital.test", MailboxType.ORG)]
    for mb in boxes:
        any_store.create_folder(mb.id, "Projets")
    values = [f.uidvalidity for mb in boxes for f in any_store.list_folders(mb.id)]
    assert len(values) == len(set(values)) == 3 * (len(DEFAULT_FOLDERS) + 1)
    # a folder made again gets a value above every other
    any_store.delete_folder(boxes[0].id, "Projets")
    any_store.create_folder(boxes[0].id, "Projets")
    assert any_store.get_folder(boxes[0].id, "Projets").uidvalidity > max(values)


def test_recent_uids_are_read_without_claiming(box: Any) -> None:
    store, mb, inbox = box
    store.deliver(Delivery(raw=msg("r1"), mailbox_ids=(mb.id,)))
    store.deliver(Delivery(raw=msg("r2"), mailbox_ids=(mb.id,)))
    assert store.recent_uids(inbox.id) == frozenset({1, 2})
    assert store.recent_uids(inbox.id) == frozenset({1, 2})  # still there
    assert store.claim_recent(inbox.id) == frozenset({1, 2})
    assert store.recent_uids(inbox.id) == frozenset()
    with pytest.raises(NotFound):
        store.recent_uids(9999)


def test_check_keys_names_key_ids_the_key_file_cannot_read(
        any_store: Any, store_url: str, tmp_path: Any) -> None:
    """A database opened with another key file (restored without its own):
    `check_keys` names each key id and kind it cannot read; with the right
    key file, nothing."""
    from storage import open_store
    from storage.crypto import add_key, generate_key_file

    assert any_store.check_keys() == []  # nothing stored yet
    acc = any_store.add_account("a@hopital.test", "A", AccountClass.STAFF)
    mb = any_store.add_mailbox("a@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    any_store.deliver(Delivery(msg(), (mb.id,)))
    any_store.enqueue("a@hopital.test", ["b@ailleurs.test"], msg())
    any_store.set_totp_secret(acc.id, b"0123456789abcdef0123")
    assert any_store.check_keys() == []

    other = tmp_path / "other-keys"
    generate_key_file(other)  # also "k1", another key
    stranger = open_store(store_url, other)
    try:
        assert stranger.check_keys() == [
            "key k1 of the key file does not decrypt the stored messages "
            "(another key under the same id)",
            "key k1 of the key file does not decrypt the stored sort keys "
            "(another key under the same id)",
            "key k1 of the key file does not decrypt the stored queued messages "
            "(another key under the same id)",
            "key k1 of the key file does not decrypt the stored one-time code secrets "
            "(another key under the same id)",
        ]
    finally:
        stranger.close()
    other.unlink()
    generate_key_file(other)
    add_key(other)  # k1 (wrong) and k2 (current)
    stranger = open_store(store_url, other)
    try:
        stranger.deliver(Delivery(msg("second"), (mb.id,)))  # under k2: readable
        problems = stranger.check_keys()
    finally:
        stranger.close()
    assert problems[0].startswith("key k1 of the key file does not decrypt the stored messages")
    assert len(problems) == 4
    assert {"key k2 of the stored messages is not in the key file",
            "key k2 of the stored sort keys is not in the key file"} <= set(any_store.check_keys())


def test_name_events_newer_than_the_last_read_come_first(
        box: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read returns at most `BATCH` events. On PostgreSQL it also returns
    those recorded in the last `GRACE` (a late commit is not missed): after a
    burst of more than a batch within that window, the events past the last
    id read must still come first, not the batch of already-read ones again
    (they did not, and new name changes waited for the burst to age out)."""
    import storage.names

    monkeypatch.setattr(storage.names, "BATCH", 5)
    store, mb, _ = box
    start, _ = store.name_events_since(None)
    for i in range(6):
        store.create_folder(mb.id, f"Lot{i}")
    last, first = store.name_events_since(start)
    assert [e.name for e in first] == [f"Lot{i}" for i in range(5)]
    store.create_folder(mb.id, "Nouveau")
    _, then = store.name_events_since(last)
    assert [e.name for e in then if e.id > last] == ["Lot5", "Nouveau"]


def test_name_events_record_each_folder_name_change(box: Any) -> None:
    """create/rename/delete/subscribe record one name event each, in their
    transaction (NOTIFY MailboxName across processes); a refused change
    records none; `after` None gives where to start."""
    store, mb, _ = box
    start, events = store.name_events_since(None)
    assert events == []
    store.create_folder(mb.id, "Projets")
    store.rename_folder(mb.id, "Projets", "Dossiers")
    store.set_subscribed(mb.id, "Dossiers", True)
    store.set_subscribed(mb.id, "Dossiers", False)
    store.delete_folder(mb.id, "Dossiers")
    with pytest.raises(AlreadyExists):
        store.create_folder(mb.id, "Sent")
    last, events = store.name_events_since(start)
    assert [(e.mailbox_id, e.name, e.old_name, e.deleted, e.subscribed, e.origin)
            for e in events] == [
        (mb.id, "Projets", None, False, None, store.origin),
        (mb.id, "Dossiers", "Projets", False, None, store.origin),
        (mb.id, "Dossiers", None, False, True, store.origin),
        (mb.id, "Dossiers", None, False, False, store.origin),
        (mb.id, "Dossiers", None, True, None, store.origin),
    ]
    assert last == events[-1].id and store.name_events_since(None)[0] == last
    assert all(e.id > start for e in events)
