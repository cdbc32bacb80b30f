"""policy.flows: each condition, first-match semantics, decide == explain."""

from __future__ import annotations

import random
from typing import Any

import pytest
from flows_support import matrix, req

from conf.settings import ListenerRole
from policy.flows import (
    AuthMethod,
    BoxState,
    FlowReply,
    FlowRequest,
    FlowVerdict,
    parse_matrix,
)
from storage.interface import AccountClass, MailboxType

CARD = AuthMethod.CARD
DN = "CN=mx.chu-lyon.fr,OU=1690000002,O=CHU de Lyon,ST=Rhone (69),C=FR"

# (condition as written in a rule, request fields, matches?)
CONDITIONS: list[tuple[str, dict[str, Any], bool]] = [
    # listener and role
    ("from: {listener: submission}", {}, True),
    ("from: {listener: submissions}", {}, False),
    ("from: {listener: [submissions, submission]}", {}, True),
    ("from: {role: submission}", {}, True),
    ("from: {role: mx}", {}, False),
    ("from: {role: MX}", {"role": ListenerRole.MX, "listener": "smtp-mx"}, True),
    # client network, IPv4 and IPv6
    ("from: {network: 10.0.0.0/8}", {}, True),
    ("from: {network: 10.1.2.3/32}", {}, True),
    ("from: {network: 10.1.2.3}", {}, True),
    ("from: {network: 10.1.2.4}", {}, False),
    ("from: {network: [192.168.0.0/16, 10.1.0.0/16]}", {}, True),
    ("from: {network: 192.168.0.0/16}", {}, False),
    ("from: {network: 0.0.0.0/0}", {}, True),
    ("from: {network: 0.0.0.0/0}", {"client_ip": "2001:db8::1"}, False),
    ("from: {network: '2001:db8::/32'}", {"client_ip": "2001:db8:1::5"}, True),
    ("from: {network: '2001:db8::/32'}", {"client_ip": "2001:db9::5"}, False),
    ("from: {network: '::/0'}", {"client_ip": "::1"}, True),
    ("from: {network: 10.0.0.0/8}", {"client_ip": "::ffff:10.9.9.9"}, True),  # v4-mapped
    ("from: {network: 10.0.0.0/8}", {"client_ip": None}, False),
    ("from: {network: 10.0.0.0/8}", {"client_ip": "not an ip"}, False),
    # account: login or glob, case-insensitive; never when not logged in
    ("from: {account: dr.martin@hopital.test}", {"account": "Dr.Martin@Hopital.test"}, True),
    ("from: {account: dr.martin@hopital.test}", {"account": "dr.durand@hopital.test"}, False),
    ("from: {account: '*@hopital.test'}", {"account": "sec.petit@hopital.test"}, True),
    ("from: {account: 'dr.*'}", {"account": "sec.petit@hopital.test"}, False),
    ("from: {account: ['x@y.z', 'sec.?etit@*']}", {"account": "sec.petit@hopital.test"}, True),
    ("from: {account: '*'}", {"account": None}, False),
    # account class, method
    ("from: {account_class: practitioner}", {"account_class": AccountClass.PRACTITIONER}, True),
    ("from: {account_class: [staff, admin]}", {"account_class": AccountClass.PRACTITIONER}, False),
    ("from: {account_class: staff}", {"account_class": None}, False),
    ("from: {method: card}", {"auth_method": CARD}, True),
    ("from: {method: [password, password+totp]}", {"auth_method": AuthMethod.PASSWORD_TOTP}, True),
    ("from: {method: token}", {"auth_method": AuthMethod.PASSWORD}, False),
    ("from: {method: org-certificate}", {"auth_method": AuthMethod.ORG_CERTIFICATE}, True),
    ("from: {method: none}", {"auth_method": None}, True),
    ("from: {method: none}", {"auth_method": CARD}, False),
    # envelope sender: address, domain, *.domain (subdomains only), <>
    ("from: {sender: dr.martin@hopital.test}", {}, True),
    ("from: {sender: DR.Martin@HOPITAL.test}", {}, True),
    ("from: {sender: sec.petit@hopital.test}", {}, False),
    ("from: {sender: hopital.test}", {}, True),
    ("from: {sender: hopital.test.}", {"sender": "a@hopital.test."}, True),
    ("from: {sender: a@hopital.test}", {"sender": "A@hopital.test."}, True),
    ("from: {sender: hopital.test}", {"sender": "a@urgences.hopital.test"}, False),
    ("from: {sender: '*.hopital.test'}", {"sender": "a@urgences.hopital.test"}, True),
    ("from: {sender: '*.hopital.test'}", {"sender": "a@x.urgences.hopital.test"}, True),
    ("from: {sender: '*.hopital.test'}", {}, False),
    ("from: {sender: '*.test'}", {"sender": "a@nothopital.test"}, True),
    ("from: {sender: '*.hopital.test'}", {"sender": "a@nothopital.test"}, False),
    ("from: {sender: '<>'}", {"sender": ""}, True),
    ("from: {sender: '<>'}", {}, False),
    ("from: {sender: hopital.test}", {"sender": ""}, False),
    ("from: {sender_local: true}", {"sender_local": True}, True),
    ("from: {sender_local: false}", {"sender_local": True}, False),
    ("from: {box_type: ORG}", {"sender_box_type": MailboxType.ORG}, True),
    ("from: {box_type: [per, app]}", {"sender_box_type": MailboxType.ORG}, False),
    ("from: {box_type: PER}", {"sender_box_type": None}, False),
    # the peer operator: DN (compared normalised), whitelisted for the sender's domain
    (f"from: {{peer_dn: '{DN}'}}", {"peer_dn": DN}, True),
    (f"from: {{peer_dn: '{DN}'}}",
     {"peer_dn": "c=FR, st=Rhone (69), o=CHU DE LYON, ou=1690000002, cn=MX.chu-lyon.fr"}, True),
    (f"from: {{peer_dn: '{DN}'}}", {"peer_dn": DN.replace("mx.", "mx2.")}, False),
    (f"from: {{peer_dn: '{DN}'}}", {"peer_dn": None}, False),
    ("from: {peer_whitelisted: true}", {"peer_whitelisted": True}, True),
    ("from: {peer_whitelisted: false}", {"peer_whitelisted": False}, True),
    ("from: {peer_whitelisted: true}", {"peer_whitelisted": None}, False),
    ("from: {peer_whitelisted: false}", {"peer_whitelisted": None}, False),
    # destination
    ("to: {recipient: secretariat@chu-lyon.fr}", {}, True),
    ("to: {recipient: chu-lyon.fr}", {}, True),
    ("to: {recipient: '*.fr'}", {}, True),
    ("to: {recipient: [hopital.test, '*.hopital.test']}", {}, False),
    ("to: {local: false}", {"recipient_local": False}, True),
    ("to: {local: true}", {"recipient_local": False}, False),
    ("to: {whitelisted: true}", {"recipient_whitelisted": True}, True),
    ("to: {whitelisted: false}", {"recipient_whitelisted": True}, False),
    ("to: {whitelisted: false}", {"recipient_whitelisted": None}, False),
    ("to: {whitelisted: true}", {"recipient_whitelisted": None}, False),
    ("to: {box_type: APP}", {"recipient_box_type": MailboxType.APP}, True),
    ("to: {box_type: APP}", {"recipient_box_type": None}, False),
    ("to: {box_state: missing}", {"recipient_box_state": BoxState.MISSING}, True),
    ("to: {box_state: [active, disabled]}", {"recipient_box_state": BoxState.MISSING}, False),
    ("to: {box_state: missing}", {"recipient_box_state": None}, False),
    # message size: up to max_size; an unknown size is assumed to fit
    ("max_size: 10M", {"size": 10 * 1024 * 1024}, True),
    ("max_size: 10M", {"size": 10 * 1024 * 1024 + 1}, False),
    ("max_size: 1000", {"size": 999}, True),
    ("max_size: 512K", {"size": None}, True),
    # several conditions: all must hold
    ("from: {role: submission, network: 10.0.0.0/8}\n  to: {local: false}",
     {"recipient_local": False}, True),
    ("from: {role: submission, network: 10.0.0.0/8}\n  to: {local: true}",
     {"recipient_local": False}, False),
]


@pytest.mark.parametrize(("condition", "fields", "matches"), CONDITIONS)
def test_condition(condition: str, fields: dict[str, Any], matches: bool) -> None:
    m = matrix(f"- id: r\n  {condition}\n  action: allow")
    request = req(**fields)
    decision = m.decide(request)
    explained = m.explain(request)
    assert decision.verdict is (FlowVerdict.ALLOW if matches else FlowVerdict.DENY)
    assert decision.rule == ("r" if matches else "default")
    assert (explained.verdict, explained.rule) == (decision.verdict, decision.rule)
    if matches:
        assert explained.tried == ()
    else:
        [miss] = explained.tried
        assert miss.rule == "r" and miss.reasons


def test_unknown_size_is_assumed_and_said() -> None:
    m = matrix("- id: small\n  max_size: 1M\n  action: allow")
    assert m.decide(req(size=None)).size_assumed
    assert not m.decide(req(size=10)).size_assumed
    assert m.explain(req(size=None)).size_assumed
    no_limit = matrix("- id: any\n  action: allow")
    assert not no_limit.decide(req(size=None)).size_assumed


FIRST_MATCH = """
- id: block-lab-outside
  from: {box_type: APP}
  to: {local: false}
  action: deny
  reply: "550 5.7.1 Applications send to local boxes only"
- id: vpn-maintenance
  from: {network: 192.168.50.0/24}
  action: tempfail
  reply: "451 4.7.1 Maintenance, try later"
- id: practitioners-out
  from: {account_class: practitioner}
  to: {whitelisted: true}
  action: allow
- id: local
  to: {local: true}
  action: allow
- id: big-ones
  max_size: 1M
  to: {recipient: '*.fr'}
  action: allow
"""


@pytest.mark.parametrize(("fields", "rule", "verdict", "reply"), [
    ({"sender_box_type": MailboxType.APP}, "block-lab-outside", FlowVerdict.DENY,
     FlowReply(550, "5.7.1", "Applications send to local boxes only")),
    # the same lab box to a local recipient: rule 1 does not hold, "local" decides
    ({"sender_box_type": MailboxType.APP, "recipient_local": True}, "local", FlowVerdict.ALLOW,
     None),
    # a practitioner on the maintenance network: the earlier rule wins
    ({"client_ip": "192.168.50.7", "account_class": AccountClass.PRACTITIONER,
      "recipient_whitelisted": True}, "vpn-maintenance", FlowVerdict.TEMPFAIL,
     FlowReply(451, "4.7.1", "Maintenance, try later")),
    ({"account_class": AccountClass.PRACTITIONER, "recipient_whitelisted": True},
     "practitioners-out", FlowVerdict.ALLOW, None),
    ({"account_class": AccountClass.STAFF, "recipient_whitelisted": True, "size": 100},
     "big-ones", FlowVerdict.ALLOW, None),
    # the default names no reply: SMTP answers its own (mssmtpd.replies.flow_reply)
    ({"account_class": AccountClass.STAFF, "size": 2 * 1024 * 1024}, "default",
     FlowVerdict.DENY, None),
])
def test_first_match_wins(fields: dict[str, Any], rule: str, verdict: FlowVerdict,
                          reply: FlowReply | None) -> None:
    m = matrix(FIRST_MATCH)
    for decision in (m.decide(req(**fields)), m.explain(req(**fields))):
        assert (decision.rule, decision.verdict, decision.reply) == (rule, verdict, reply)
        assert decision.checksum == m.checksum


def test_explain_lists_every_rule_before_the_decision_with_each_failed_condition() -> None:
    m = matrix(FIRST_MATCH)
    d = m.explain(req(account_class=AccountClass.STAFF, size=2 * 1024 * 1024))
    assert d.rule == "default"
    assert [(t.rule, t.line) for t in d.tried] == [
        ("block-lab-outside", 4), ("vpn-maintenance", 9), ("practitioners-out", 13),
        ("local", 17), ("big-ones", 20)]
    assert d.tried[0].reasons == ("from.box_type wants APP, got no box here",)
    assert d.tried[1].reasons == ("from.network wants 192.168.50.0/24, got 10.1.2.3",)
    assert d.tried[2].reasons == ("from.account_class wants practitioner, got staff",
                                  "to.whitelisted wants true, got unknown (no whitelist)")
    assert d.tried[4].reasons == ("max_size wants at most 1048576 bytes, got 2097152 bytes",)


def test_default_allow_and_default_reply() -> None:
    assert matrix("[]", default="allow").decide(req()).verdict is FlowVerdict.ALLOW
    assert matrix("[]", default="allow").decide(req()).reply is None
    m = matrix("[]", extra='default_reply: "554 5.7.1 Not a declared flow"\n')
    d = m.decide(req())
    assert (d.verdict, d.rule, d.line) == (FlowVerdict.DENY, "default", 2)
    assert str(d.reply) == "554 5.7.1 Not a declared flow"
    t = matrix("[]", default="tempfail")
    assert t.decide(req()).reply is None  # SMTP's default for the verdict answers


def test_smtp_answers_a_rule_without_reply_with_its_default_for_the_verdict() -> None:
    from mssmtpd.replies import R, Reply, flow_reply

    m = matrix("""
        - id: hold
          from: {account_class: staff}
          action: tempfail
        - id: own-words
          from: {account_class: system}
          action: deny
          reply: "554 5.7.1 Systems do not send here"
        """)
    assert flow_reply(m.decide(req(account_class=AccountClass.STAFF))) == R.FLOW_TEMPFAIL
    assert flow_reply(m.decide(req())) == R.FLOW_DENIED  # the default, no default_reply
    assert flow_reply(m.decide(req(account_class=AccountClass.SYSTEM))) == Reply(
        554, "5.7.1", "Systems do not send here")
    assert str(R.FLOW_DENIED.to_bytes(), "ascii") == "550 5.7.1 Flow not allowed\r\n"


def test_audit_details_name_the_rule_and_the_matrix() -> None:
    m = matrix("- id: r\n  action: allow")
    details = m.decide(req()).audit_details()
    assert details == {"flow_rule": "r", "flow_matrix": m.checksum[len("sha256:"):][:16]}


def test_empty_rules_and_summary() -> None:
    m = parse_matrix("version: 1\ndefault: deny\nrules:\n", "f.yaml")
    assert len(m) == 0 and m.decide(req()).rule == "default"
    assert m.summary().startswith("0 rules, default deny, checksum sha256:")
    assert matrix("- id: a\n  action: allow").summary().startswith("1 rule, default deny")


# ---------------------------------------------------------------- decide == explain

_POOLS: dict[str, list[str]] = {
    "from.listener": ["submission", "submissions", "smtp-mx"],
    "from.role": ["mx", "submission"],
    "from.network": ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/24", "'2001:db8::/32'",
                     "0.0.0.0/0", "10.1.2.3"],
    "from.account": ["dr.martin@hopital.test", "'*@hopital.test'", "'sec.*'"],
    "from.account_class": ["practitioner", "staff", "system"],
    "from.method": ["card", "password", "none", "token"],
    "from.sender": ["hopital.test", "'*.test'", "dr.martin@hopital.test", "'<>'", "chu.fr"],
    "from.sender_local": ["true", "false"],
    "from.box_type": ["PER", "ORG", "APP"],
    "from.peer_dn": [f"'{DN}'", "'CN=other,C=FR'"],
    "from.peer_whitelisted": ["true", "false"],
    "to.recipient": ["chu-lyon.fr", "'*.fr'", "hopital.test", "secretariat@chu-lyon.fr"],
    "to.local": ["true", "false"],
    "to.whitelisted": ["true", "false"],
    "to.box_type": ["PER", "ORG"],
    "to.box_state": ["active", "missing", "disabled"],
    "max_size": ["1000", "1M"],
}


def random_matrix(rng: random.Random, n: int) -> str:
    rules = []
    for i in range(n):
        keys = rng.sample(sorted(_POOLS), rng.randint(1, 4))
        if "from.listener" in keys and "from.role" in keys:
            keys.remove("from.role")  # may exclude each other: refused on load
        sections: dict[str, list[str]] = {"from": [], "to": []}
        lines = [f"- id: r{i}"]
        for key in keys:
            values = rng.sample(_POOLS[key], rng.randint(1, min(3, len(_POOLS[key]))))
            if key == "max_size":
                lines.append(f"  max_size: {values[0]}")
                continue
            section, name = key.split(".")
            single = name in ("sender_local", "peer_whitelisted", "local", "whitelisted")
            sections[section].append(f"{name}: {values[0] if single else '[' + ', '.join(values) + ']'}")
        for section, conds in sections.items():
            if conds:
                lines.append(f"  {section}: {{{', '.join(conds)}}}")
        lines.append(f"  action: {rng.choice(['allow', 'deny', 'tempfail'])}")
        rules.append("\n".join(lines))
    return "\n".join(rules) or "[]"


_REQUEST_POOLS: dict[str, list[Any]] = {
    "listener": ["submission", "submissions", "smtp-mx"],
    "role": [ListenerRole.MX, ListenerRole.SUBMISSION],
    "sender": ["", "dr.martin@hopital.test", "a@x.hopital.test", "b@chu.fr",
               "Dr.Martin@hopital.test."],
    "recipient": ["secretariat@chu-lyon.fr", "x@hopital.test", "y@a.b.fr"],
    "client_ip": [None, "10.1.2.3", "10.2.0.1", "192.168.0.9", "2001:db8::1",
                  "::ffff:10.1.2.3", "8.8.8.8"],
    "account": [None, "dr.martin@hopital.test", "sec.petit@hopital.test"],
    "account_class": [None, *AccountClass],
    "auth_method": [None, *AuthMethod],
    "sender_local": [True, False],
    "sender_box_type": [None, *MailboxType],
    "peer_dn": [None, DN, "cn=other, c=fr", "CN=x,C=FR"],
    "peer_whitelisted": [None, True, False],
    "recipient_local": [True, False],
    "recipient_whitelisted": [None, True, False],
    "recipient_box_type": [None, *MailboxType],
    "recipient_box_state": [None, *BoxState],
    "size": [None, 10, 5000, 2 * 1024 * 1024],
}


@pytest.mark.parametrize("seed", range(30))
def test_indexed_decide_agrees_with_rule_by_rule_explain(seed: int) -> None:
    """Random matrices (seeded: reproducible) and requests: the indexed fast
    path decides exactly as the plain first-match walk."""
    rng = random.Random(seed)
    m = matrix(random_matrix(rng, rng.randint(0, 25)))
    decided_by = set()
    for _ in range(300):
        request = FlowRequest(**{k: rng.choice(v) for k, v in _REQUEST_POOLS.items()})
        fast, slow = m.decide(request), m.explain(request)
        assert (fast.rule, fast.verdict, fast.reply, fast.size_assumed) == (
            slow.rule, slow.verdict, slow.reply, slow.size_assumed)
        first = next((r.id for r in m.rules if all(c.test(request) for c in r.conditions)),
                     "default")
        assert fast.rule == first
        decided_by.add(fast.rule)
    assert len(decided_by) > 1 or len(m) == 0  # the requests do reach rules


_DESTINATION_FIELDS = ("recipient", "recipient_local", "recipient_whitelisted",
                       "recipient_box_type", "recipient_box_state")


@pytest.mark.parametrize("seed", range(30))
def test_decide_sender_answers_only_what_every_recipient_would_get(seed: int) -> None:
    """MAIL FROM: when `decide_sender` answers, every destination gets that
    decision from `decide`; when it says None, some pair of destinations is
    decided differently or by a rule that looks at the destination."""
    rng = random.Random(1000 + seed)
    m = matrix(random_matrix(rng, rng.randint(0, 25)))
    answered = undecided = 0
    for _ in range(150):
        source = {k: rng.choice(v) for k, v in _REQUEST_POOLS.items()
                  if k not in _DESTINATION_FIELDS}
        at_mail = m.decide_sender(FlowRequest(**source, recipient=""))
        destinations = [
            {k: rng.choice(_REQUEST_POOLS[k]) for k in _DESTINATION_FIELDS} for _ in range(40)]
        per_rcpt = [m.decide(FlowRequest(**source, **d)) for d in destinations]
        if at_mail is None:
            undecided += 1
            continue
        answered += 1
        for d in per_rcpt:
            assert (d.rule, d.verdict, d.reply) == (at_mail.rule, at_mail.verdict, at_mail.reply)
    assert answered + undecided == 150


def test_decide_sender_on_the_rules_of_the_shipped_kind() -> None:
    m = matrix("""
        - id: labo-internal-only
          from: {sender: labo@hopital.test}
          to: {local: false}
          action: deny
          reply: "550 5.7.1 The lab writes only inside the hospital"
        - id: no-mx-relay
          from: {role: mx}
          action: deny
        - id: big
          from: {role: submission}
          max_size: 1M
          action: allow
        - id: too-big
          action: deny
          reply: "552 5.3.4 Too big for this flow"
        """)
    # The lab's rule needs the recipient: undecided at MAIL.
    assert m.decide_sender(req(sender="labo@hopital.test", recipient="")) is None
    # A source-only rule decides for every recipient.
    mx = m.decide_sender(req(role=ListenerRole.MX, listener="smtp-mx", recipient=""))
    assert mx is not None and (mx.rule, mx.verdict) == ("no-mx-relay", FlowVerdict.DENY)
    # max_size with no SIZE= declared: undecided; declared: decided.
    assert m.decide_sender(req(recipient="")) is None
    small = m.decide_sender(req(recipient="", size=1000))
    assert small is not None and small.rule == "big" and small.allowed
    large = m.decide_sender(req(recipient="", size=5 * 1024 * 1024))
    assert large is not None and large.rule == "too-big"
    assert large.reply == FlowReply(552, "5.3.4", "Too big for this flow")
