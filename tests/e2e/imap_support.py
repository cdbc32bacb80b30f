"""A real IMAP server in a subprocess, for end-to-end tests and the benchmark.

`make_world(directory, pki)` creates a SQLite store (or, given `url=`, fills
a PostgreSQL database) with accounts, mailboxes and grants, and returns a
JSON-able config; `ServerProcess(config)` runs
``python imap_support.py config.json`` which listens on 127.0.0.1 (port 0, or
the given ports with SO_REUSEPORT so several workers share them) and prints
``{"listener": port}`` once ready. The parent never shares a reactor with it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(ROOT), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

PASSWORD = "correct horse battery staple"
SECRETARY = "secretaire@hopital.test"
SECRETARY2 = "accueil@hopital.test"
CARDIO = "cardiologie@hopital.test"
DOCTOR = "dr.martin@hopital.test"


def make_world(directory: Path, pki: Any, *, users: int = 0,
               url: str | None = None) -> dict[str, Any]:
    """The accounts, mailboxes and grants of the tests in a new store, and the
    server config naming it. The store is a SQLite file in `directory`, or
    the database at `url` (e.g. a PostgreSQL one of the `pg_cluster`
    fixture: ``pg_cluster.url(pg_cluster.new_database())``), migrated here;
    the key file, audit log and server files are in `directory` either way."""
    from cryptography import x509

    from certs.identity import identity_from_certificate
    from policy.passwords import hash_password
    from storage import open_store
    from storage.crypto import generate_key_file
    from storage.interface import AccountClass, MailboxType

    directory.mkdir(parents=True, exist_ok=True)
    if url is None:
        url = f"sqlite:///{directory / 'mss.db'}"
    key_file = directory / "keys"
    generate_key_file(key_file)
    store = open_store(url, key_file, create=True)
    store.add_domain("hopital.test")
    pw = hash_password(PASSWORD, n=2**4)
    sec = store.add_account(SECRETARY, "Secrétaire", AccountClass.STAFF, password_hash=pw)
    store.add_mailbox(SECRETARY, MailboxType.PER, owner_account_id=sec.id)
    sec2 = store.add_account(SECRETARY2, "Accueil", AccountClass.STAFF, password_hash=pw)
    store.add_mailbox(SECRETARY2, MailboxType.PER, owner_account_id=sec2.id)
    cardio = store.add_mailbox(CARDIO, MailboxType.ORG, display_name="Cardiologie")
    store.set_grant(sec.id, cardio.id, "lrswipkxte")
    store.set_grant(sec2.id, cardio.id, "lrswipkxte")
    for i in range(users):
        login = f"user{i}@hopital.test"
        acc = store.add_account(login, login, AccountClass.STAFF, password_hash=pw)
        store.add_mailbox(login, MailboxType.PER, owner_account_id=acc.id)
    if pki is not None and pki.practitioner is not None:
        cert = x509.load_pem_x509_certificate(pki.practitioner.cert.read_bytes())
        idnat = identity_from_certificate(cert).idnat
        doc = store.add_account(DOCTOR, "Dr Martin", AccountClass.PRACTITIONER, idnat=idnat)
        store.add_mailbox(DOCTOR, MailboxType.PER, owner_account_id=doc.id)
    store.close()
    tls = None
    if pki is not None:
        tls = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key),
               "ca_files": [str(pki.ca_bundle)], "crl_files": [str(p) for p in pki.crl_files]}
    return {
        "url": url,
        "key_file": str(key_file),
        "audit": str(directory / "audit.log"),
        "tls": tls,
        "listeners": [
            {"name": "imaps", "port": 0, "role": "imap", "tls": "implicit"},
            {"name": "imap", "port": 0, "role": "imap", "tls": "starttls"},
            {"name": "plain", "port": 0, "role": "imap", "tls": "none"},
        ] if tls else [{"name": "plain", "port": 0, "role": "imap", "tls": "none"}],
        "ports": {},
    }


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run_server(config: dict[str, Any]) -> None:
    from store_support import TEST_LOGIN_METHODS
    from twisted.internet import reactor

    from conf.settings import Settings
    from imapd.server import build_factory
    from mssctl.ports import adopt_port
    from policy.audit import FileAuditSink
    from policy.auth import Authenticator
    from policy.decisions import Policy
    from policy.services import Services
    from storage import open_store
    from storage.threaded import runner_for

    tls_values = config["tls"] or {
        "cert_file": "/nonexistent", "key_file": "/nonexistent", "ca_files": []}
    settings = Settings.model_validate({
        "hostname": "localhost",
        "domains": ["hopital.test"],
        "listeners": config["listeners"],
        "database": {"url": config["url"], **({"threads": config["threads"]} if "threads" in config else {})},
        "tls": tls_values,
        "audit": {"path": config["audit"]},
        "key_file": config["key_file"],
        "policy": {"login_methods": TEST_LOGIN_METHODS},
        **({"limits": config["limits"]} if "limits" in config else {}),
    })
    store = open_store(settings.database.url, settings.key_file)
    audit = FileAuditSink(settings.audit.path, store)  # mirrored into the store, as in service
    policy = Policy(settings, store, audit)
    runner = runner_for(reactor, store, settings.database.threads)
    tls = None
    if config["tls"]:
        from certs.tls import ServerTLS

        tls = ServerTLS(settings.tls)
    services = Services(settings=settings, store=store, policy=policy, audit=audit,
                        runner=runner, authenticator=Authenticator(policy, runner),
                        reactor=reactor, tls=tls)
    ports: dict[str, int] = {}
    keep = []
    for listener in settings.listeners:
        sock = _listen(int(config["ports"].get(listener.name, 0)))
        keep.append(sock)
        adopt_port(reactor, sock, build_factory(services, listener))  # as `mssctl serve`
        ports[listener.name] = sock.getsockname()[1]
    print(json.dumps(ports), flush=True)
    reactor.run()


class ServerProcess:
    """``with ServerProcess(config, tmp) as ports: ...``"""

    def __init__(self, config: dict[str, Any], directory: Path, name: str = "server") -> None:
        self.config = config
        self.path = directory / f"{name}.json"
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0) -> dict[str, int]:
        self.path.write_text(json.dumps(self.config))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "imap_support.py"), str(self.path)],
            stdout=subprocess.PIPE, stderr=open(self.log, "wb"), env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
            if self.proc.poll() is not None and not ready:
                break
        if not line.endswith(b"\n"):
            self.stop()
            raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")
        self.ports = json.loads(line)
        return self.ports

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> dict[str, int]:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextmanager
def workers(config: dict[str, Any], directory: Path, count: int = 2) -> Iterator[dict[str, int]]:
    """`count` server processes sharing the same ports (SO_REUSEPORT), as
    `mssctl serve --workers N` runs them; yields the ports."""
    servers: list[ServerProcess] = []
    ports: dict[str, int] = {}
    try:
        for i in range(count):
            server = ServerProcess(dict(config, ports=ports), directory, f"worker-{i}")
            got = server.start()
            ports = ports or got
            servers.append(server)
        yield ports
    finally:
        for server in servers:
            server.stop()


def client_ssl_context(pki: Any, cert: Any = None) -> Any:
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    # The dev server certificate names IP:127.0.0.1, as Thunderbird users need.
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


if __name__ == "__main__":
    run_server(json.loads(Path(sys.argv[1]).read_text()))
