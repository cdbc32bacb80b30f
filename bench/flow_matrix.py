"""Flow-matrix decision time (not a timed test): a generated 500-rule matrix,
decided for flows that match rules early, late, through patterns, or no rule
at all (the default), in microseconds per decision (one recipient).

Prints, per kind of flow, the best of several runs; "typical" is the median
over all flows, "worst case" the slowest flow; the cost of loading the file
(what a reload costs); and, for comparison, the same first match found by
testing each rule's conditions in turn, without the index.
Run: .venv/bin/python bench/flow_matrix.py [--rules N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conf.settings import ListenerRole  # noqa: E402
from policy.flows import (  # noqa: E402
    AuthMethod,
    BoxState,
    FlowMatrix,
    FlowRequest,
    load_matrix,
)
from storage.interface import AccountClass, MailboxType  # noqa: E402

LISTENERS = {"smtp-mx": ListenerRole.MX, "submission": ListenerRole.SUBMISSION,
             "submissions": ListenerRole.SUBMISSION}


def generate(n: int) -> str:
    """Five kinds of rules in turn: client networks to a partner's domains,
    named accounts, functional boxes of a partner, teams by login glob with a
    size limit, operators by certificate DN; the shipped rules at the end."""
    out = ["version: 1", "default: deny", 'default_reply: "550 5.7.1 Relaying denied"',
           "rules:"]
    for i in range(n - 4):
        kind = i % 5
        out.append(f"  - id: r{i}-k{kind}")
        if kind == 0:
            out.append(f"    from: {{role: submission, network: [10.{i // 256}.{i % 256}.0/24, "
                       f"'2001:db8:{i:x}::/48']}}")
            out.append(f"    to: {{recipient: [partner{i}.fr, '*.partner{i}.fr']}}")
            out.append("    action: allow")
        elif kind == 1:
            out.append(f"    from: {{account: [user{i}@hopital.test, alt{i}@hopital.test], "
                       "method: [card, password+totp]}")
            out.append("    to: {whitelisted: true}")
            out.append("    action: allow")
        elif kind == 2:
            out.append(f"    from: {{sender: [svc{i}.chu.fr, '*.svc{i}.chu.fr']}}")
            out.append("    to: {local: true, box_type: [ORG, APP]}")
            out.append("    action: deny")
            out.append(f'    reply: "550 5.7.1 Partner {i} writes to personal boxes only"')
        elif kind == 3:
            out.append(f"    from: {{account: 'team{i}-*@hopital.test', "
                       "account_class: [staff, system]}")
            out.append("    max_size: 5M")
            out.append("    action: allow")
        else:
            out.append(f"    from: {{role: mx, peer_dn: 'CN=mx{i}.operateur.fr,OU=1{i:09d},"
                       f"O=Operateur {i},ST=Paris (75),C=FR'}}")
            out.append("    to: {local: true, box_state: active}")
            out.append("    action: allow")
    out += [
        "  - id: unknown-recipient",
        "    to: {local: true, box_state: missing}",
        "    action: deny",
        '    reply: "550 5.1.1 No such recipient"',
        "  - id: deliver-local",
        "    to: {local: true}",
        "    action: allow",
        "  - id: relay-outside-trust-space",
        "    to: {local: false, whitelisted: false}",
        "    action: deny",
        "  - id: relay-to-trust-space",
        "    from: {role: submission}",
        "    to: {local: false}",
        "    action: allow",
    ]
    return "\n".join(out) + "\n"


def flows(n: int) -> dict[str, FlowRequest]:
    sub = {"listener": "submission", "role": ListenerRole.SUBMISSION}
    mx = {"listener": "smtp-mx", "role": ListenerRole.MX}
    late = (n - 4) - (n - 4) % 5 - 5  # a kind-0 rule near the end
    return {
        "early rule (network + domain)": FlowRequest(
            **sub, sender="a@hopital.test", recipient="x@partner0.fr", client_ip="10.0.0.7",
            account="a@hopital.test", auth_method=AuthMethod.PASSWORD),
        "late rule (IPv6 network + *.domain)": FlowRequest(
            **sub, sender="a@hopital.test", recipient=f"x@lab.partner{late}.fr",
            client_ip=f"2001:db8:{late:x}::9", account="a@hopital.test",
            auth_method=AuthMethod.PASSWORD),
        "named account": FlowRequest(
            **sub, sender="u@hopital.test", recipient="x@autre.fr", client_ip="172.16.0.1",
            account=f"alt{n // 2 + 1 - (n // 2 + 1) % 5 + 1}@hopital.test",
            auth_method=AuthMethod.CARD, recipient_whitelisted=True),
        "account glob + max_size": FlowRequest(
            **sub, sender="t@hopital.test", recipient="x@ailleurs.fr", client_ip="172.16.0.1",
            account=f"team{n - 11 - (n - 11) % 5 + 3}-dupont@hopital.test",
            account_class=AccountClass.STAFF, auth_method=AuthMethod.PASSWORD, size=1000),
        "operator DN (mx)": FlowRequest(
            **mx, sender="a@operateur.fr", recipient="dr.x@hopital.test", client_ip="192.0.2.1",
            peer_dn=f"CN=mx{n // 3 - (n // 3) % 5 + 4}.operateur.fr,OU=1{n // 3 - (n // 3) % 5 + 4:09d},"
                    f"O=Operateur {n // 3 - (n // 3) % 5 + 4},ST=Paris (75),C=FR",
            recipient_local=True, recipient_box_type=MailboxType.PER,
            recipient_box_state=BoxState.ACTIVE),
        "no special rule: shipped rules at the end": FlowRequest(
            **sub, sender="a@hopital.test", recipient="b@hopital.test", client_ip="172.16.0.1",
            account="a@hopital.test", account_class=AccountClass.PRACTITIONER,
            auth_method=AuthMethod.CARD, recipient_local=True,
            recipient_box_type=MailboxType.PER, recipient_box_state=BoxState.ACTIVE),
        "no rule at all: the default": FlowRequest(
            **mx, sender="a@inconnu.fr", recipient="b@ailleurs.fr", client_ip="203.0.113.5",
            peer_dn="CN=mx.inconnu.fr,C=FR", recipient_whitelisted=True),
        "unknown account, many glob rules tried": FlowRequest(
            **sub, sender="z@hopital.test", recipient="x@ailleurs.fr", client_ip="172.16.0.1",
            account="team-nobody@hopital.test", account_class=AccountClass.STAFF,
            auth_method=AuthMethod.PASSWORD, recipient_whitelisted=True),
    }


def per_decision_us(fn: object, request: FlowRequest, loops: int, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(loops):
            fn(request)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t) / loops)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=500)
    ap.add_argument("--loops", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flows.yaml"
        path.write_text(generate(args.rules), encoding="utf-8")
        size = path.stat().st_size
        t = time.perf_counter()
        matrix: FlowMatrix = load_matrix(path, listeners=LISTENERS)
        load_ms = (time.perf_counter() - t) * 1000
    print(f"matrix: {len(matrix)} rules ({size // 1024} KiB), loaded and compiled in "
          f"{load_ms:.0f} ms")

    def linear(request: FlowRequest) -> str:
        """The same first match without the index: each rule's conditions in turn."""
        return next((r.id for r in matrix.rules if all(c.test(request) for c in r.conditions)),
                    "default")

    results: dict[str, float] = {}
    for name, request in flows(len(matrix)).items():
        decision = matrix.decide(request)
        assert decision.rule == matrix.explain(request).rule
        us = per_decision_us(matrix.decide, request, args.loops)
        assert decision.rule == linear(request)
        slow = per_decision_us(linear, request, max(args.loops // 50, 20), repeat=3)
        results[name] = us
        print(f"  {name:<42} -> {decision.rule:<22} {us:5.1f} us"
              f"  (without the index: {slow:6.0f} us)")
    print(f"decide: typical {statistics.median(results.values()):.1f} us, worst case "
          f"{max(results.values()):.1f} us per decision (one recipient)")


if __name__ == "__main__":
    main()
