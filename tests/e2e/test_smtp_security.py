"""Security regressions over real sockets: each test is an attack that once
worked against some SMTP server."""

from __future__ import annotations

import base64
import select
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from smtp_fixtures import PASSWORD, Instance, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = Instance(tmp_path_factory.mktemp("smtp-sec"), "a.test",
                    limits={"message_size": 20_000, "recipients": 3, "smtp_idle_timeout": 2.0})
    inst.write_whitelist([("partner.test", "CN=mx.partner.test,C=FR")])
    inst.start(relay=False)
    yield inst
    inst.stop()


class Raw:
    """A byte-exact SMTP client: sends exactly what the test says."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One complete (possibly multi-line) reply; returns its last line."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed: " + self.buf.decode(errors="replace"))
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\r\n")
            text = line.decode()
            if len(text) < 4 or text[3] == " ":
                return text

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self, ctx: ssl.SSLContext) -> None:
        assert self.cmd("STARTTLS").startswith("220 2.0.0")
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _mx(server: Instance) -> Raw:
    c = Raw(server.ports["mx"])
    c.cmd("EHLO attacker.example")
    c.starttls(server.client_context())
    assert c.cmd("EHLO attacker.example").startswith("250 ")
    return c


def _bodies(server: Instance, address: str, marker: bytes) -> list[bytes]:
    return [m for m in server.inbox(address) if marker in m]


def test_starttls_command_injection_is_discarded(server: Instance) -> None:
    c = Raw(server.ports["mx"])
    c.cmd("EHLO attacker.example")
    # Everything after STARTTLS in the same packet is plaintext an attacker
    # could have injected: it must not run inside the TLS session.
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<a@remote.example>\r\n")
    assert c.reply().startswith("220 2.0.0")
    c.sock = server.client_context().wrap_socket(c.sock, server_hostname="localhost")
    assert c.buf == b""
    # The session restarted: no EHLO, no MAIL survived the upgrade.
    assert c.cmd("RCPT TO:<bob@a.test>").startswith("503 5.5.1")
    assert c.cmd("EHLO attacker.example").startswith("250 ")
    assert c.cmd("RCPT TO:<bob@a.test>").startswith("503 5.5.1 Need MAIL")
    c.close()
    wait_for(lambda: any(e.get("reason") == "plaintext-after-starttls"
                         for e in server.audit_lines()))


VARIANTS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"]


@pytest.mark.parametrize("variant", VARIANTS, ids=[repr(v) for v in VARIANTS])
def test_smtp_smuggling_variants(server: Instance, variant: bytes) -> None:
    tag = base64.b16encode(variant).decode()
    c = _mx(server)
    assert c.cmd("MAIL FROM:<sender@remote.example>").startswith("250 ")
    assert c.cmd("RCPT TO:<alice@a.test>").startswith("250 ")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: outer-" + tag.encode() + b"\r\n\r\nhello" + variant
           + b"MAIL FROM:<ceo@remote.example>\r\nRCPT TO:<bob@a.test>\r\nDATA\r\n"
           + b"Subject: smuggled-" + tag.encode() + b"\r\n\r\nevil\r\n.\r\nQUIT\r\n")
    # One reply for the whole thing: the message is refused, nothing else ran.
    assert c.reply().startswith("554 5.6.0")
    assert c.reply().startswith("221 ")
    c.close()
    assert _bodies(server, "bob@a.test", b"smuggled-" + tag.encode()) == []
    assert _bodies(server, "alice@a.test", b"outer-" + tag.encode()) == []


def test_over_long_line_in_data_stays_data(server: Instance) -> None:
    c = _mx(server)
    c.cmd("MAIL FROM:<sender@remote.example>")
    c.cmd("RCPT TO:<alice@a.test>")
    c.cmd("DATA")
    c.send(b"Subject: long\r\n\r\n" + b"A" * 4000 + b"QUIT\r\nRSET\r\nMAIL FROM:<x@y.example>\r\n"
           + b".\r\n")
    assert c.reply().startswith("554 5.6.0")
    assert c.cmd("NOOP").startswith("250 ")  # the connection is still in sync
    c.close()


def test_auth_is_refused_before_tls(server: Instance) -> None:
    c = Raw(server.ports["submission"])
    c.send(b"EHLO client.example\r\n")
    ehlo = b""
    while b"\r\n250 " not in b"\r\n" + ehlo:
        ehlo += c.sock.recv(4096)
    assert b"AUTH" not in ehlo and b"STARTTLS" in ehlo
    c.buf = b""
    creds = base64.b64encode(f"\0alice@a.test\0{PASSWORD}".encode()).decode()
    assert c.cmd("AUTH PLAIN " + creds).startswith("538 5.7.11")
    assert c.cmd("MAIL FROM:<alice@a.test>").startswith("530 5.7.0")
    c.close()


def test_no_open_relay(server: Instance) -> None:
    c = _mx(server)
    c.cmd("MAIL FROM:<sender@remote.example>")
    assert c.cmd("RCPT TO:<victim@elsewhere.example>").startswith("550 5.7.1")
    assert c.cmd("RCPT TO:<@a.test:victim@elsewhere.example>").startswith("550 5.7.1")
    assert c.cmd("RCPT TO:<victim%elsewhere.example@a.test>").startswith("550 5.1.1")
    assert c.cmd('RCPT TO:<"victim@elsewhere.example"@a.test>').startswith("550 5.1.1")
    c.close()
    # Submission: authenticated users may relay only to the trust space and
    # only as themselves.
    t = socket.create_connection(("127.0.0.1", server.ports["submissions"]), timeout=5)
    raw = Raw.__new__(Raw)
    raw.sock = server.client_context().wrap_socket(t, server_hostname="localhost")
    raw.buf = b""
    raw.greeting = raw.reply()
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<alice@a.test>").startswith("530 5.7.0")
    creds = base64.b64encode(f"\0alice@a.test\0{PASSWORD}".encode()).decode()
    assert raw.cmd("AUTH PLAIN " + creds).startswith("235 ")
    assert raw.cmd("MAIL FROM:<bob@a.test>").startswith("553 5.7.1")
    assert raw.cmd("MAIL FROM:<alice@a.test>").startswith("250 ")
    assert raw.cmd("RCPT TO:<victim@elsewhere.example>").startswith("550 5.7.1")
    assert raw.cmd("RCPT TO:<someone@partner.test>").startswith("250 ")
    raw.close()


def test_oversize_message(server: Instance) -> None:
    c = _mx(server)
    assert c.cmd("MAIL FROM:<sender@remote.example> SIZE=30000").startswith("552 5.3.4")
    c.cmd("MAIL FROM:<sender@remote.example>")
    c.cmd("RCPT TO:<alice@a.test>")
    c.cmd("DATA")
    c.send(b"Subject: huge\r\n\r\n" + (b"x" * 70 + b"\r\n") * 400 + b".\r\n")
    assert c.reply().startswith("552 5.3.4")
    c.close()
    assert _bodies(server, "alice@a.test", b"Subject: huge") == []


def test_too_many_recipients(server: Instance) -> None:
    c = _mx(server)
    c.cmd("MAIL FROM:<sender@remote.example>")
    for _ in range(3):
        assert c.cmd("RCPT TO:<alice@a.test>").startswith("250 ")  # duplicates count once
    assert c.cmd("RCPT TO:<bob@a.test>").startswith("250 ")
    assert c.cmd("RCPT TO:<labo@a.test>").startswith("250 ")
    assert c.cmd("RCPT TO:<postmaster@a.test>").startswith("452 4.5.3")
    c.close()


def test_slow_client_is_cut_off(server: Instance) -> None:
    """Slowloris: bytes keep coming, but never a complete command."""
    c = Raw(server.ports["mx"])
    start = time.monotonic()
    answered = False
    for b in b"EHLO a-very-slow-client.example\r\n":
        c.send(bytes([b]))
        # The attack itself: one byte every 250 ms (a pause, not a sync).
        readable, _, _ = select.select([c.sock], [], [], 0.25)
        if readable:
            answered = True
            break
    assert answered
    assert c.sock.recv(1024).startswith(b"421 4.4.2")
    assert time.monotonic() - start < 5  # idle timeout is 2 s
    assert c.closed()
    c.close()
