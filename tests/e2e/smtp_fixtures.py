"""Real SMTP server instances for e2e tests: own PKI, own SQLite store, own
process (`python -m mssmtpd.devserve`), listeners on 127.0.0.1 port 0.

An `Instance` serves one domain. `mx` (STARTTLS, client cert optional),
`submission` (STARTTLS) and `submissions` (implicit TLS) listeners. Users:
`alice@<domain>` (staff, password) and the APP box `labo@<domain>` whose
organisation certificate logs in with EXTERNAL.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from store_support import TEST_LOGIN_METHODS

from certs.devpki import DevPKI, IssuedCert, make_dev_pki
from conf.settings import Settings
from policy.passwords import hash_password
from storage.interface import AccountClass, MailboxType

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Securite-2026!"
_HASH = hash_password(PASSWORD, n=2**4)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Polls until `predicate()` is truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def whitelist_xml(entries: list[tuple[str, str]]) -> bytes:
    doms = "".join(
        f"<Domaine><Nom>{d}</Nom><Description>x</Description>"
        f"<DNCertificatOperateur>{dn}</DNCertificatOperateur></Domaine>"
        for d, dn in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
        f"<DateDeGeneration>2026-11-27</DateDeGeneration><ListeDomaines>{doms}</ListeDomaines>"
        "</ListeBlancheMSSante>"
    ).encode()


class Instance:
    def __init__(self, directory: Path, domain: str, *, queue: dict[str, Any] | None = None,
                 limits: dict[str, Any] | None = None, policy: dict[str, Any] | None = None,
                 extra_ca: list[Path] | None = None, workers: int = 1,
                 pki: DevPKI | None = None, server_cert: IssuedCert | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        # Operators of the trust space share one PKI (IGC-Santé): a second
        # instance takes the first one's PKI and its `peer_operator` certificate.
        self.pki: DevPKI = pki or make_dev_pki(
            self.dir / "pki", hostnames=[f"mx.{domain}", "localhost", "127.0.0.1"],
            domain=domain, demo=True)
        self.server_cert: IssuedCert = server_cert or self.pki.server
        self.queue = queue or {}
        self.limits = limits or {}
        self.policy = policy or {}
        self.extra_ca = list(extra_ca or [])
        self.extra_crl: list[Path] = []
        self.workers = workers
        self.ports: dict[str, int] = {"mx": 0, "submission": 0, "submissions": 0}
        self.proc: subprocess.Popen[bytes] | None = None
        self._init_store()

    # ------------------------------------------------------------ set-up

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.dir / 'mss.db'}"

    def _init_store(self) -> None:
        from storage import open_store
        from storage.crypto import generate_key_file

        generate_key_file(self.dir / "keys")
        store = open_store(self.db_url, self.dir / "keys", create=True)
        try:
            store.add_domain(self.domain)
            alice = store.add_account(f"alice@{self.domain}", "Alice", AccountClass.STAFF,
                                      password_hash=_HASH)
            store.add_mailbox(f"alice@{self.domain}", MailboxType.PER, owner_account_id=alice.id)
            assert self.pki.organisation is not None
            labo = store.add_account(f"labo@{self.domain}", "Labo", AccountClass.SYSTEM,
                                     cert_subject=self.pki.organisation.subject)
            store.add_mailbox(f"labo@{self.domain}", MailboxType.APP, owner_account_id=labo.id)
            bob = store.add_account(f"bob@{self.domain}", "Bob", AccountClass.STAFF,
                                    password_hash=_HASH)
            store.add_mailbox(f"bob@{self.domain}", MailboxType.PER, owner_account_id=bob.id)
        finally:
            store.close()

    def settings(self) -> Settings:
        return Settings.model_validate({
            "hostname": f"mx.{self.domain}",
            "domains": [self.domain],
            "listeners": [
                {"name": "mx", "port": self.ports["mx"], "role": "mx", "tls": "starttls",
                 "client_cert": "optional"},
                {"name": "submission", "port": self.ports["submission"], "role": "submission",
                 "tls": "starttls", "client_cert": "optional"},
                {"name": "submissions", "port": self.ports["submissions"], "role": "submission",
                 "tls": "implicit", "client_cert": "optional"},
            ],
            "database": {"url": self.db_url, "threads": 4},
            "tls": {
                "cert_file": self.server_cert.cert,
                "key_file": self.server_cert.key,
                "ca_files": [self.pki.ca_bundle, *self.extra_ca],
                "crl_files": [*self.pki.crl_files, *self.extra_crl],
            },
            "limits": self.limits,
            "queue": {"poll_interval": 0.2, "retry_initial": 0.3, "retry_max": 1.0,
                      "connect_timeout": 5.0, **self.queue},
            "audit": {"path": self.dir / "audit.log"},
            "policy": {"whitelist_file": self.dir / "whitelist.xml",
                       "login_methods": TEST_LOGIN_METHODS, **self.policy},
            "key_file": self.dir / "keys",
        })

    def write_whitelist(self, entries: list[tuple[str, str]]) -> None:
        (self.dir / "whitelist.xml").write_bytes(whitelist_xml(entries))

    # ------------------------------------------------------------ process

    def start(self, relay: bool = True) -> Instance:
        settings_file = self.dir / "settings.json"
        ports_file = self.dir / "ports.json"
        if ports_file.exists():
            ports_file.unlink()
        settings_file.write_text(self.settings().model_dump_json())
        cmd = [sys.executable, "-m", "mssmtpd.devserve", "--settings", str(settings_file),
               "--ports-file", str(ports_file), "--workers", str(self.workers)]
        if relay:
            cmd.append("--relay")
        self.log = open(self.dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=self.log,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(lambda: ports_file.exists() or self.proc.poll() is not None)  # type: ignore[union-attr]
        if self.proc.poll() is not None:
            raise AssertionError((self.dir / "server.log").read_text())
        self.ports = json.loads(ports_file.read_text())
        # Listening sockets exist before the ports file; wait for the greeting.
        wait_for(self._greets, timeout=20)
        return self

    def _greets(self) -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", self.ports["mx"], timeout=2) as s:
                return s.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    # ------------------------------------------------------------ clients

    def client_context(self, cert: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_bundle))
        if cert is not None:
            ctx.load_cert_chain(str(cert.cert), str(cert.key))
        return ctx

    def store(self) -> Any:
        from storage import open_store

        return open_store(self.db_url, self.dir / "keys")

    def inbox(self, address: str) -> list[bytes]:
        store = self.store()
        try:
            mb = store.get_mailbox(address)
            folder = store.get_folder(mb.id, "INBOX")
            return [store.message_body(folder.id, e.uid) for e in store.index(folder.id)]
        finally:
            store.close()

    def queue_entries(self) -> list[Any]:
        store = self.store()
        try:
            return store.list_queue()
        finally:
            store.close()

    def audit_lines(self) -> list[dict[str, Any]]:
        path = self.dir / "audit.log"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
