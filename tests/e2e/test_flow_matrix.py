"""The flow matrix enforced by `mssctl serve` (an instance of `mssctl init
--demo`, whose flows.yaml is the shipped matrix): an operator's rule refuses
at RCPT with its own reply and is named in the audit; `mssctl policy explain`
gives the same decision; a broken matrix is refused on reload (the running
one stays in force) and stops a start."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import CARDIO, LABO, MssInstance, make_message, run_cli, run_mssctl
from mssctl_support import mssctl_cmd

pytestmark = pytest.mark.e2e

REMOTE = "secretariat@clinique.test"
RULE = """\
  - id: labo-stays-inside
    description: the laboratory's results never leave the hospital
    from: {account: labo@hopital.test}
    to: {local: false}
    action: deny
    reply: "550 5.7.1 The laboratory sends to local boxes only"
"""


def with_rule(flows: Path, rule: str) -> None:
    text = flows.read_text(encoding="utf-8")
    assert "\nrules:\n" in text
    flows.write_text(text.replace("\nrules:\n", "\nrules:\n" + rule, 1), encoding="utf-8")


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "flows")
    with_rule(inst.directory / "flows.yaml", RULE)
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def labo_sends(mss: MssInstance, recipient: str) -> tuple[int, bytes]:
    """The lab system's RCPT answer (and the end of DATA when accepted)."""
    with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=10) as s:
        s.starttls(context=mss.client_context(mss.cert_pair(LABO)))
        s.ehlo("labo.test")
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 235
        assert s.mail(LABO)[0] == 250
        code, text = s.rcpt(recipient)
        if code != 250:
            return code, text
        return s.data(make_message("Resultat", "K+ 4.1", sender=LABO, to=[recipient]))


def events(mss: MssInstance) -> list[dict[str, object]]:
    return [json.loads(line) for line in mss.audit_text().splitlines() if line.strip()]


def test_a_rule_refuses_with_its_reply_and_is_audited_and_explained(mss: MssInstance) -> None:
    assert labo_sends(mss, REMOTE) == (550, b"5.7.1 The laboratory sends to local boxes only")
    denied = [e for e in events(mss) if e["action"] == "rcpt" and e["target"] == REMOTE]
    assert denied[-1]["result"] == "deny" and denied[-1]["flow_rule"] == "labo-stays-inside"
    assert labo_sends(mss, CARDIO)[0] == 250  # local boxes: the shipped rule lets it pass
    allowed = [e for e in events(mss) if e["action"] == "rcpt" and e["target"] == CARDIO]
    assert allowed[-1]["result"] == "allow" and allowed[-1]["flow_rule"] == "deliver-local"
    out = run_mssctl(mss, "policy", "explain", "--from", LABO, "--to", REMOTE, "--as", LABO,
                     "--method", "org-certificate", "--listener", "submission")
    assert "labo-stays-inside" in out and "550 5.7.1" in out


def test_a_broken_matrix_is_refused_on_reload_and_the_running_one_stays(
        mss: MssInstance) -> None:
    flows = mss.directory / "flows.yaml"
    good = flows.read_text(encoding="utf-8")
    before = len([e for e in events(mss) if e["action"] == "reload"])
    try:
        broken = good.replace("    from: {account: labo@hopital.test}",
                              "    frm: {account: labo@hopital.test}")
        assert broken != good
        flows.write_text(broken, encoding="utf-8")
        assert mss.proc is not None
        mss.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(reloads := [e for e in events(mss) if e["action"] == "reload"]) <= before:
            assert time.monotonic() < deadline, "no reload event"
            time.sleep(0.05)  # polling the file the server appends to, bounded
        event = reloads[-1]
        assert event["result"] == "partial"
        problems = " ".join(str(p) for p in event["problems"])  # type: ignore[union-attr]
        assert "flows.yaml:" in problems and "labo-stays-inside" in problems
        assert "did you mean" in problems and "refused" in problems
        # The matrix in force is still the one with the rule.
        assert labo_sends(mss, REMOTE)[0] == 550
        assert labo_sends(mss, CARDIO)[0] == 250
    finally:
        flows.write_text(good, encoding="utf-8")


def test_serve_refuses_to_start_on_a_broken_matrix(tmp_path_factory: pytest.TempPathFactory) -> None:
    inst = MssInstance.demo(tmp_path_factory, "badflows")
    with_rule(inst.directory / "flows.yaml", RULE.replace("local: false", "lokal: false"))
    proc = subprocess.run(
        mssctl_cmd("serve", "--config", str(inst.directory / "mss.yaml")),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "flows.yaml:" in proc.stderr and "labo-stays-inside" in proc.stderr
    assert "lokal" in proc.stderr


def wait_reloads(mss: MssInstance, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while len(reloads := [e for e in events(mss) if e["action"] == "reload"]) < count:
        assert time.monotonic() < deadline, "no reload event"
        time.sleep(0.05)  # polling the file the server appends to, bounded
    return reloads


def test_mssctl_policy_reload(mss: MssInstance) -> None:

    flows = mss.directory / "flows.yaml"
    good = flows.read_text(encoding="utf-8")
    assert (mss.directory / "mss.pid").is_file()
    config = str(mss.directory / "mss.yaml")
    before = len([e for e in events(mss) if e["action"] == "reload"])
    try:
        flows.write_text(good.replace("    from: {account: labo@hopital.test}",
                                      "    frm: {account: labo@hopital.test}"), encoding="utf-8")
        code, out = run_cli("policy", "reload", "--config", config)
        assert code == 2 and "flows.yaml:" in out and "labo-stays-inside" in out
        flows.write_text(good, encoding="utf-8")
        with_rule(flows, RULE.replace("labo-stays-inside", "labo-not-cardio").replace(
            "{local: false}", "{recipient: cardiologie@hopital.test}"))
        code, out = run_cli("policy", "reload", "--config", config)
        assert code == 0 and "reload sent to pid" in out, out
        # Only the valid file was sent: one reload event, after the second call.
        event = wait_reloads(mss, before + 1)[-1]
        assert event["result"] == "ok" and event["flow_matrix_changed"] is True
        assert labo_sends(mss, CARDIO)[0] == 550
    finally:
        flows.write_text(good, encoding="utf-8")
        assert run_cli("policy", "reload", "--config", config)[0] == 0
        wait_reloads(mss, before + 2)
    assert labo_sends(mss, CARDIO)[0] == 250
    admin = [e for e in events(mss) if e["action"] == "policy-reload"]
    assert admin and str(admin[-1]["actor"]).startswith("admin:")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_queue_asks_the_matrix_again_before_relaying(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A message accepted for a peer operator waits in the queue (the peer is
    down); meanwhile the operator adds a rule refusing that flow and reloads:
    the next attempt fails the recipient with the rule's reply (DSN to the
    sender, `relay-flow` audit event naming the rule) instead of sending."""
    from integration_support import MARTIN, submit

    inst = MssInstance.demo(tmp_path_factory, "flowrelay")
    settings = inst.directory / "mss.yaml"
    text = settings.read_text(encoding="utf-8")
    route = f'routes: {{operateur-pair.test: "127.0.0.1:{_closed_port()}"}}'
    text = text.replace("routes: {}", route).replace("poll_interval: 5", "poll_interval: 0.2")
    text = text.replace("retry_initial: 60", "retry_initial: 0.5")
    settings.write_text(text, encoding="utf-8")
    peer = "dr.dupont@operateur-pair.test"
    inst.start()
    try:
        submit(inst, MARTIN, [peer], make_message("Compte rendu", "texte", sender=MARTIN,
                                                  to=[peer]), password_of=MARTIN)
        deadline = time.monotonic() + 20
        while not [e for e in events(inst) if e["action"] == "relay" and e["target"] == peer
                   and e["result"] == "deferred"]:
            assert time.monotonic() < deadline, "the relay never tried"
            time.sleep(0.1)  # polling the file the server appends to, bounded
        first = [e for e in events(inst) if e["action"] == "relay-flow"]
        assert first and first[0]["result"] == "allow"
        assert first[0]["flow_rule"] == "relay-to-trust-space"
        with_rule(inst.directory / "flows.yaml", """\
  - id: no-more-mail-to-the-peer
    to: {recipient: operateur-pair.test}
    action: deny
    reply: "550 5.7.1 Mail to operateur-pair.test is suspended"
""")
        code, out = run_cli("policy", "reload", "--config", str(settings))
        assert code == 0, out
        deadline = time.monotonic() + 20
        while not [e for e in events(inst) if e["action"] == "relay" and e["target"] == peer
                   and e["result"] == "fail"]:
            assert time.monotonic() < deadline, "the queue did not ask the matrix again"
            time.sleep(0.1)  # polling the file the server appends to, bounded
        denied = [e for e in events(inst) if e["action"] == "relay-flow"
                  and e["result"] == "deny"]
        assert denied[-1]["target"] == peer
        assert denied[-1]["flow_rule"] == "no-more-mail-to-the-peer"
        failed = [e for e in events(inst) if e["action"] == "relay" and e["result"] == "fail"]
        assert "550 5.7.1 Mail to operateur-pair.test is suspended" in str(failed[-1]["error"])
        assert "no-more-mail-to-the-peer" in str(failed[-1]["error"])
        assert run_mssctl(inst, "queue", "list").count("\n") <= 1  # the entry is gone
    finally:
        assert inst.stop() == 0, inst.log_tail()
