"""README's two-operator example: two `mssctl init --demo` instances, peered
both ways with `mssctl peer add`, relay to each other over mutual TLS with the
DN checks on (`policy.relay_dn_check: strict`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import MssInstance, make_message, run_cli, run_mssctl, submit

from certs.trust import load_pem_certificates
from conf.loader import load_settings
from storage import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _inbox_subjects(inst: MssInstance, address: str) -> list[bytes]:
    settings = load_settings(inst.directory / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        folder = store.get_folder(store.get_mailbox(address).id, "INBOX")
        return [store.message_body(folder.id, e.uid) for e in store.index(folder.id)]
    finally:
        store.close()


def _wait(predicate: object, timeout: float = 30.0) -> object:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)  # polling with a deadline


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[MssInstance, MssInstance]]:
    a = MssInstance.create(tmp_path / "a")
    b = MssInstance.create(tmp_path / "b", domain="clinique.test")
    yield a, b
    for inst in (a, b):
        inst.kill()


def test_two_instances_peered_both_ways_relay_to_each_other(
        pair: tuple[MssInstance, MssInstance]) -> None:
    a, b = pair
    out = run_mssctl(a, "peer", "add", str(b.directory))
    assert "peer clinique.test" in out
    run_mssctl(b, "peer", "add", str(a.directory))
    settings_a = load_settings(a.directory / "mss.yaml")
    assert settings_a.queue.routes == {"clinique.test": f"127.0.0.1:{b.port('smtp-mx')}"}
    assert settings_a.policy.relay_dn_check.value == "strict"
    # Unique CA names: each instance's CA names its domain.
    ca_b = load_pem_certificates(b.directory / "pki" / "ca.pem")
    assert all(c.subject.rfc4514_string().startswith("CN=AC ") and "clinique.test"
               in c.subject.rfc4514_string() for c in ca_b)
    audit = [json.loads(x) for x in (a.directory / "audit.log").read_text().splitlines()]
    assert any(e["action"] == "peer-add" and e["result"] == "ok" for e in audit)
    a.start()
    b.start()
    to_b = make_message("to-clinique", "hello b", sender="sec.durand@hopital.test",
                        to=["sec.durand@clinique.test"])
    submit(a, "sec.durand@hopital.test", ["sec.durand@clinique.test"], to_b,
           password_of="sec.durand@hopital.test")
    to_a = make_message("to-hopital", "hello a", sender="sec.durand@clinique.test",
                        to=["sec.durand@hopital.test"])
    submit(b, "sec.durand@clinique.test", ["sec.durand@hopital.test"], to_a,
           password_of="sec.durand@clinique.test")
    got_b = _wait(lambda: [m for m in _inbox_subjects(b, "sec.durand@clinique.test")
                           if b"Subject: to-clinique" in m])
    got_a = _wait(lambda: [m for m in _inbox_subjects(a, "sec.durand@hopital.test")
                           if b"Subject: to-hopital" in m])
    assert got_b, b.log_tail()
    assert got_a, a.log_tail()
    # Mutual TLS: each side saw the other's operator certificate.
    assert b"(client certificate CN=mx.hopital.test" in got_b[0]  # type: ignore[index]
    assert b"(client certificate CN=mx.clinique.test" in got_a[0]  # type: ignore[index]


def test_peer_add_is_idempotent_and_refuses_a_non_instance(
        pair: tuple[MssInstance, MssInstance], tmp_path: Path) -> None:
    a, b = pair
    run_mssctl(a, "peer", "add", str(b.directory))
    before = (a.directory / "mss.yaml").read_text()
    run_mssctl(a, "peer", "add", str(b.directory))
    assert (a.directory / "mss.yaml").read_text() == before
    assert (a.directory / "whitelist.xml").read_text().count("<Nom>clinique.test</Nom>") == 1
    code, out = run_cli("peer", "add", str(tmp_path / "nowhere"),
                        "--config", str(a.directory / "mss.yaml"))
    assert code != 0 and "not a usable instance" in out


def test_peer_add_keeps_the_settings_mode_and_refuses_a_broken_peer(
        pair: tuple[MssInstance, MssInstance], tmp_path: Path) -> None:
    import shutil
    import stat

    a, b = pair
    config = a.directory / "mss.yaml"
    config.chmod(0o600)  # it may hold a database password
    run_mssctl(a, "peer", "add", str(b.directory))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    broken = tmp_path / "broken"
    shutil.copytree(b.directory, broken)
    settings = (broken / "mss.yaml").read_text()
    cert = next(line.split(":", 1)[1].strip() for line in settings.splitlines()
                if line.strip().startswith("cert_file:"))
    (broken / cert).write_text("not a certificate\n")
    code, out = run_cli("peer", "add", str(broken), "--config", str(config))
    assert code == 1 and "cannot read the peer's server certificate" in out, out
    assert "Traceback" not in out
