"""policy.flows.facts_for against a real SQLite store, and the shipped matrix
(conf/defaults/flows.yaml) deciding as today's Policy does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from store_support import make_settings

from conf.settings import ListenerRole, PolicySettings, Settings
from mssctl.init import default_flows
from mssmtpd.replies import R, reply_for_reason
from policy.audit import FileAuditSink
from policy.decisions import ALL_RIGHTS, Identity, Peer, Policy, Verdict
from policy.flows import (
    AuthMethod,
    BoxState,
    FlowMatrix,
    UnknownListener,
    auth_method_of,
    facts_for,
    listener_roles,
    load_matrix,
)
from policy.whitelist import Whitelist
from storage.interface import AccountClass, MailboxType, NotFound

D = "hopital.test"
REPO = Path(__file__).resolve().parents[2]
PEER_DN = "CN=mx.operateur-pair.test,OU=1690000002,O=Operateur pair,ST=Rhone (69),C=FR"
WHITELIST = (
    '<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
    "<DateDeGeneration>x</DateDeGeneration><ListeDomaines>"
    f"<Domaine><Nom>{D}</Nom><DNCertificatOperateur>CN=mx.{D},C=FR</DNCertificatOperateur></Domaine>"
    f"<Domaine><Nom>operateur-pair.test</Nom><DNCertificatOperateur>{PEER_DN}"
    "</DNCertificatOperateur></Domaine>"
    "</ListeDomaines></ListeBlancheMSSante>"
).encode()
LISTENERS = [
    {"name": "smtp-mx", "port": 0, "role": "mx", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
    {"name": "imap", "port": 0, "role": "imap", "tls": "none"},
]


@dataclass
class World:
    store: Any
    tmp_path: Path
    whitelist: Whitelist
    accounts: dict[str, Any]

    def settings(self, **policy: Any) -> Settings:
        return make_settings(self.tmp_path, listeners=LISTENERS,
                             policy=PolicySettings(**policy))


@pytest.fixture
def world(store: Any, tmp_path: Path) -> World:
    acc = {
        "martin": store.add_account(f"dr.martin@{D}", "Dr Martin", AccountClass.PRACTITIONER),
        "durand": store.add_account(f"sec.durand@{D}", "S Durand", AccountClass.STAFF),
        "labo": store.add_account(f"labo@{D}", "Labo", AccountClass.SYSTEM),
    }
    store.add_mailbox(f"dr.martin@{D}", MailboxType.PER, owner_account_id=acc["martin"].id)
    store.add_mailbox(f"sec.durand@{D}", MailboxType.PER, owner_account_id=acc["durand"].id)
    store.add_mailbox(f"labo@{D}", MailboxType.APP, owner_account_id=acc["labo"].id)
    cardio = store.add_mailbox(f"cardiologie@{D}", MailboxType.ORG)
    store.set_grant(acc["durand"].id, cardio.id, ALL_RIGHTS, send_as=True)
    store.add_mailbox(f"closed@{D}", MailboxType.ORG)
    store.set_mailbox_active(f"closed@{D}", False)
    return World(store, tmp_path, Whitelist.parse(WHITELIST), acc)


# ---------------------------------------------------------------- facts


def test_facts_of_a_submission_to_a_local_functional_box(world: World) -> None:
    r = facts_for(world.store, world.settings(), world.whitelist, listener="submission",
                  sender=f"sec.durand@{D}", recipient=f"Cardiologie@{D.upper()}",
                  client_ip="10.0.0.5", account=f"SEC.durand@{D}",
                  auth_method=AuthMethod.PASSWORD_TOTP, size=1234)
    assert (r.listener, r.role, r.client_ip, r.size) == ("submission", ListenerRole.SUBMISSION,
                                                         "10.0.0.5", 1234)
    assert (r.account, r.account_class, r.auth_method) == (
        f"sec.durand@{D}", AccountClass.STAFF, AuthMethod.PASSWORD_TOTP)
    assert (r.sender_local, r.sender_box_type) == (True, MailboxType.PER)
    assert (r.recipient_local, r.recipient_whitelisted) == (True, True)
    assert (r.recipient_box_type, r.recipient_box_state) == (MailboxType.ORG, BoxState.ACTIVE)
    assert r.peer_whitelisted is False  # no certificate


@pytest.mark.parametrize(("recipient", "box_type", "state"), [
    (f"closed@{D}", MailboxType.ORG, BoxState.DISABLED),
    (f"nobody@{D}", None, BoxState.MISSING),
    (f"labo@{D}", MailboxType.APP, BoxState.ACTIVE),
    ("x@operateur-pair.test", None, None),
])
def test_recipient_box_facts(world: World, recipient: str, box_type: Any, state: Any) -> None:
    r = facts_for(world.store, world.settings(), world.whitelist, listener="smtp-mx",
                  sender="a@operateur-pair.test", recipient=recipient)
    assert (r.recipient_box_type, r.recipient_box_state) == (box_type, state)
    assert r.recipient_local is (state is not None)


def test_postmaster_is_found_as_check_rcpt_finds_it(world: World) -> None:
    settings = world.settings(postmaster=f"cardiologie@{D}")
    bare = facts_for(world.store, settings, None, listener="smtp-mx", sender="",
                     recipient="postmaster")
    assert bare.recipient == f"postmaster@{D}"
    assert (bare.recipient_box_type, bare.recipient_box_state) == (MailboxType.ORG,
                                                                   BoxState.ACTIVE)
    without = facts_for(world.store, world.settings(), None, listener="smtp-mx", sender="",
                        recipient=f"postmaster@{D}")
    assert without.recipient_box_state is BoxState.MISSING


@pytest.mark.parametrize(("sender", "peer_dn", "expected"), [
    ("a@operateur-pair.test", PEER_DN, True),
    # the same DN, written differently: compared normalised
    ("a@operateur-pair.test", "c=FR,st=Rhone (69),o=Operateur pair,ou=1690000002,"
     "cn=MX.operateur-pair.test", True),
    ("a@autre.test", PEER_DN, False),  # listed, but not for that domain
    ("", PEER_DN, True),  # null sender: listed for some domain
    ("", "CN=mx.inconnu.test,C=FR", False),
    ("a@operateur-pair.test", None, False),  # no certificate
])
def test_peer_whitelisted_for_the_sender_domain(world: World, sender: str, peer_dn: str | None,
                                                expected: bool) -> None:
    r = facts_for(world.store, world.settings(), world.whitelist, listener="smtp-mx",
                  sender=sender, recipient=f"dr.martin@{D}", peer_dn=peer_dn)
    assert r.peer_whitelisted is expected
    assert (r.sender_local, r.sender_box_type) == (False, None)


def test_without_a_whitelist_or_not_enforced_the_whitelist_facts_are_unknown(
        world: World) -> None:
    for settings, wl in ((world.settings(), None),
                         (world.settings(enforce_whitelist=False), world.whitelist)):
        r = facts_for(world.store, settings, wl, listener="smtp-mx",
                      sender="a@operateur-pair.test", recipient="x@ailleurs.test",
                      peer_dn=PEER_DN)
        assert (r.peer_whitelisted, r.recipient_whitelisted) == (None, None)


def test_facts_for_refuses_what_it_cannot_describe(world: World) -> None:
    s = world.settings()
    with pytest.raises(UnknownListener, match="unknown listener 'smtp'; the settings define "
                       "smtp-mx, submission, imap"):
        facts_for(world.store, s, None, listener="smtp", sender="", recipient=f"x@{D}")
    with pytest.raises(NotFound):
        facts_for(world.store, s, None, listener="submission", sender="", recipient=f"x@{D}",
                  account="ghost@hopital.test", auth_method=AuthMethod.PASSWORD)
    with pytest.raises(ValueError, match="account and auth_method go together"):
        facts_for(world.store, s, None, listener="submission", sender="", recipient=f"x@{D}",
                  account=f"dr.martin@{D}")


@pytest.mark.parametrize(("method", "kind", "expected"), [
    ("password", None, AuthMethod.PASSWORD),
    ("PASSWORD+TOTP", None, AuthMethod.PASSWORD_TOTP),
    ("token", None, AuthMethod.TOKEN),
    ("oauthbearer", None, AuthMethod.TOKEN),
    ("xoauth2", None, AuthMethod.TOKEN),
    ("external", "practitioner-card", AuthMethod.CARD),
    ("external", "employee-card", AuthMethod.CARD),
    ("external", "organisation", AuthMethod.ORG_CERTIFICATE),
    ("external", "unknown", AuthMethod.ORG_CERTIFICATE),
    ("external", None, AuthMethod.ORG_CERTIFICATE),
])
def test_auth_method_of(method: str, kind: str | None, expected: AuthMethod) -> None:
    assert auth_method_of(method, kind) is expected


def test_auth_method_of_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown login method 'kerberos'"):
        auth_method_of("kerberos")


# ---------------------------------------------------------------- the shipped matrix


def test_init_writes_the_shipped_matrix_and_it_loads() -> None:
    shipped = REPO / "conf" / "defaults" / "flows.yaml"
    assert default_flows() == shipped.read_text(encoding="utf-8")
    m = load_matrix(shipped, listeners={"smtp-mx": ListenerRole.MX})
    assert [r.id for r in m.rules] == [
        "submission-needs-login", "mx-refuses-our-domains", "unknown-recipient",
        "disabled-recipient", "deliver-local", "no-relay-for-operators",
        "relay-outside-trust-space", "relay-to-trust-space"]
    assert m.default.value == "deny" and str(m.default_reply) == "550 5.7.1 Relaying denied"


def _today(policy: Policy, peer: Peer, identity: Identity | None, sender: str,
           rcpt: str) -> tuple[str, int | None, str | None]:
    """What today's fixed rules answer: MAIL (sender, then the peer operator
    on mx), then RCPT, mapped to replies as mssmtpd does."""
    d = policy.check_sender(peer, identity, sender)
    peer_check = False
    if d.allowed and peer.role is ListenerRole.MX:
        d = policy.check_peer_operator(peer, sender.rpartition("@")[2].lower())
        peer_check = True
    if not d.allowed:
        reply = reply_for_reason(d.reason, temporary=d.verdict is Verdict.TEMPFAIL,
                                 default=R.SENDER_DENIED, peer=peer_check)
        return "deny", reply.code, reply.status
    r = policy.check_rcpt(peer, identity, sender, policy.recipient_address(rcpt)).decision
    if not r.allowed:
        reply = reply_for_reason(r.reason, temporary=r.verdict is Verdict.TEMPFAIL,
                                 default=R.RELAY_DENIED)
        return "deny", reply.code, reply.status
    return "allow", None, None


def _matrix(world: World, settings: Settings, whitelist: Whitelist | None, listener: str,
            login: str | None, sender: str, rcpt: str,
            m: FlowMatrix) -> tuple[tuple[str, int | None, str | None], str]:
    request = facts_for(world.store, settings, whitelist, listener=listener, sender=sender,
                        recipient=rcpt, client_ip="192.0.2.7",
                        account=world.accounts[login] if login else None,
                        auth_method=AuthMethod.PASSWORD if login else None)
    d = m.decide(request)
    assert (d.verdict, d.rule) == (m.explain(request).verdict, m.explain(request).rule)
    reply = d.reply
    return (d.verdict.value, reply.code if reply else None, reply.status if reply else None), d.rule


NOT_OWNED_MX = ("deny", 553, "5.7.1")
# (listener, account key or None, sender, recipient, today's answer, the deciding rule)
TODAY: list[tuple[str, str | None, str, str, tuple[str, int | None, str | None], str]] = [
    # submission: logged-in clients write to our boxes and to the trust space
    ("submission", "martin", f"dr.martin@{D}", f"cardiologie@{D}", ("allow", None, None),
     "deliver-local"),
    ("submission", "labo", f"labo@{D}", f"dr.martin@{D}", ("allow", None, None),
     "deliver-local"),
    ("submission", "durand", f"cardiologie@{D}", f"labo@{D}", ("allow", None, None),
     "deliver-local"),
    ("submission", "martin", f"dr.martin@{D}", f"nobody@{D}", ("deny", 550, "5.1.1"),
     "unknown-recipient"),
    ("submission", "martin", f"dr.martin@{D}", f"closed@{D}", ("deny", 550, "5.2.1"),
     "disabled-recipient"),
    ("submission", "martin", f"dr.martin@{D}", "secretariat@operateur-pair.test",
     ("allow", None, None), "relay-to-trust-space"),
    ("submission", "martin", f"dr.martin@{D}", "someone@gmail.test", ("deny", 550, "5.7.1"),
     "relay-outside-trust-space"),
    ("submission", None, f"dr.martin@{D}", f"cardiologie@{D}", ("deny", 530, "5.7.0"),
     "submission-needs-login"),
    ("submission", None, "x@operateur-pair.test", "y@operateur-pair.test",
     ("deny", 530, "5.7.0"), "submission-needs-login"),
    # mx: other operators deliver to our existing boxes, and nowhere else
    ("smtp-mx", None, "a@operateur-pair.test", f"dr.martin@{D}", ("allow", None, None),
     "deliver-local"),
    ("smtp-mx", None, "", f"cardiologie@{D}", ("allow", None, None), "deliver-local"),
    ("smtp-mx", None, "a@operateur-pair.test", f"nobody@{D}", ("deny", 550, "5.1.1"),
     "unknown-recipient"),
    ("smtp-mx", None, "a@operateur-pair.test", f"closed@{D}", ("deny", 550, "5.2.1"),
     "disabled-recipient"),
    ("smtp-mx", None, "a@operateur-pair.test", "b@operateur-pair.test",
     ("deny", 550, "5.7.1"), "no-relay-for-operators"),
    ("smtp-mx", None, "a@operateur-pair.test", "b@gmail.test", ("deny", 550, "5.7.1"),
     "no-relay-for-operators"),
    ("smtp-mx", None, f"dr.martin@{D}", f"cardiologie@{D}", NOT_OWNED_MX,
     "mx-refuses-our-domains"),
    ("smtp-mx", None, f"Forged@{D.upper()}", "b@operateur-pair.test", NOT_OWNED_MX,
     "mx-refuses-our-domains"),
]


@pytest.mark.parametrize(("listener", "login", "sender", "rcpt", "expected", "rule"), TODAY)
def test_the_shipped_matrix_decides_as_today(
        world: World, listener: str, login: str | None, sender: str, rcpt: str,
        expected: tuple[str, int | None, str | None], rule: str) -> None:
    settings = world.settings()
    policy = Policy(settings, world.store, FileAuditSink(world.tmp_path / "audit.log"),
                    world.whitelist)
    role = listener_roles(settings)[listener]
    peer = Peer("192.0.2.7", 40000, listener, role)
    identity = Identity(world.accounts[login], "password") if login else None
    assert _today(policy, peer, identity, sender, rcpt) == expected
    m = load_matrix(REPO / "conf" / "defaults" / "flows.yaml",
                    listeners=listener_roles(settings))
    assert _matrix(world, settings, world.whitelist, listener, login, sender, rcpt, m) == (
        expected, rule)


@pytest.mark.parametrize(("policy_kw", "with_whitelist"), [
    ({}, False),  # no whitelist loaded
    ({"enforce_whitelist": False}, True),
])
def test_without_the_whitelist_clients_relay_anywhere_as_today(
        world: World, policy_kw: dict[str, Any], with_whitelist: bool) -> None:
    settings = world.settings(**policy_kw)
    wl = world.whitelist if with_whitelist else None
    policy = Policy(settings, world.store, FileAuditSink(world.tmp_path / "audit.log"), wl)
    m = load_matrix(REPO / "conf" / "defaults" / "flows.yaml")
    peer = Peer("192.0.2.7", 40000, "submission", ListenerRole.SUBMISSION)
    identity = Identity(world.accounts["martin"], "password")
    args = (f"dr.martin@{D}", "someone@gmail.test")
    assert _today(policy, peer, identity, *args) == ("allow", None, None)
    assert _matrix(world, settings, wl, "submission", "martin", *args, m) == (
        ("allow", None, None), "relay-to-trust-space")
    mx = Peer("192.0.2.7", 40000, "smtp-mx", ListenerRole.MX)
    assert _today(policy, mx, None, "a@operateur-pair.test", "b@gmail.test") == (
        "deny", 550, "5.7.1")
    assert _matrix(world, settings, wl, "smtp-mx", None, "a@operateur-pair.test",
                   "b@gmail.test", m)[1] == "no-relay-for-operators"


def test_postmaster_fallback_as_today(world: World) -> None:
    settings = world.settings(postmaster=f"cardiologie@{D}")
    policy = Policy(settings, world.store, FileAuditSink(world.tmp_path / "audit.log"),
                    world.whitelist)
    m = load_matrix(REPO / "conf" / "defaults" / "flows.yaml")
    mx = Peer("192.0.2.7", 40000, "smtp-mx", ListenerRole.MX)
    for rcpt in ("postmaster", f"postmaster@{D}"):
        assert _today(policy, mx, None, "a@operateur-pair.test", rcpt) == ("allow", None, None)
        assert _matrix(world, settings, world.whitelist, "smtp-mx", None,
                       "a@operateur-pair.test", rcpt, m) == (("allow", None, None),
                                                            "deliver-local")


def test_sender_ownership_stays_in_code(world: World) -> None:
    """The matrix does not know which addresses an account owns: that check
    runs before it (Policy.check_sender), and the matrix can only refuse more."""
    settings = world.settings()
    policy = Policy(settings, world.store, FileAuditSink(world.tmp_path / "audit.log"),
                    world.whitelist)
    peer = Peer("192.0.2.7", 40000, "submission", ListenerRole.SUBMISSION)
    identity = Identity(world.accounts["martin"], "password")
    assert _today(policy, peer, identity, f"cardiologie@{D}", f"labo@{D}") == (
        "deny", 553, "5.7.1")
    m = load_matrix(REPO / "conf" / "defaults" / "flows.yaml")
    assert _matrix(world, settings, world.whitelist, "submission", "martin",
                   f"cardiologie@{D}", f"labo@{D}", m)[0][0] == "allow"
