"""Helpers for SMTP transcripts on StringTransport against a real SQLite store.

`SmtpEnv` builds real Services (Policy, FileAuditSink, Authenticator) with an
InlineRunner so every store answer is there before the next line, and a
`Clock` as reactor so timeouts are driven by the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from conf.settings import ListenerSettings, Settings
from mssmtpd.server import SMTPFactory
from policy.audit import FileAuditSink
from policy.auth import Authenticator
from policy.decisions import Policy
from policy.passwords import hash_password
from policy.services import Services
from storage.interface import AccountClass, MailboxType, MessageStore
from storage.threaded import InlineRunner

PASSWORD = "correct horse battery staple"
# Cheap scrypt parameters: transcripts log in often.
_HASH = hash_password(PASSWORD, n=2**4)

LISTENERS = [
    {"name": "mx", "port": 0, "role": "mx", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
]


def add_user(store: MessageStore, login: str, *, mailbox: bool = True,
             account_class: AccountClass = AccountClass.STAFF,
             cert_subject: str | None = None) -> Any:
    account = store.add_account(login, login, account_class, password_hash=_HASH,
                                cert_subject=cert_subject)
    if mailbox:
        store.add_mailbox(login, MailboxType.PER, owner_account_id=account.id)
    return account


def inbox(store: MessageStore, address: str) -> list[bytes]:
    mb = store.get_mailbox(address)
    folder = store.get_folder(mb.id, "INBOX")
    return [store.message_body(folder.id, e.uid) for e in store.index(folder.id)]


@dataclass
class SmtpEnv:
    settings: Settings
    store: MessageStore
    clock: Clock = field(default_factory=Clock)
    tls: Any = None

    def __post_init__(self) -> None:
        self.audit = FileAuditSink(None)
        self.policy = Policy(self.settings, self.store, self.audit)
        runner = InlineRunner()
        self.services = Services(
            settings=self.settings, store=self.store, policy=self.policy, audit=self.audit,
            runner=runner, authenticator=Authenticator(self.policy, runner),
            reactor=self.clock, tls=self.tls,
        )
        self.factories: dict[str, SMTPFactory] = {}

    def listener(self, name: str) -> ListenerSettings:
        return next(x for x in self.settings.listeners if x.name == name)

    def connect(self, name: str = "mx", ip: str = "192.0.2.10") -> Conversation:
        factory = self.factories.get(name)
        if factory is None:
            factory = self.factories[name] = SMTPFactory(self.services, self.listener(name))
        return Conversation(factory, ip)


class Conversation:
    """One client connection: `send` returns what the server answered."""

    def __init__(self, factory: SMTPFactory, ip: str) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return bytes(out)

    def send(self, data: bytes | str) -> bytes:
        if isinstance(data, str):
            data = data.encode()
        self.protocol.dataReceived(data)
        return self.take()

    def cmd(self, line: str) -> bytes:
        return self.send(line + "\r\n")

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def ehlo(self, name: str = "client.example") -> bytes:
        return self.cmd(f"EHLO {name}")

    def close(self) -> None:
        self.protocol.connectionLost(None)


def codes(replies: bytes) -> list[str]:
    """The final "code status" of every reply in order (multi-line replies once)."""
    out = []
    for line in replies.decode().split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            parts = line.split(" ")
            out.append(" ".join(parts[:2]) if len(parts) > 1 and parts[1][:1].isdigit()
                       else parts[0])
    return out


def make_env(tmp_path: Path, store: MessageStore, **overrides: Any) -> SmtpEnv:
    from conftest import make_settings

    values: dict[str, Any] = {"listeners": LISTENERS}
    values.update(overrides)
    return SmtpEnv(make_settings(tmp_path, **values), store)
