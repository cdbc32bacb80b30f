"""`mssctl doctor` on a healthy running demo instance, and on broken ones:
an expired server certificate, a stale CRL, a world-readable key file, a
database not migrated to the latest revision, a listener that is down. Each
broken variant is a second settings file in the running instance's directory
(paths are relative to it), so one server serves every case."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from integration_support import MssInstance
from mssctl_support import mssctl_inprocess

from certs.devpki import make_crl
from storage import head_revision, migrate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "doctor")
    # One listener behind a load balancer: doctor speaks the PROXY protocol to it.
    config = inst.directory / "mss.yaml"
    text = config.read_text(encoding="utf-8")
    line = f"port: {inst.port('submissions')}, role: submission, tls: implicit"
    assert line in text
    config.write_text(text.replace(line, line + ", proxy_protocol: true"), encoding="utf-8")
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def doctor(config: Path, *extra: str) -> tuple[int, list[tuple[str, str, str]], str]:
    code, out, err = mssctl_inprocess("doctor", "--config", str(config), *extra)
    assert "Traceback" not in out + err
    lines = out.splitlines()
    assert re.match(r"^\d+ checks: \d+ ok, \d+ warning\(s\), \d+ failure\(s\)$", lines[-1]), out
    rows = []
    for line in lines[:-1]:
        m = re.match(r"^(OK|WARN|FAIL)\s+(\S+)\s+(.+)$", line)
        assert m, line
        rows.append((m.group(1), m.group(2), m.group(3)))
    return code, rows, out


def variant(inst: MssInstance, name: str, *replacements: tuple[str, str]) -> Path:
    text = (inst.directory / "mss.yaml").read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = inst.directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def failures(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [r for r in rows if r[0] != "OK"]


def test_healthy_instance(running: MssInstance) -> None:
    code, rows, out = doctor(running.directory / "mss.yaml")
    assert code == 0 and not failures(rows), out
    names = {name for _, name, _ in rows}
    assert names == {"settings", "certificate", "key-file", "crl", "whitelist", "database",
                     "queue", "server", "listener"}
    assert ("OK", "server", f"serve is running, pid {running.proc.pid}") in rows  # type: ignore[union-attr]
    reasons = "\n".join(r for _, _, r in rows)
    assert re.search(r"server CN=mx\.hopital\.test,.*: expires on \d{4}-\d\d-\d\d \(in 82\d days\)",
                     reasons)
    assert len([r for r in rows if r[1] == "crl"]) == 3  # one per CA of the dev PKI
    assert re.search(r"whitelist\.xml: \d+ entries for 2 domains, generated", reasons)
    assert f"schema at the latest revision ({head_revision()})" in reasons
    assert re.search(r"key_file \S+/keys: mode 0600, 1 key\(s\)", reasons)
    listeners = [r for _, n, r in rows if n == "listener"]
    assert len(listeners) == 5
    assert any(r.startswith("imaps ") and ": * OK" in r for r in listeners)  # through TLS
    assert any(r.startswith("submissions ") and ": 220 " in r for r in listeners)  # PROXY, TLS


def test_a_warning_is_exit_status_1(running: MssInstance) -> None:
    code, rows, out = doctor(running.directory / "mss.yaml", "--cert-warn-days", "1000")
    assert code == 1, out
    assert {(lvl, name) for lvl, name, _ in failures(rows)} == {("WARN", "certificate")}


def test_expired_certificate(running: MssInstance) -> None:
    pki = running.directory / "pki"
    key = serialization.load_pem_private_key((pki / "server.key").read_bytes(), password=None)
    current = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    expired = (x509.CertificateBuilder().subject_name(current.subject)
               .issuer_name(current.subject).public_key(current.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=400))
               .not_valid_after(now - dt.timedelta(days=3))
               .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    (pki / "expired.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    config = variant(running, "expired", ("cert_file: pki/server.pem",
                                          "cert_file: pki/expired.pem"))
    code, rows, out = doctor(config)
    assert code == 2, out
    bad = failures(rows)
    assert len(bad) == 1 and bad[0][:2] == ("FAIL", "certificate"), out
    assert re.search(r"server CN=mx\.hopital\.test,.*: expired on \d{4}-\d\d-\d\d \(3 days ago\)",
                     bad[0][2])


def test_stale_crl(running: MssInstance) -> None:
    pki = running.directory / "pki"
    now = dt.datetime.now(dt.UTC)
    make_crl(pki / "persons-ca.pem", pki / "persons-ca.key", pki / "stale.crl.pem",
             last_update=now - dt.timedelta(days=9), next_update=now - dt.timedelta(days=2))
    config = variant(running, "stale", ("    - pki/crl.pem\n",
                                        "    - pki/root-ca.crl.pem\n"
                                        "    - pki/organisations-ca.crl.pem\n"
                                        "    - pki/stale.crl.pem\n"))
    code, rows, out = doctor(config)
    assert code == 2, out
    bad = failures(rows)
    assert len(bad) == 1 and bad[0][:2] == ("FAIL", "crl"), out
    assert bad[0][2].startswith("CRL of CN=AC IGC-SANTE DEV PERSONNES")
    assert "stale, its next update was due" in bad[0][2] and "(2 days ago)" in bad[0][2]

    # Due within the warning window: a warning, exit status 1.
    make_crl(pki / "persons-ca.pem", pki / "persons-ca.key", pki / "stale.crl.pem",
             last_update=now - dt.timedelta(days=6), next_update=now + dt.timedelta(hours=3))
    code, rows, out = doctor(config)
    assert code == 1 and [r[:2] for r in failures(rows)] == [("WARN", "crl")], out
    assert "within 24 h: fetch it" in failures(rows)[0][2]


def test_world_readable_key_file(running: MssInstance) -> None:
    shutil.copy(running.directory / "keys", running.directory / "keys-open")
    os.chmod(running.directory / "keys-open", 0o644)
    config = variant(running, "openkey", ("key_file: keys", "key_file: keys-open"))
    code, rows, out = doctor(config)
    assert code == 2, out
    assert ("FAIL", "key-file") in [r[:2] for r in rows]
    line = next(r for lvl, n, r in rows if lvl == "FAIL")
    assert line.endswith("keys-open: mode 0644 lets others read it (chmod 600)")
    # The queue cannot be read without a usable key: said, not hidden.
    assert any(lvl == "WARN" and n == "queue" and "not checked" in r for lvl, n, r in rows)


def test_database_not_migrated(running: MssInstance) -> None:
    from alembic.script import ScriptDirectory

    from storage import _alembic_config

    head = head_revision()
    previous = ScriptDirectory.from_config(_alembic_config("")).get_revision(head).down_revision
    assert isinstance(previous, str)
    old = running.directory / "old.db"
    migrate(f"sqlite:///{old}", previous)
    config = variant(running, "olddb", ("url: sqlite:///mss.db", "url: sqlite:///old.db"))
    code, rows, out = doctor(config)
    assert code == 2, out
    db = [r for r in rows if r[1] == "database"]
    assert db == [("FAIL", "database", f"sqlite:///{old}: schema at {previous}, not {head}: "
                                       "run `mssctl db upgrade`")], out


def test_listener_down(running: MssInstance) -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    imap = running.port("imap")
    config = variant(running, "down", (f"port: {imap},", f"port: {closed},"))
    code, rows, out = doctor(config, "--timeout", "2")
    assert code == 2, out
    assert failures(rows) == [("FAIL", "listener",
                               f"imap 127.0.0.1:{closed}: connection refused")], out


def test_a_broken_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "mss.yaml"
    config.write_text("domains: [a.test]\nlistners: []\n", encoding="utf-8")
    code, rows, out = doctor(config)
    assert code == 2
    assert rows and all(lvl == "FAIL" and n == "settings" for lvl, n, _ in rows), out


def test_database_unreachable(running: MssInstance) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    config = variant(running, "nodb", ("url: sqlite:///mss.db",
                                       f"url: postgresql+psycopg2://mss@127.0.0.1:{closed}/mss"))
    code, rows, out = doctor(config)
    assert code == 2, out
    db = [r for r in rows if r[1] == "database"]
    assert len(db) == 1 and db[0][0] == "FAIL", out
    assert db[0][2].startswith(f"postgresql+psycopg2://mss@127.0.0.1:{closed}/mss: unreachable ("), out
    assert "Connection refused" in db[0][2]
    assert any(lvl == "WARN" and n == "queue" and "not checked" in r for lvl, n, r in rows)


def test_stopped_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    inst = MssInstance.demo(tmp_path_factory, "doctor-stopped")
    code, rows, out = doctor(inst.directory / "mss.yaml", "--timeout", "2")
    assert code == 2, out
    assert ("WARN", "server", "no mss.pid beside the settings: serve is not running (or "
                              "cannot write there)") in rows
    listeners = [r for r in rows if r[1] == "listener"]
    assert len(listeners) == 5 and all(lvl == "FAIL" and r.endswith(": connection refused")
                                       for lvl, _, r in listeners), out


@pytest.mark.postgres
def test_database_on_postgresql(running: MssInstance, pg_cluster: Any) -> None:
    url = pg_cluster.url(pg_cluster.new_database())
    config = variant(running, "pg", ("url: sqlite:///mss.db", f"url: {url}"))
    code, rows, out = doctor(config)
    assert code == 0, out
    db = [r for r in rows if r[1] == "database"]
    assert db == [("OK", "database", f"{url}: reachable, schema at the latest revision "
                                     f"({head_revision()})")], out
    assert ("OK", "queue", "empty") in rows

    # A blank database: never migrated.
    bare = pg_cluster.url(pg_cluster.new_database(template=None))
    config = variant(running, "pg-bare", ("url: sqlite:///mss.db", f"url: {bare}"))
    code, rows, out = doctor(config)
    assert code == 2
    assert ("FAIL", "database", f"{bare}: schema at nothing, not {head_revision()}: run "
                                "`mssctl db upgrade`") in rows, out


def test_proxy_listener_that_does_not_trust_us(running: MssInstance) -> None:
    """A PROXY listener whose proxy_from leaves this host out closes without a
    word: here a socket that does just that, named by the settings as the
    submissions listener. The failure says where to look."""
    import threading

    closer = socket.socket()
    closer.bind(("127.0.0.1", 0))
    closer.listen(1)
    port = closer.getsockname()[1]

    def close_one() -> None:
        conn, _ = closer.accept()
        conn.close()

    thread = threading.Thread(target=close_one, daemon=True)
    thread.start()
    try:
        config = variant(running, "proxyhint", (f"port: {running.port('submissions')},",
                                                f"port: {port},"))
        code, rows, out = doctor(config, "--timeout", "3")
    finally:
        thread.join(5)
        closer.close()
    assert code == 2, out
    bad = [r for r in rows if r[0] != "OK"]
    assert len(bad) == 1 and bad[0][:2] == ("FAIL", "listener"), out
    assert bad[0][2].startswith(f"submissions 127.0.0.1:{port}: ")
    assert bad[0][2].endswith(" (a PROXY protocol listener: is this host in its proxy_from?)")
