"""The PROXY protocol in front of the SMTP and IMAP protocols (in memory):
the protocol starts only once the header is in, so its greeting, its
per-address limit and its audit events see the client's address; a header
from an untrusted address, a broken one or none at all closes the connection
before any protocol byte, audited."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from imap_transcript import make_env as make_imap_env
from imap_transcript import populate
from proxy_support import v2, v6_payload
from smtp_transcript import add_user, codes, make_env
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from imapd.server import IMAPServerFactory
from mssmtpd.server import SMTPFactory
from policy.proxy import HEADER_TIMEOUT, ProxyProtocolFactory

D = "hopital.test"
BALANCER = "127.0.0.1"
NETS = [ipaddress.ip_network("127.0.0.0/8")]


class Proxied:
    """A connection from the balancer at `peer`."""

    def __init__(self, factory: ProxyProtocolFactory, peer: str = BALANCER) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 50000))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        out = bytes(self.transport.value())
        self.transport.clear()
        return out


def _wrap(env: Any, inner: Any, name: str) -> tuple[ProxyProtocolFactory, list[tuple[str, ...]]]:
    refused: list[tuple[str, ...]] = []
    return ProxyProtocolFactory(inner, listener=name, networks=NETS, clock=env.clock,
                                refused=lambda *a: refused.append(a)), refused


def test_smtp_starts_after_the_header_and_sees_the_client(tmp_path: Path, store: Any) -> None:
    add_user(store, f"dr.martin@{D}")
    env = make_env(tmp_path, store)
    proxy, refused = _wrap(env, SMTPFactory(env.services, env.listener("mx")), "mx")
    conn = Proxied(proxy)
    assert conn.transport.value() == b""  # no greeting before the header
    # The header and the first command in one segment, as clients pipeline.
    out = conn.send(b"PROXY TCP4 192.0.2.7 10.0.0.25 56324 25\r\n")
    assert out.startswith(b"220 ")
    assert codes(conn.send(b"EHLO client.example\r\n")) == ["250"]
    assert codes(conn.send(b"MAIL FROM:<a@example.org>\r\n")) == ["250 2.1.0"]
    assert codes(conn.send(f"RCPT TO:<dr.martin@{D}>\r\n".encode())) == ["250 2.1.5"]
    session = conn.protocol.wrappedProtocol.session
    assert session.peer.address == "192.0.2.7"
    rcpt = [e for e in env.audit.events if e.action == "rcpt"][-1]
    assert rcpt.details.get("peer") == "192.0.2.7" and rcpt.actor == "192.0.2.7"
    assert refused == []


def test_v2_header_in_pieces_then_pipelined_commands(tmp_path: Path, store: Any) -> None:
    env = make_env(tmp_path, store)
    proxy, _ = _wrap(env, SMTPFactory(env.services, env.listener("mx")), "mx")
    conn = Proxied(proxy)
    header = v2(family=2, payload=v6_payload("2001:db8::7", "2001:db8::1", 4444, 25))
    for i in range(len(header) - 1):
        assert conn.send(header[i:i + 1]) == b""
    out = conn.send(header[-1:] + b"EHLO x\r\n")
    assert out.startswith(b"220 ") and b"250" in out
    assert conn.protocol.wrappedProtocol.session.peer.address == "2001:db8::7"


def test_local_header_keeps_the_balancer_address(tmp_path: Path, store: Any) -> None:
    env = make_env(tmp_path, store)
    proxy, _ = _wrap(env, SMTPFactory(env.services, env.listener("mx")), "mx")
    conn = Proxied(proxy)
    assert conn.send(v2(command=0, family=0, transport=0)).startswith(b"220 ")
    assert conn.protocol.wrappedProtocol.session.peer.address == BALANCER


def test_untrusted_sender_of_headers_is_closed_at_once(tmp_path: Path, store: Any) -> None:
    env = make_env(tmp_path, store)
    proxy, refused = _wrap(env, SMTPFactory(env.services, env.listener("mx")), "mx")
    conn = Proxied(proxy, peer="192.0.2.50")
    assert conn.transport.value() == b"" and conn.transport.disconnecting
    assert refused == [("192.0.2.50", "proxy-untrusted", "192.0.2.50 is not in proxy_from")]
    # Whatever it sends next reaches no protocol.
    assert conn.send(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nEHLO x\r\n") == b""


def test_a_bad_header_or_none_closes_without_a_word(tmp_path: Path, store: Any) -> None:
    env = make_env(tmp_path, store)
    proxy, refused = _wrap(env, SMTPFactory(env.services, env.listener("mx")), "mx")
    conn = Proxied(proxy)
    assert conn.send(b"EHLO client.example\r\n") == b""  # a client that skipped the balancer
    assert conn.transport.disconnecting
    assert refused[-1][:2] == (BALANCER, "proxy-header")
    assert "no PROXY protocol header" in refused[-1][2]
    slow = Proxied(proxy)
    assert slow.send(b"PROXY TCP4 192.0") == b""
    env.clock.advance(HEADER_TIMEOUT + 0.1)
    assert slow.transport.disconnecting
    assert refused[-1] == (BALANCER, "proxy-timeout", "no PROXY header within 10 s")


def test_imap_per_address_limit_counts_the_client_not_the_balancer(
        tmp_path: Path, store: Any) -> None:
    """Three clients through one balancer, a limit of two per address: each
    client is counted on its own, so none is refused."""
    populate(store)
    env = make_imap_env(tmp_path, store, limits={"imap_connections_per_ip": 2})
    listener = next(x for x in env.settings.listeners if x.name == "imap")
    proxy, _ = _wrap(env, IMAPServerFactory(env.services, listener), "imap")
    greetings = []
    for n in range(3):
        conn = Proxied(proxy)
        greetings.append(conn.send(f"PROXY TCP4 192.0.2.{n + 1} 10.0.0.1 4000 143\r\n".encode()))
    assert all(g.startswith(b"* OK") for g in greetings), greetings
    # The same client three times is over its limit.
    again = [Proxied(proxy).send(b"PROXY TCP4 192.0.2.9 10.0.0.1 4000 143\r\n")
             for _ in range(3)]
    assert again[0].startswith(b"* OK") and again[1].startswith(b"* OK")
    assert again[2].startswith(b"* BYE")
    denied = [e for e in env.audit.events if e.action == "connection" and e.result == "deny"]
    assert [e.details.get("peer") for e in denied] == ["192.0.2.9"]
