"""A client that pipelines without end and never reads our replies must not
grow the worker's memory nor stall it for the other clients (real `mssctl
serve`, real sockets). Before flow control, IMAP buffered everything it was
sent (+231 MiB for 210 MB) and SMTP queued its replies (+154 MiB)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import MssInstance

pytestmark = pytest.mark.e2e

TOTAL = 200 * 1024 * 1024  # what the client tries to send
STALL = 3.0  # seconds a send may block before the client gives up
MAX_GROWTH = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "flood")
    inst.serve_args = ("--workers", "1")  # the serve process is the worker
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def connect(mss: MssInstance, listener: str) -> socket.socket:
    """A connection past the greeting (and TLS, for the listeners that want it)."""
    port = mss.port(listener)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    context = ssl.create_default_context(cafile=str(mss.ca_file))
    if listener == "smtp-mx":  # another operator: mutual TLS (policy.mx_require_client_cert)
        context.load_cert_chain(*(str(p) for p in mss.peer_operator_pair))
    if listener == "imaps":
        sock = context.wrap_socket(sock, server_hostname="localhost")
    sock.recv(4096)  # the greeting
    if listener == "smtp-mx":  # the MX wants STARTTLS before MAIL
        sock.sendall(b"EHLO flood.example\r\nSTARTTLS\r\n")
        got = b""
        while b"\r\n220 " not in got:
            got += sock.recv(4096)
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock


def flood(sock: socket.socket, opening: bytes, unit: bytes) -> int:
    """Sends `opening`, then `unit` over and over without reading, until
    TOTAL octets are sent or a send blocks for STALL seconds."""
    sock.sendall(opening)
    block = unit * (65536 // len(unit))
    sock.settimeout(STALL)
    sent = 0
    while sent < TOTAL:
        try:
            sent += sock.send(block)
        except (TimeoutError, ssl.SSLWantWriteError):
            break
    return sent


def answers(mss: MssInstance, listener: str, line: bytes, expect: bytes) -> float:
    """Seconds another client waits for the answer to one command."""
    start = time.monotonic()
    with connect(mss, listener) as sock:
        sock.sendall(line)
        got = b""
        while expect not in got:
            data = sock.recv(4096)
            assert data, got
            got += data
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("listener", "opening", "unit", "probe", "expect"),
    [
        ("imap", b"", b"n NOOP\r\n", b"p NOOP\r\n", b"p OK"),
        ("imaps", b"", b"n NOOP\r\n", b"p NOOP\r\n", b"p OK"),
        ("smtp-mx", b"EHLO flood.example\r\nMAIL FROM:<a@operateur-pair.test>\r\n",
         b"RCPT TO:<dr.martin@hopital.test>\r\n", b"EHLO probe.example\r\n", b"250 "),
    ],
)
def test_a_client_that_never_reads(mss: MssInstance, listener: str, opening: bytes,
                                   unit: bytes, probe: bytes, expect: bytes) -> None:
    assert mss.proc is not None
    answers(mss, listener, probe, expect)  # warm: first connection's allocations
    before = rss(mss.proc.pid)
    sock = connect(mss, listener)
    try:
        sent = flood(sock, opening, unit)
        assert sent < TOTAL, "the server read everything it was sent"
        grown = rss(mss.proc.pid) - before
        assert grown < MAX_GROWTH, f"worker grew {grown / 2**20:.1f} MiB after {sent / 2**20:.1f} MiB sent"
        # The worker still serves everyone else at once.
        assert answers(mss, listener, probe, expect) < 1.0
    finally:
        sock.close()
