"""policy.decisions.Policy against a real SQLite store and the dev PKI."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from store_support import copy_store_template

from conf.settings import ListenerRole, PolicySettings
from policy.audit import FileAuditSink
from policy.decisions import ALL_RIGHTS, Identity, Peer, Policy, Verdict
from policy.passwords import hash_password
from policy.whitelist import Whitelist
from storage.interface import AccountClass, MailboxType

D = "hopital.test"
PRACTITIONER_PW = "correct horse 1"
STAFF_PW = "battery staple 2"


def load_cert(ic) -> x509.Certificate:
    return x509.load_pem_x509_certificates(ic.cert.read_bytes())[0]


@dataclass
class World:
    policy: Policy
    audit: FileAuditSink
    store: Any
    accounts: dict[str, Any]
    mailboxes: dict[str, Any]
    pki: Any
    tmp_path: Any

    def identity(self, key: str, method: str = "password") -> Identity:
        return Identity(self.accounts[key], method)

    def events(self) -> list[Any]:
        return list(self.audit.events)


# Production defaults, except that staff may also use a password alone and
# an employee card (sec.dupont).
STAFF_METHODS = {"staff": ["password", "password+totp", "token", "card"]}


def make_world(tmp_path, dev_pki, settings_factory, store, **policy_kw) -> World:
    if "password_login_classes" not in policy_kw:
        policy_kw.setdefault("login_methods", STAFF_METHODS)
    settings = settings_factory(tmp_path, policy=PolicySettings(**policy_kw))
    audit = FileAuditSink(tmp_path / "audit.log")
    h_prac, h_staff = hash_password(PRACTITIONER_PW, n=2**10), hash_password(STAFF_PW, n=2**10)
    org_subject = dev_pki.organisation.subject
    acc = {
        "martin": store.add_account(f"dr.martin@{D}", "Dr Martin", AccountClass.PRACTITIONER,
                                    idnat="810002813839", password_hash=h_prac),
        "durand": store.add_account(f"sec.durand@{D}", "S Durand", AccountClass.STAFF,
                                    password_hash=h_staff),
        "reader": store.add_account(f"sec.reader@{D}", "R", AccountClass.STAFF,
                                    password_hash=h_staff),
        "stranger": store.add_account(f"stranger@{D}", "X", AccountClass.STAFF,
                                      password_hash=h_staff),
        "gone": store.add_account(f"gone@{D}", "Gone", AccountClass.STAFF, password_hash=h_staff),
        "labo": store.add_account(f"labo@{D}", "Labo", AccountClass.SYSTEM,
                                  cert_subject=org_subject),
        "cpe": store.add_account(f"sec.dupont@{D}", "C Dupont", AccountClass.STAFF,
                                 idnat="3760021832/000000018"),
        # The structure's own OU, bound to an APP box: a card of that structure
        # must NOT log in as it.
        "structure": store.add_account(f"structure@{D}", "Structure", AccountClass.SYSTEM,
                                       cert_subject="1750000001"),
    }
    store.set_account_active(f"gone@{D}", False)
    mb = {}
    for key in ("martin", "durand", "reader", "stranger", "labo"):
        a = acc[key]
        mb[key] = store.add_mailbox(a.login, MailboxType.APP if key == "labo" else MailboxType.PER,
                                    owner_account_id=a.id)
    mb["cardio"] = store.add_mailbox(f"cardiologie@{D}", MailboxType.ORG, responsible="Cardio")
    mb["closed"] = store.add_mailbox(f"closed@{D}", MailboxType.ORG)
    store.set_mailbox_active(f"closed@{D}", False)
    store.set_grant(acc["durand"].id, mb["cardio"].id, ALL_RIGHTS, send_as=True)
    store.set_grant(acc["reader"].id, mb["cardio"].id, "lr")
    wl = Whitelist.parse(
        b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
        b"<DateDeGeneration>x</DateDeGeneration><ListeDomaines>"
        b"<Domaine><Nom>operateur-pair.test</Nom><DNCertificatOperateur>"
        + dev_pki.peer_operator.subject.encode()
        + b"</DNCertificatOperateur></Domaine>"
        b"<Domaine><Nom>autre.test</Nom><DNCertificatOperateur>CN=mx.autre.test,OU=1,O=A,ST=B,C=FR"
        b"</DNCertificatOperateur></Domaine>"
        b"</ListeDomaines></ListeBlancheMSSante>"
    )
    policy = Policy(settings, store, audit, wl)
    return World(policy, audit, store, acc, mb, dev_pki, tmp_path)


@pytest.fixture
def world(tmp_path, dev_pki, settings_factory, store):
    w = make_world(tmp_path, dev_pki, settings_factory, store)
    yield w
    w.audit.close()


def peer(role=ListenerRole.IMAP, cert=None, listener="imaps") -> Peer:
    return Peer("127.0.0.1", 40000, listener, role, tls=True, tls_version="TLSv1.2",
                cipher="ECDHE-RSA-AES256-GCM-SHA384", client_cert=cert)


class OneEvent:
    """Asserts that the block records exactly one audit event and returns it."""

    def __init__(self, w: World) -> None:
        self.w = w

    def __enter__(self) -> OneEvent:
        self.before = len(self.w.audit.events)
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            new = self.w.audit.events[self.before:]
            assert len(new) == 1, new
            self.event = new[0]


# ---------------------------------------------------------------- password


def test_password_ok(world):
    with OneEvent(world) as ev:
        r = world.policy.authenticate_password(peer(), " SEC.Durand@hopital.test ", STAFF_PW)
    assert r.identity is not None and r.identity.account.login == f"sec.durand@{D}"
    assert r.identity.method == "password"
    assert (ev.event.actor, ev.event.action, ev.event.result) == (f"sec.durand@{D}", "login", "allow")
    assert ev.event.details["method"] == "password"


@pytest.mark.parametrize(("login", "pw", "reason"), [
    (f"sec.durand@{D}", "wrong", "bad-credentials"),
    (f"nobody@{D}", STAFF_PW, "bad-credentials"),
    (f"labo@{D}", "", "bad-credentials"),  # no password at all
    (f"gone@{D}", STAFF_PW, "account-disabled"),
    (f"dr.martin@{D}", PRACTITIONER_PW, "method-not-allowed"),  # class not in the list
])
def test_password_refused(world, login, pw, reason):
    with OneEvent(world) as ev:
        r = world.policy.authenticate_password(peer(), login, pw)
    assert r.identity is None
    assert r.decision.verdict is Verdict.DENY and r.decision.reason == reason
    assert ev.event.result == "deny" and ev.event.details["reason"] == reason
    assert ev.event.actor == login
    log = (world.tmp_path / "audit.log").read_text()
    assert STAFF_PW not in log and PRACTITIONER_PW not in log


def test_password_classes_are_a_policy_choice(tmp_path, dev_pki, settings_factory, store):
    w = make_world(tmp_path, dev_pki, settings_factory, store,
                   password_login_classes=["practitioner"])
    assert w.policy.authenticate_password(peer(), f"dr.martin@{D}", PRACTITIONER_PW).identity
    r = w.policy.authenticate_password(peer(), f"sec.durand@{D}", STAFF_PW)
    assert r.decision.reason == "method-not-allowed"


# ---------------------------------------------------------------- EXTERNAL


def test_external_practitioner_card_by_idnat(world):
    card = load_cert(world.pki.practitioner)
    with OneEvent(world) as ev:
        r = world.policy.authenticate_certificate(peer(cert=card), None)
    assert r.identity is not None and r.identity.account.login == f"dr.martin@{D}"
    assert r.identity.method == "external"
    assert "810002813839" in r.identity.cert_subject
    assert ev.event.actor == f"dr.martin@{D}" and ev.event.details["cert"] == r.identity.cert_subject


@pytest.mark.parametrize("authzid", ["", f"dr.martin@{D}", f"Dr.Martin@{D.upper()}"])
def test_external_authzid_forms_accepted(world, authzid):
    # Thunderbird sends the login as authzid; others send "=" (empty).
    card = load_cert(world.pki.practitioner)
    r = world.policy.authenticate_certificate(peer(cert=card), authzid)
    assert r.identity is not None and r.identity.account.login == f"dr.martin@{D}"


def test_external_authzid_mismatch(world):
    card = load_cert(world.pki.practitioner)
    with OneEvent(world) as ev:
        r = world.policy.authenticate_certificate(peer(cert=card), f"sec.durand@{D}")
    assert r.identity is None and r.decision.reason == "authzid-mismatch"
    assert ev.event.details["requested"] == f"sec.durand@{D}"
    assert "810002813839" in ev.event.actor


def test_external_employee_card_by_idnat_not_by_ou(world):
    r = world.policy.authenticate_certificate(peer(cert=load_cert(world.pki.employee)), None)
    assert r.identity is not None and r.identity.account.login == f"sec.dupont@{D}"


def test_organisation_certificate_by_subject(world):
    org = load_cert(world.pki.organisation)
    r = world.policy.authenticate_certificate(peer(cert=org, listener="submission"), f"labo@{D}")
    assert r.identity is not None and r.identity.account.login == f"labo@{D}"



def ou_only_policy(tmp_path, settings_factory, audit, template) -> Policy:
    """A second store where only the organisation id 1750000001 is bound (to app@)."""
    from storage import open_store

    d = tmp_path / "ou-only"
    d.mkdir()
    s = open_store(*copy_store_template(template, d))
    s.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject="1750000001")
    return Policy(settings_factory(tmp_path), s, audit, None)


def test_organisation_certificate_by_organisation_id(world, settings_factory, store_template):
    pol = ou_only_policy(world.tmp_path, settings_factory, world.audit, store_template)
    r = pol.authenticate_certificate(peer(cert=load_cert(world.pki.organisation)), None)
    assert r.identity is not None and r.identity.account.login == f"app@{D}"
    pol.store.close()


@pytest.mark.parametrize("who", ["employee", "server"])
def test_card_or_server_never_maps_through_its_ou(world, settings_factory, store_template, who):
    # The employee card and our server certificate carry OU=1750000001 too: a
    # member of the structure must not become the structure's APP box.
    pol = ou_only_policy(world.tmp_path, settings_factory, world.audit, store_template)
    r = pol.authenticate_certificate(peer(cert=load_cert(getattr(world.pki, who))), None)
    assert r.identity is None and r.decision.reason == "unknown-certificate"
    pol.store.close()


def test_external_unknown_and_missing_certificate(world):
    with OneEvent(world) as ev:
        r = world.policy.authenticate_certificate(peer(cert=load_cert(world.pki.peer_operator)), None)
    assert r.decision.reason == "unknown-certificate"
    assert ev.event.actor == world.pki.peer_operator.subject
    with OneEvent(world) as ev:
        r = world.policy.authenticate_certificate(peer(cert=None), f"dr.martin@{D}")
    assert r.decision.reason == "no-certificate"


def test_external_disabled_account(world):
    world.store.set_account_active(f"dr.martin@{D}", False)
    r = world.policy.authenticate_certificate(peer(cert=load_cert(world.pki.practitioner)), None)
    assert r.identity is None and r.decision.reason == "account-disabled"


# ---------------------------------------------------------------- SMTP


def smtp(role):
    return peer(role=role, listener=role.value)


def test_check_sender_submission(world):
    p = smtp(ListenerRole.SUBMISSION)
    durand = world.identity("durand")
    with OneEvent(world) as ev:
        assert world.policy.check_sender(p, durand, f"sec.durand@{D}").allowed
    assert ev.event.actor == f"sec.durand@{D}" and ev.event.action == "mail"
    # agents answer from the functional box they may send as
    assert world.policy.check_sender(p, durand, f"Cardiologie@{D}").allowed
    # a read-only agent may not, nor one holding RFC 4314 "p" without send-as
    assert world.policy.check_sender(p, world.identity("reader"), f"cardiologie@{D}").reason \
        == "sender-not-owned"
    world.store.set_grant(world.accounts["reader"].id, world.mailboxes["cardio"].id, "lrp")
    assert world.policy.check_sender(p, world.identity("reader"), f"cardiologie@{D}").reason \
        == "sender-not-owned"
    assert world.policy.check_sender(p, durand, f"dr.martin@{D}").reason == "sender-not-owned"
    with OneEvent(world) as ev:
        assert world.policy.check_sender(p, None, f"sec.durand@{D}").reason == "auth-required"
    assert ev.event.actor == "127.0.0.1"


def test_from_header_and_send_as(world):
    p = smtp(ListenerRole.SUBMISSION)
    durand = world.identity("durand")
    pol = world.policy
    with OneEvent(world) as ev:
        own = pol.check_from_header(p, durand, [f"sec.durand@{D}"], "<m1@x>")
    assert own.decision.allowed and own.sender is None and ev.event.action == "from"
    with OneEvent(world) as ev:
        box = pol.check_from_header(p, durand, [f"cardiologie@{D}"], "<m2@x>")
    assert box.decision.allowed and box.sender == f"sec.durand@{D}"
    assert (ev.event.action, ev.event.target, ev.event.details["message_id"]) == (
        "send-as", f"cardiologie@{D}", "<m2@x>")
    with OneEvent(world) as ev:
        other = pol.check_from_header(p, durand, [f"dr.martin@{D}"], "<m3@x>")
    assert other.decision.reason == "from-not-owned" and ev.event.result == "deny"
    assert pol.check_from_header(p, durand, None, None).decision.reason == "from-unreadable"
    # a send-as grant out of its window does not count
    now = pol.now()
    world.store.set_grant(durand.account.id, world.mailboxes["cardio"].id, ALL_RIGHTS,
                          valid_until=now - dt.timedelta(seconds=1), send_as=True)
    assert pol.check_from_header(p, durand, [f"cardiologie@{D}"], None).decision.reason \
        == "from-not-owned"


def test_check_sender_mx(world):
    p = smtp(ListenerRole.MX)
    assert world.policy.check_sender(p, None, "someone@operateur-pair.test").allowed
    assert world.policy.check_sender(p, None, "").allowed  # bounces
    assert world.policy.check_sender(p, None, f"dr.martin@{D}").reason == "sender-not-owned"


def test_check_rcpt_local(world):
    p = smtp(ListenerRole.MX)
    with OneEvent(world) as ev:
        r = world.policy.check_rcpt(p, None, "a@operateur-pair.test", f"Dr.Martin@{D}")
    assert r.decision.allowed and r.mailbox.address == f"dr.martin@{D}" and not r.remote
    assert ev.event.target == f"Dr.Martin@{D}" and ev.event.details["local"] is True
    r = world.policy.check_rcpt(p, None, "a@x.test", f"nobody@{D}")
    assert r.decision.reason == "unknown-recipient" and r.mailbox is None
    r = world.policy.check_rcpt(p, None, "a@x.test", f"closed@{D}")
    assert r.decision.reason == "mailbox-disabled"


def test_check_rcpt_relay(world):
    mx, sub = smtp(ListenerRole.MX), smtp(ListenerRole.SUBMISSION)
    durand = world.identity("durand")
    assert world.policy.check_rcpt(mx, None, "a@b.test", "x@operateur-pair.test").decision.reason \
        == "relay-denied"
    assert world.policy.check_rcpt(sub, None, "", "x@operateur-pair.test").decision.reason \
        == "relay-denied"
    with OneEvent(world) as ev:
        r = world.policy.check_rcpt(sub, durand, f"sec.durand@{D}", "x@operateur-pair.test")
    assert r.decision.allowed and r.remote and r.mailbox is None
    assert ev.event.details["local"] is False
    r = world.policy.check_rcpt(sub, durand, f"sec.durand@{D}", "someone@gmail.com")
    assert r.decision.reason == "not-whitelisted"


def test_check_rcpt_whitelist_not_enforced(tmp_path, dev_pki, settings_factory, store):
    w = make_world(tmp_path, dev_pki, settings_factory, store, enforce_whitelist=False)
    r = w.policy.check_rcpt(smtp(ListenerRole.SUBMISSION), w.identity("durand"), "", "a@gmail.com")
    assert r.decision.allowed and r.remote


def test_may_relay_to(world):
    with OneEvent(world) as ev:
        assert world.policy.may_relay_to("OPERATEUR-PAIR.test.").allowed
    assert ev.event.result == "allow"
    with OneEvent(world) as ev:
        assert world.policy.may_relay_to("gmail.com").reason == "not-whitelisted"


def test_check_peer_operator(tmp_path, dev_pki, settings_factory, store):
    w = make_world(tmp_path, dev_pki, settings_factory, store, mx_require_client_cert=True)
    pol = w.policy
    good = load_cert(dev_pki.peer_operator)
    mx = lambda cert: peer(role=ListenerRole.MX, cert=cert, listener="mx")  # noqa: E731
    with OneEvent(w) as ev:
        assert pol.check_peer_operator(mx(good), "operateur-pair.test").allowed
    assert ev.event.actor == dev_pki.peer_operator.subject
    # listed, but for another domain
    assert pol.check_peer_operator(mx(good), "autre.test").reason == "not-whitelisted"
    assert pol.check_peer_operator(mx(None), "operateur-pair.test").reason == "no-certificate"
    # a card is not an operator
    assert pol.check_peer_operator(mx(load_cert(dev_pki.practitioner)),
                                   "operateur-pair.test").reason == "not-whitelisted"
    # A null sender (a DSN) names no domain: the operator must be listed for one.
    assert pol.check_peer_operator(mx(good), "").allowed
    assert pol.check_peer_operator(mx(load_cert(dev_pki.practitioner)), "").reason == \
        "not-whitelisted"
    assert pol.check_peer_operator(mx(None), "").reason == "no-certificate"


def test_check_peer_operator_not_required(world):
    with OneEvent(world) as ev:
        assert world.policy.check_peer_operator(smtp(ListenerRole.MX), "x.test").allowed
    assert ev.event.details["reason"] == "not-required"


def test_reload_whitelist_keeps_last_good(tmp_path, dev_pki, settings_factory, store):
    path = tmp_path / "wl.xml"
    w = make_world(tmp_path, dev_pki, settings_factory, store, whitelist_file=path)
    before = w.policy.whitelist
    path.write_text("<ListeBlancheMSSante")
    with OneEvent(w) as ev:
        problem = w.policy.reload_whitelist()
    assert problem and w.policy.whitelist is before and ev.event.result == "fail"
    path.write_text('<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
                    "<ListeDomaines><Domaine><Nom>new.test</Nom></Domaine></ListeDomaines>"
                    "</ListeBlancheMSSante>")
    assert w.policy.reload_whitelist() is None
    assert w.policy.whitelist.has_domain("new.test")


# ---------------------------------------------------------------- IMAP rights


def test_mailbox_rights(world):
    pol, mb = world.policy, world.mailboxes
    assert pol.mailbox_rights(world.identity("martin"), mb["martin"]) == ALL_RIGHTS
    assert pol.mailbox_rights(world.identity("durand"), mb["cardio"]) == ALL_RIGHTS
    assert pol.mailbox_rights(world.identity("reader"), mb["cardio"]) == "lr"
    assert pol.mailbox_rights(world.identity("stranger"), mb["cardio"]) == ""
    assert pol.mailbox_rights(world.identity("stranger"), mb["martin"]) == ""
    assert pol.mailbox_rights(world.identity("durand"), mb["closed"]) == ""


def test_grant_validity_window(world):
    pol, store = world.policy, world.store
    now = dt.datetime.now(dt.UTC)
    stranger, martin_box = world.accounts["stranger"], world.mailboxes["martin"]
    # a delegation during a mission, not started yet
    store.set_grant(stranger.id, martin_box.id, "lr", valid_from=now + dt.timedelta(days=1),
                    valid_until=now + dt.timedelta(days=10))
    assert pol.mailbox_rights(world.identity("stranger"), martin_box) == ""
    store.set_grant(stranger.id, martin_box.id, "lr", valid_from=now - dt.timedelta(days=1),
                    valid_until=now + dt.timedelta(days=10))
    assert pol.mailbox_rights(world.identity("stranger"), martin_box) == "lr"
    store.set_grant(stranger.id, martin_box.id, "lr", valid_from=now - dt.timedelta(days=10),
                    valid_until=now - dt.timedelta(days=1))
    assert pol.mailbox_rights(world.identity("stranger"), martin_box) == ""
    assert martin_box.id not in [a.mailbox.id for a in pol.accessible_mailboxes(world.identity("stranger"))]


def test_accessible_and_primary(world):
    pol = world.policy
    acc = pol.accessible_mailboxes(world.identity("durand"))
    assert [(a.mailbox.address, a.owned) for a in acc] == [
        (f"sec.durand@{D}", True), (f"cardiologie@{D}", False)]
    assert pol.primary_mailbox(world.identity("durand")).address == f"sec.durand@{D}"
    assert [a.mailbox.address for a in pol.accessible_mailboxes(world.identity("stranger"))] == [
        f"stranger@{D}"]


def test_check_mailbox_access_audits_every_access(world):
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:
        assert pol.check_mailbox_access(world.identity("durand"), mb["cardio"], "INBOX", "r",
                                        "select").allowed
    assert (ev.event.actor, ev.event.target, ev.event.result) == (
        f"sec.durand@{D}", f"cardiologie@{D}/INBOX", "allow")
    assert ev.event.details["shared"] is True
    with OneEvent(world) as ev:
        assert pol.check_mailbox_access(world.identity("martin"), mb["martin"], "INBOX", "r",
                                        "select").allowed
    assert ev.event.details["shared"] is False
    with OneEvent(world) as ev:
        d = pol.check_mailbox_access(world.identity("reader"), mb["cardio"], "INBOX", "e", "expunge")
    assert d.reason == "no-access" and ev.event.result == "deny"
    with OneEvent(world):
        assert not pol.check_mailbox_access(world.identity("stranger"), mb["martin"], "INBOX", "l",
                                            "list").allowed
    # "" or several letters are not a right
    assert not pol.check_mailbox_access(world.identity("martin"), mb["martin"], "INBOX", "",
                                        "x").allowed


def test_audit_file_lines_are_json_without_content(world):
    p = smtp(ListenerRole.SUBMISSION)
    world.policy.authenticate_password(p, f"sec.durand@{D}", STAFF_PW)
    world.policy.check_rcpt(p, world.identity("durand"), f"sec.durand@{D}", f"dr.martin@{D}")
    lines = [json.loads(x) for x in (world.tmp_path / "audit.log").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert {"time", "actor", "action", "target", "result"} <= set(line)
        assert STAFF_PW not in json.dumps(line)


DECISIONS = {
    "password-ok": lambda w: w.policy.authenticate_password(peer(), f"sec.durand@{D}", STAFF_PW),
    "password-bad": lambda w: w.policy.authenticate_password(peer(), f"sec.durand@{D}", "x"),
    "external": lambda w: w.policy.authenticate_certificate(
        peer(cert=load_cert(w.pki.practitioner)), None),
    "sender": lambda w: w.policy.check_sender(smtp(ListenerRole.SUBMISSION), w.identity("durand"),
                                              f"dr.martin@{D}"),
    "rcpt-local": lambda w: w.policy.check_rcpt(smtp(ListenerRole.MX), None, "", f"dr.martin@{D}"),
    "rcpt-remote": lambda w: w.policy.check_rcpt(smtp(ListenerRole.SUBMISSION),
                                                 w.identity("durand"), "", "a@autre.test"),
    "peer": lambda w: w.policy.check_peer_operator(smtp(ListenerRole.MX), "autre.test"),
    "relay": lambda w: w.policy.may_relay_to("autre.test"),
    "access": lambda w: w.policy.check_mailbox_access(w.identity("reader"), w.mailboxes["cardio"],
                                                      "INBOX", "r", "fetch"),
    "create": lambda w: w.policy.check_create_access(w.identity("reader"), w.mailboxes["cardio"],
                                                     "INBOX/Tri", "create"),
}


@pytest.mark.parametrize("name", sorted(DECISIONS))
def test_every_decision_records_exactly_one_event(world, name):
    with OneEvent(world) as ev:
        DECISIONS[name](world)
    e = ev.event
    assert e.actor and e.actor != "-"
    assert e.action and e.target and e.result in ("allow", "deny")
    # no message content, no secrets: only short scalar details
    for value in e.details.values():
        assert value is None or isinstance(value, str | int | bool)
        assert STAFF_PW not in str(value)


def test_queries_record_nothing(world):
    before = len(world.audit.events)
    pol = world.policy
    pol.mailbox_rights(world.identity("durand"), world.mailboxes["cardio"])
    pol.accessible_mailboxes(world.identity("durand"))
    pol.primary_mailbox(world.identity("durand"))
    pol.addresses_of(world.identity("durand"))
    assert len(world.audit.events) == before


# ---------------------------------------------------------------- RFC 4314 decisions


def test_denied_access_says_whether_the_mailbox_may_be_seen(world):
    """The Decision carries NOPERM vs NONEXISTENT: the protocol only maps it."""
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:  # holds "l": visible, the right is missing
        d = pol.check_mailbox_access(world.identity("reader"), mb["cardio"], "INBOX", "i",
                                     "append")
    assert (d.verdict, d.reason) == (Verdict.DENY, "no-access")
    assert (ev.event.actor, ev.event.action, ev.event.result, ev.event.details["reason"]) == (
        f"sec.reader@{D}", "append", "deny", "no-access")
    with OneEvent(world) as ev:  # no right at all: like a missing mailbox
        d = pol.check_mailbox_access(world.identity("stranger"), mb["cardio"], "INBOX", "r",
                                     "select")
    assert d.reason == "not-visible" and ev.event.details["reason"] == "not-visible"
    assert ev.event.actor == f"stranger@{D}"
    # Asking for "l" itself and lacking it is never a permission error.
    assert pol.check_mailbox_access(world.identity("stranger"), mb["martin"], "INBOX", "l",
                                    "list").reason == "not-visible"
    # "" is no right: visible mailbox, so NOPERM (as imapd answered before).
    assert pol.check_mailbox_access(world.identity("reader"), mb["cardio"], "INBOX", "",
                                    "x").reason == "no-access"
    # A closed mailbox is invisible even to its grantees.
    assert pol.check_mailbox_access(world.identity("durand"), mb["closed"], "INBOX", "r",
                                    "select").reason == "not-visible"


def test_my_rights_is_decided_and_audited_by_policy(world):
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:
        r = pol.my_rights(world.identity("reader"), mb["cardio"], "INBOX")
    assert r.decision.allowed and r.rights == "lr"
    assert (ev.event.actor, ev.event.action, ev.event.target, ev.event.result) == (
        f"sec.reader@{D}", "myrights", f"cardiologie@{D}/INBOX", "allow")
    assert ev.event.details["rights"] == "lr" and ev.event.details["shared"] is True
    assert pol.my_rights(world.identity("martin"), mb["martin"], "INBOX").rights == ALL_RIGHTS
    with OneEvent(world) as ev:
        r = pol.my_rights(world.identity("stranger"), mb["cardio"], "INBOX")
    assert (r.decision.verdict, r.decision.reason, r.rights) == (Verdict.DENY, "not-visible", "")
    assert (ev.event.actor, ev.event.result) == (f"stranger@{D}", "deny")


def test_my_rights_needs_l_or_r(world):
    """RFC 4314 as served: a grant without "l" and "r" does not show the box."""
    pol, store = world.policy, world.store
    store.set_grant(world.accounts["stranger"].id, world.mailboxes["cardio"].id, "i")
    r = pol.my_rights(world.identity("stranger"), world.mailboxes["cardio"], "INBOX")
    assert r.decision.reason == "not-visible"
    store.set_grant(world.accounts["stranger"].id, world.mailboxes["cardio"].id, "r")
    assert pol.my_rights(world.identity("stranger"), world.mailboxes["cardio"],
                         "INBOX").rights == "r"


def test_acl_rights_on_a_missing_folder_raise_not_found_after_the_decision(world):
    from storage.interface import NotFound

    pol, mb = world.policy, world.mailboxes
    for call in (lambda: pol.my_rights(world.identity("martin"), mb["martin"], "Nope"),
                 lambda: pol.acl(world.identity("martin"), mb["martin"], "Nope"),
                 lambda: pol.list_rights(world.identity("martin"), mb["martin"], "Nope"),
                 lambda: pol.set_rights(world.identity("martin"), mb["martin"], "Nope",
                                        f"stranger@{D}", "lr")):
        with OneEvent(world) as ev, pytest.raises(NotFound):
            call()
        assert ev.event.result == "allow"
    # Nothing was granted.
    assert pol.mailbox_rights(world.identity("stranger"), mb["martin"]) == ""
    # Denied first: no folder lookup reveals anything.
    d = pol.acl(world.identity("reader"), mb["cardio"], "Nope").decision
    assert d.reason == "no-access"


def test_acl_lists_the_owner_then_the_grants(world):
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:
        a = pol.acl(world.identity("martin"), mb["martin"], "INBOX")
    assert a.decision.allowed and a.entries == ((f"dr.martin@{D}", ALL_RIGHTS),)
    assert (ev.event.actor, ev.event.action, ev.event.target, ev.event.result) == (
        f"dr.martin@{D}", "getacl", f"dr.martin@{D}/INBOX", "allow")
    # An owner-less functional box: the grants only.
    a = pol.acl(world.identity("durand"), mb["cardio"], "INBOX")
    assert a.entries == ((f"sec.durand@{D}", ALL_RIGHTS), (f"sec.reader@{D}", "lr"))
    # Needs "a": the reader may see the box (NOPERM), the stranger may not.
    with OneEvent(world) as ev:
        a = pol.acl(world.identity("reader"), mb["cardio"], "INBOX")
    assert (a.decision.reason, a.entries) == ("no-access", ())
    assert (ev.event.actor, ev.event.action, ev.event.result) == (
        f"sec.reader@{D}", "getacl", "deny")
    assert pol.acl(world.identity("stranger"), mb["cardio"], "INBOX").decision.reason == (
        "not-visible")


def test_list_rights_is_decided_by_policy(world):
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:
        r = pol.list_rights(world.identity("martin"), mb["martin"], "INBOX")
    assert r.decision.allowed
    assert (r.required, r.optional) == ("", tuple(ALL_RIGHTS))
    assert (ev.event.actor, ev.event.action, ev.event.result) == (
        f"dr.martin@{D}", "listrights", "allow")
    r = pol.list_rights(world.identity("reader"), mb["cardio"], "INBOX")
    assert (r.decision.reason, r.optional) == ("no-access", ())


def test_set_rights_changes_the_grant_and_audits_the_actor(world):
    pol, mb = world.policy, world.mailboxes
    martin, stranger = world.identity("martin"), world.identity("stranger")
    before = len(world.audit.events)
    assert pol.set_rights(martin, mb["martin"], "INBOX", f"stranger@{D}", "lr").allowed
    check, change = world.audit.events[before:]
    assert (check.actor, check.action, check.target, check.result) == (
        f"dr.martin@{D}", "setacl", f"dr.martin@{D}/INBOX", "allow")
    assert (change.actor, change.action, change.target, change.result) == (
        f"dr.martin@{D}", "setacl", f"dr.martin@{D}/INBOX", "ok")
    assert change.details == {"identifier": f"stranger@{D}", "rights": "lr"}
    # SETACL names one folder: the grant is on INBOX, not on the whole box.
    assert pol.mailbox_rights(stranger, mb["martin"], "INBOX") == "lr"
    assert pol.mailbox_rights(stranger, mb["martin"]) == ""
    assert pol.mailbox_rights(stranger, mb["martin"], "Sent") == ""
    # RFC 4314 3.1: "+" adds, "-" removes, obsolete "c"/"d" map to "k"/"xte",
    # the identifier is case-insensitive; rights are stored in canonical order.
    for mod, expected in (("+sw", "lrsw"), ("-w", "lrs"), ("+d", "lrsxte"), ("-dr", "ls"),
                          ("c", "k")):
        assert pol.set_rights(martin, mb["martin"], "INBOX", f"STRANGER@{D}", mod).allowed
        assert pol.mailbox_rights(stranger, mb["martin"], "INBOX") == expected, mod
    # DELETEACL: rights "".
    assert pol.set_rights(martin, mb["martin"], "INBOX", f"stranger@{D}", "").allowed
    assert pol.mailbox_rights(stranger, mb["martin"], "INBOX") == ""
    assert world.audit.events[-1].details == {"identifier": f"stranger@{D}", "rights": ""}


@pytest.mark.parametrize(("who", "rights", "reason"), [
    (f"nobody@{D}", "lr", "unknown-identifier"),
    (f"nobody@{D}", "lrz", "unknown-identifier"),  # the identifier is checked first
    (f"dr.martin@{D}", "lr", "owner-rights-fixed"),
    (f"stranger@{D}", "lrz", "unknown-right"),
    (f"stranger@{D}", "+z", "unknown-right"),
    (f"stranger@{D}", "-z", "unknown-right"),
])
def test_set_rights_refusals_are_audited_and_change_nothing(world, who, rights, reason):
    pol, mb = world.policy, world.mailboxes
    before = len(world.audit.events)
    d = pol.set_rights(world.identity("martin"), mb["martin"], "INBOX", who, rights)
    assert (d.verdict, d.reason) == (Verdict.DENY, reason)
    check, refusal = world.audit.events[before:]
    assert check.result == "allow"
    assert (refusal.actor, refusal.action, refusal.target, refusal.result) == (
        f"dr.martin@{D}", "setacl", f"dr.martin@{D}/INBOX", "deny")
    assert refusal.details == {"reason": reason, "identifier": who}
    assert pol.mailbox_rights(world.identity("stranger"), mb["martin"], "INBOX") == ""


def test_set_rights_needs_a(world):
    pol, mb = world.policy, world.mailboxes
    with OneEvent(world) as ev:
        d = pol.set_rights(world.identity("reader"), mb["cardio"], "INBOX", f"stranger@{D}",
                           "lr")
    assert d.reason == "no-access"
    assert (ev.event.actor, ev.event.action, ev.event.result) == (
        f"sec.reader@{D}", "setacl", "deny")
    d = pol.set_rights(world.identity("stranger"), mb["cardio"], "INBOX", f"stranger@{D}",
                       ALL_RIGHTS)
    assert d.reason == "not-visible"
    assert pol.mailbox_rights(world.identity("stranger"), mb["cardio"]) == ""


# ---------------------------------------------------------------- postmaster alias


def test_bare_postmaster_is_postmaster_of_the_first_domain(world):
    pol = world.policy
    first = world.policy.settings.domains[0]
    before = len(world.audit.events)
    assert pol.recipient_address("postmaster") == f"postmaster@{first}"
    assert pol.recipient_address("Postmaster") == f"postmaster@{first}"
    assert pol.recipient_address(f"postmaster@{D}") == f"postmaster@{D}"
    assert pol.recipient_address("postmaster@autre.test") == "postmaster@autre.test"
    assert pol.recipient_address(f"dr.martin@{D}") == f"dr.martin@{D}"
    assert len(world.audit.events) == before  # a query: the RCPT decision is audited


def test_bare_postmaster_reaches_the_configured_postmaster(tmp_path, dev_pki, settings_factory,
                                                           store):
    w = make_world(tmp_path, dev_pki, settings_factory, store, postmaster=f"dr.martin@{D}")
    try:
        address = w.policy.recipient_address("postmaster")
        with OneEvent(w) as ev:
            r = w.policy.check_rcpt(smtp(ListenerRole.MX), None, "a@autre.test", address)
        assert r.decision.allowed and r.mailbox is not None
        assert r.mailbox.address == f"dr.martin@{D}"
        assert (ev.event.action, ev.event.target, ev.event.result) == ("rcpt", address, "allow")
    finally:
        w.audit.close()
