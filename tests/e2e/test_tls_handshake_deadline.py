"""Connections that never complete TLS are closed, over real sockets.

Regression: connections to 465 that never started the TLS handshake were
never closed (the idle timeout fired, was logged, and the socket stayed), and
they counted against `limits.connections_per_ip`, so real clients from the
same address got 421. Every implicit-TLS listener (SMTP 465, IMAP 993) now
closes a connection whose handshake is not complete within
`limits.tls_handshake_timeout`, and an SMTP connection that asked for
STARTTLS and never did the handshake is closed at its idle timeout.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import ServerProcess, client_ssl_context, make_world
from smtp_fixtures import Instance, wait_for

pytestmark = pytest.mark.e2e

HANDSHAKE = 0.5  # limits.tls_handshake_timeout of these servers
LIMIT = 3  # connections per address
# Upper bound for the server to close a connection, not a delay: the server
# closes after HANDSHAKE (or the idle timeout); "never" is what is tested.
CLOSED_WITHIN = 10.0


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset), False
    if it is still open after CLOSED_WITHIN seconds."""
    sock.settimeout(CLOSED_WITHIN)
    try:
        while sock.recv(4096):
            pass  # nothing is expected; whatever came, wait for the end
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def silent_connections(port: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=CLOSED_WITHIN)
            for _ in range(LIMIT)]


def assert_all_closed(socks: list[socket.socket]) -> None:
    started = time.monotonic()
    for sock in socks:
        with sock:
            assert closed_by_server(sock), "the server kept a connection without TLS"
    assert time.monotonic() - started < CLOSED_WITHIN


def audit_reasons(path: Path) -> int:
    return path.read_text().count('"tls-handshake-timeout"') if path.exists() else 0


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory, dev_pki: Any) -> Iterator[Instance]:
    inst = Instance(tmp_path_factory.mktemp("smtp-tls-deadline"), "hopital.test", pki=dev_pki,
                    limits={"tls_handshake_timeout": HANDSHAKE, "connections_per_ip": LIMIT,
                            "smtp_idle_timeout": 1.0})
    inst.start(relay=False)
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory, dev_pki: Any) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("imap-tls-deadline")
    config = make_world(directory, dev_pki)
    config["limits"] = {"tls_handshake_timeout": HANDSHAKE, "imap_connections_per_ip": LIMIT}
    server = ServerProcess(config, directory)
    ports = server.start()
    try:
        yield {"ports": ports, "audit": Path(config["audit"])}
    finally:
        server.stop()


def test_smtps_connections_without_tls_are_closed_and_free_their_places(
        smtp: Instance) -> None:
    port = smtp.ports["submissions"]
    assert_all_closed(silent_connections(port))
    # As many as the limit were held: had they stayed counted, this would be 421.
    with smtplib.SMTP_SSL("127.0.0.1", port, context=smtp.client_context(),
                          timeout=CLOSED_WITHIN) as client:
        assert client.noop()[0] == 250
    audit = smtp.dir / "audit.log"
    wait_for(lambda: audit_reasons(audit) >= LIMIT)


def test_smtp_starttls_without_handshake_is_closed_at_the_idle_timeout(
        smtp: Instance) -> None:
    with socket.create_connection(("127.0.0.1", smtp.ports["submission"]),
                                  timeout=CLOSED_WITHIN) as sock:
        replies = sock.makefile("rb")
        assert replies.readline().startswith(b"220 ")
        sock.sendall(b"EHLO client.test\r\n")
        while not replies.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert replies.readline().startswith(b"220 ")
        # No handshake: the idle timeout (1 s) must close TCP, not only TLS.
        assert closed_by_server(sock)


def test_imaps_connections_without_tls_are_closed_and_free_their_places(
        imap: dict[str, Any], dev_pki: Any) -> None:
    port = imap["ports"]["imaps"]
    assert_all_closed(silent_connections(port))
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_ssl_context(dev_pki),
                           timeout=CLOSED_WITHIN) as client:
        assert client.welcome.startswith(b"* OK")
    wait_for(lambda: audit_reasons(imap["audit"]) >= LIMIT)
