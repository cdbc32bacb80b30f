"""mssctl.ports: connections that send a turn's writes in one `send` at the
end of the reactor's turn, without registering the socket for writing.

The reactor runs in a subprocess (a reactor cannot be restarted in the test
process): a line protocol on `adopt_port`, plain and under TLS, answering
each line with two writes (as IMAP writes untagged responses then the tagged
reply), and commands that close, half-close, or write more than a socket
buffer holds. The script counts the reactor's `addWriter` calls and prints
them on request."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import socket, sys
    sys.path.insert(0, sys.argv[1])
    from twisted.internet import reactor, protocol, ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from mssctl.ports import adopt_port

    added = [0]
    real_add = reactor.addWriter
    def add_writer(w):
        added[0] += 1
        return real_add(w)
    reactor.addWriter = add_writer

    class Lines(protocol.Protocol):
        buf = b""
        def connectionMade(self):
            # Flow control as the IMAP and SMTP protocols do it.
            self.transport.registerProducer(self, True)
        def pauseProducing(self):
            self.transport.pauseProducing()
        def resumeProducing(self):
            self.transport.resumeProducing()
        def stopProducing(self):
            pass
        def dataReceived(self, data):
            self.buf += data
            while b"\\n" in self.buf:
                line, self.buf = self.buf.split(b"\\n", 1)
                self.line(line)
        def line(self, line):
            if line == b"added":
                self.transport.write(b"%d\\n" % added[0])
            elif line == b"big":
                self.transport.write(b"x" * 8_000_000 + b"\\n")
            elif line == b"bye":
                self.transport.write(b"* BYE\\n")
                self.transport.write(b"ok bye\\n")
                self.transport.loseConnection()
            elif line == b"half":
                self.transport.write(b"ok half\\n")
                self.transport.loseWriteConnection()
            else:
                self.transport.write(b"* " + line + b"\\n")
                self.transport.write(b"ok " + line + b"\\n")

    def listen(factory):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        s.setblocking(False)
        adopt_port(reactor, s, factory)
        port = s.getsockname()[1]
        s.close()
        return port

    plain = protocol.Factory.forProtocol(Lines)
    cert = ssl.PrivateCertificate.loadPEM(open(sys.argv[2]).read())
    tls = TLSMemoryBIOFactory(cert.options(), False, protocol.Factory.forProtocol(Lines))
    print(listen(plain), listen(tls), flush=True)
    reactor.run()
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Any]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path_factory.mktemp("ports") / "server.pem"
    pem.write_bytes(cert.private_key_pem.bytes() + b"".join(c.bytes() for c in cert.cert_chain_pems))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), str(pem)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        plain, tls = (int(x) for x in proc.stdout.readline().split())
        context = ssl.create_default_context()
        ca.configure_trust(context)
        yield plain, tls, context
    finally:
        proc.kill()
        proc.wait()


def connect(server: tuple[int, int, Any], tls: bool) -> socket.socket:
    plain_port, tls_port, context = server
    sock = socket.create_connection(("127.0.0.1", tls_port if tls else plain_port), timeout=10)
    return context.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock


def added_writers(server: tuple[int, int, Any]) -> int:
    with connect(server, tls=False) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"added\n")
        return int(f.readline())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_replies_arrive_in_order_without_registering_the_socket(
    server: tuple[int, int, Any], tls: bool
) -> None:
    before = added_writers(server)
    with connect(server, tls) as sock:
        f = sock.makefile("rb")
        for i in range(50):
            sock.sendall(b"c%d\n" % i)
            assert f.readline() == b"* c%d\n" % i
            assert f.readline() == b"ok c%d\n" % i
        # Pipelined: every reply, in order.
        sock.sendall(b"".join(b"p%d\n" % i for i in range(100)))
        for i in range(100):
            assert f.readline() == b"* p%d\n" % i
            assert f.readline() == b"ok p%d\n" % i
    # No reply needed the reactor to watch the socket for writability.
    assert added_writers(server) == before


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_write_larger_than_the_socket_takes_arrives_whole(
    server: tuple[int, int, Any], tls: bool
) -> None:
    before = added_writers(server)
    with connect(server, tls) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"big\nafter\n")
        assert f.readline() == b"x" * 8_000_000 + b"\n"
        assert f.readline() == b"* after\n"
        assert f.readline() == b"ok after\n"
    # The rest waited for the socket the usual way.
    assert added_writers(server) > before


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_close_after_a_reply_sends_the_reply_then_closes(
    server: tuple[int, int, Any], tls: bool
) -> None:
    # loseConnection calls startWriting before it marks the connection as
    # disconnecting: the turn's flush must still finish the close (a LOGOUT
    # that never closed was the first version's bug).
    with connect(server, tls) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"x\nbye\n")
        assert f.readline() == b"* x\n"
        assert f.readline() == b"ok x\n"
        assert f.readline() == b"* BYE\n"
        assert f.readline() == b"ok bye\n"
        if not tls:  # (TLS: Twisted's close then waits for the client's close_notify)
            assert f.readline() == b""  # closed, not left hanging


def test_a_half_close_after_a_reply(server: tuple[int, int, Any]) -> None:
    with connect(server, tls=False) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"half\n")
        assert f.readline() == b"ok half\n"
        assert f.readline() == b""
