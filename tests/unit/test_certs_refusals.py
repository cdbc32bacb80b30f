"""certs.tls: every refused certificate is reported once, with the reason,
the certificate (the card, even when it came with a foreign CA's chain), the
listener, the peer and the direction; in-memory Twisted TLS."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pki import tls_settings
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from certs.devpki import IssuedCert, issue_card, make_root_ca
from certs.tls import (
    INBOUND_CLIENT,
    INBOUND_MTA,
    OUTBOUND_RELAY,
    CertificateRefusal,
    ServerTLS,
)
from certs.trust import refusal_reason
from conf.settings import ClientCertMode, ListenerSettings


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


def exchange(server_creator: Any, client_creator: Any) -> tuple[Recorder, Recorder]:
    server, client = Recorder(), Recorder()
    clock = Clock()
    sf = TLSMemoryBIOFactory(server_creator, False, Factory.forProtocol(lambda: server),
                             clock=clock)
    cf = TLSMemoryBIOFactory(client_creator, True, Factory.forProtocol(lambda: client),
                             clock=clock)
    sp, cp = sf.buildProtocol(None), cf.buildProtocol(None)
    client_addr = IPv4Address("TCP", "127.0.0.1", 40001)
    server_addr = IPv4Address("TCP", "127.0.0.1", 2465)
    pump = iosim.connect(
        sp, iosim.FakeTransport(sp, True, hostAddress=server_addr, peerAddress=client_addr),
        cp, iosim.FakeTransport(cp, False, hostAddress=client_addr, peerAddress=server_addr),
        clock=clock)
    client.transport.write(b"EHLO\r\n")
    pump.flush()
    return server, client


def listener(name: str, role: str = "submission") -> ListenerSettings:
    return ListenerSettings(name=name, port=0, role=role, tls="implicit",
                            client_cert=ClientCertMode.OPTIONAL)


def refusals_of(tls: ServerTLS) -> list[CertificateRefusal]:
    seen: list[CertificateRefusal] = []
    tls.on_refusal = seen.append
    return seen


def card_client(dev_pki: Any, card: IssuedCert) -> ServerTLS:
    """A TLS client presenting `card` (a ServerTLS's relay side does that)."""
    return ServerTLS(tls_settings(dev_pki, client_cert_file=card.cert, client_key_file=card.key))


@pytest.fixture(scope="module")
def cards(dev_pki: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, IssuedCert]:
    d = tmp_path_factory.mktemp("cards")
    now = dt.datetime.now(dt.UTC)
    persons = {"ca_cert": dev_pki.persons_ca_cert, "ca_key": dev_pki.persons_ca_key}
    foreign_ca = make_root_ca(d, "foreign-ca", "AC ETRANGERE")
    return {
        "expired": issue_card(d, "expired", **persons, idnat="810000000111", surname="EXPIRE",
                              given_name="A", not_before=now - dt.timedelta(days=40), days=30),
        "future": issue_card(d, "future", **persons, idnat="810000000222", surname="FUTUR",
                             given_name="B", not_before=now + dt.timedelta(days=2)),
        "foreign": issue_card(d, "foreign", ca_cert=foreign_ca[0], ca_key=foreign_ca[1],
                              idnat="810000000333", surname="ETRANGER", given_name="C"),
    }


@pytest.mark.parametrize(("which", "reason"), [
    ("revoked", "revoked"),
    ("expired", "expired"),
    ("future", "not-yet-valid"),
    ("foreign", "unknown-ca"),
])
def test_refused_card_is_reported_with_its_reason(
    dev_pki: Any, cards: dict[str, IssuedCert], which: str, reason: str
) -> None:
    card = dev_pki.revoked if which == "revoked" else cards[which]
    tls = ServerTLS(tls_settings(dev_pki))
    seen = refusals_of(tls)
    server, _ = exchange(tls.server_context_factory(listener("submissions")),
                         card_client(dev_pki, card).client_creator("localhost"))
    assert server.data == b""  # nothing reached the protocol
    assert len(seen) == 1, seen
    event = seen[0]
    assert event.refusal.reason == reason
    # The card itself, even when its chain led to a foreign CA.
    assert event.refusal.subject == _subject(card.cert)
    assert event.refusal.serial == f"{card.serial:X}"
    assert event.refusal.depth == 0
    assert (event.direction, event.listener, event.server_name) == (
        INBOUND_CLIENT, "submissions", None)
    assert (event.peer, event.peer_port) == ("127.0.0.1", 40001)


def test_missing_crl_is_reported_as_such(dev_pki: Any) -> None:
    root_crl, _persons, orgs_crl = dev_pki.crl_files
    tls = ServerTLS(tls_settings(dev_pki, crl_files=[root_crl, orgs_crl]))
    seen = refusals_of(tls)
    exchange(tls.server_context_factory(listener("imaps", "imap")),
             card_client(dev_pki, dev_pki.practitioner).client_creator("localhost"))
    assert [e.refusal.reason for e in seen] == ["crl-missing"]


def test_accepted_card_reports_nothing(dev_pki: Any) -> None:
    tls = ServerTLS(tls_settings(dev_pki))
    seen = refusals_of(tls)
    server, _ = exchange(tls.server_context_factory(listener("imaps", "imap")),
                         card_client(dev_pki, dev_pki.practitioner).client_creator("localhost"))
    assert server.data == b"EHLO\r\n" and seen == []


def test_peer_mta_refusal_is_inbound_mta(dev_pki: Any, cards: dict[str, IssuedCert]) -> None:
    tls = ServerTLS(tls_settings(dev_pki))
    seen = refusals_of(tls)
    exchange(tls.server_context_factory(listener("smtp-mx", "mx")),
             card_client(dev_pki, cards["expired"]).client_creator("localhost"))
    assert [(e.direction, e.listener, e.refusal.reason) for e in seen] == [
        (INBOUND_MTA, "smtp-mx", "expired")]


def test_relay_refusals_are_outbound(dev_pki: Any, cards: dict[str, IssuedCert],
                                     tmp_path: Path) -> None:
    # A peer MTA whose certificate does not name the host we relay to.
    ours = ServerTLS(tls_settings(dev_pki))
    seen = refusals_of(ours)
    peer = ServerTLS(tls_settings(dev_pki, cert_file=dev_pki.peer_operator.cert,
                                  key_file=dev_pki.peer_operator.key))
    server, _ = exchange(peer.server_context_factory(listener("mx", "mx")),
                         ours.client_creator("mx.other.test"))
    assert server.data == b""
    assert [(e.direction, e.server_name, e.listener, e.refusal.reason, e.peer_port)
            for e in seen] == [(OUTBOUND_RELAY, "mx.other.test", None, "name-mismatch", 2465)]
    # A peer MTA whose certificate comes from a CA we do not trust.
    evil_pem = tmp_path / "evil.pem"
    evil_pem.write_bytes(cards["foreign"].cert.read_bytes())
    evil = ServerTLS(tls_settings(dev_pki, cert_file=evil_pem, key_file=cards["foreign"].key))
    exchange(evil.server_context_factory(listener("mx", "mx")), ours.client_creator("localhost"))
    assert [(e.direction, e.refusal.reason) for e in seen[1:]] == [(OUTBOUND_RELAY, "unknown-ca")]
    assert seen[1].refusal.subject == _subject(cards["foreign"].cert)


def test_without_a_hook_refusals_are_still_refused(dev_pki: Any) -> None:
    tls = ServerTLS(tls_settings(dev_pki))
    server, client = exchange(tls.server_context_factory(listener("imaps", "imap")),
                              card_client(dev_pki, dev_pki.revoked).client_creator("localhost"))
    assert server.data == b"" and client.lost is not None


def test_a_failing_hook_does_not_change_the_verdict(dev_pki: Any) -> None:
    tls = ServerTLS(tls_settings(dev_pki))

    def broken(event: CertificateRefusal) -> None:
        raise RuntimeError("audit down")

    tls.on_refusal = broken
    server, _ = exchange(tls.server_context_factory(listener("imaps", "imap")),
                         card_client(dev_pki, dev_pki.revoked).client_creator("localhost"))
    assert server.data == b""


@pytest.mark.parametrize(("errno", "reason"), [
    (23, "revoked"), (10, "expired"), (9, "not-yet-valid"), (20, "unknown-ca"),
    (19, "unknown-ca"), (2, "unknown-ca"), (3, "crl-missing"), (7, "verify-error"),
])
def test_reasons(errno: int, reason: str) -> None:
    assert refusal_reason(errno) == reason


def _subject(pem: Path) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificates(pem.read_bytes())[0].subject.rfc4514_string()
