"""Helpers for IMAP transcripts on StringTransport against a real SQLite store.

`ImapEnv` builds real Services (Policy, FileAuditSink, Authenticator) with an
InlineRunner, so every store answer is there before the next line of the
transcript, and a `Clock` as reactor (timeouts and the folder watcher are
driven by the test). `ImapClient` is one connection: `c.cmd("a1 NOOP")` sends a
line and returns what the server answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from conf.settings import Settings
from imapd.server import IMAPServerFactory
from policy.audit import FileAuditSink
from policy.auth import Authenticator
from policy.decisions import Policy
from policy.passwords import hash_password
from policy.services import Services
from storage.interface import AccountClass, Delivery, MailboxType, MessageStore
from storage.threaded import InlineRunner, nested_scopes

PASSWORD = "correct horse battery staple"
_HASH = hash_password(PASSWORD, n=2**4)  # cheap: transcripts log in often

LISTENERS = [
    {"name": "imap", "port": 0, "role": "imap", "tls": "none"},
    {"name": "imap-starttls", "port": 0, "role": "imap", "tls": "starttls"},
]

SECRETARY = "secretaire@hopital.test"
SECRETARY2 = "accueil@hopital.test"
CARDIO = "cardiologie@hopital.test"


def message(subject: str = "Bonjour", body: str = "Hello world\r\n", *,
            sender: str = "dr.martin@hopital.test", to: str = SECRETARY) -> bytes:
    return (
        f"From: Dr Martin <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
        f"Message-ID: <{abs(hash(subject + body))}@hopital.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def add_user(store: MessageStore, login: str, *, mailbox: bool = True,
             account_class: AccountClass = AccountClass.STAFF,
             cert_subject: str | None = None, idnat: str | None = None) -> Any:
    account = store.add_account(login, login, account_class, password_hash=_HASH,
                                cert_subject=cert_subject, idnat=idnat)
    if mailbox:
        store.add_mailbox(login, MailboxType.PER, owner_account_id=account.id)
    return account


def deliver(store: MessageStore, address: str, raw: bytes, flags: tuple[str, ...] = ()) -> int:
    mb = store.get_mailbox(address)
    return store.deliver(Delivery(raw=raw, mailbox_ids=(mb.id,), flags=frozenset(flags)))[0].uid


@dataclass
class ImapEnv:
    settings: Settings
    store: MessageStore
    clock: Clock = field(default_factory=Clock)
    tls: Any = None

    def __post_init__(self) -> None:
        self.audit = FileAuditSink(None)
        self.policy = Policy(self.settings, self.store, self.audit)
        # Quick reads inside the store's no_waiting, as `serve` runs them on
        # SQLite (`storage.threaded.runner_for`).
        runner = self.runner = InlineRunner(
            quick=nested_scopes(self.audit.held, self.store.no_waiting))
        self.services = Services(
            settings=self.settings, store=self.store, policy=self.policy, audit=self.audit,
            runner=runner, authenticator=Authenticator(self.policy, runner),
            reactor=self.clock, tls=self.tls,
        )
        self.factories: dict[str, IMAPServerFactory] = {}

    def connect(self, name: str = "imap", ip: str = "127.0.0.1") -> ImapClient:
        factory = self.factories.get(name)
        if factory is None:
            listener = next(x for x in self.settings.listeners if x.name == name)
            factory = self.factories[name] = IMAPServerFactory(self.services, listener)
        return ImapClient(factory, ip)

    def login(self, user: str = SECRETARY, name: str = "imap") -> ImapClient:
        c = self.connect(name)
        out = c.cmd(f"l1 LOGIN {user} \"{PASSWORD}\"")
        assert b"l1 OK" in out, out
        return c

    @property
    def watcher(self) -> Any:
        return next(iter(self.factories.values())).watcher


class ImapClient:
    def __init__(self, factory: IMAPServerFactory, ip: str) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        self.proto = factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)
        self.greeting = self.read()
        self._n = 0

    def read(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return bytes(data)

    def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        return self.read()

    def cmd(self, line: str | bytes) -> bytes:
        raw = line.encode() if isinstance(line, str) else line
        return self.send(raw + b"\r\n")

    def tagged(self, rest: str) -> tuple[bytes, bytes]:
        """Sends `rest` under a fresh tag; returns (untagged, tagged line)."""
        self._n += 1
        tag = f"t{self._n}"
        out = self.cmd(f"{tag} {rest}")
        head, sep, tail = out.rpartition(f"{tag} ".encode())
        assert sep, f"no tagged reply for {rest!r}: {out!r}"
        return head, tag.encode() + b" " + tail

    def ok(self, rest: str) -> bytes:
        untagged, done = self.tagged(rest)
        assert b" OK" in done.split(b"\r\n")[0], (rest, untagged, done)
        return untagged

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


def make_env(tmp_path: Path, store: MessageStore, **overrides: Any) -> ImapEnv:
    from conftest import make_settings

    overrides.setdefault("listeners", LISTENERS)
    return ImapEnv(make_settings(tmp_path, **overrides), store)


def populate(store: MessageStore) -> dict[str, Any]:
    """Two agents of the cardiology functional mailbox, each with a personal box."""
    sec = add_user(store, SECRETARY)
    sec2 = add_user(store, SECRETARY2)
    cardio = store.add_mailbox(CARDIO, MailboxType.ORG, display_name="Cardiologie",
                               responsible="CH Test")
    store.set_grant(sec.id, cardio.id, "lrswipkxte")
    store.set_grant(sec2.id, cardio.id, "lrswipkxte")
    return {"sec": sec, "sec2": sec2, "cardio": cardio}


def lines(data: bytes) -> list[bytes]:
    return [x for x in data.split(b"\r\n") if x]


def fetch_map(data: bytes) -> dict[int, bytes]:
    """seq -> the FETCH response text (for simple, literal-free responses)."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(rb"\* (\d+) FETCH \((.*)\)\r\n", data)}
