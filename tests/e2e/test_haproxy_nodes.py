"""The shipped HAProxy sample (conf/haproxy/mss.cfg) in front of two nodes on
one PostgreSQL database, on loopback: its addresses and ports are rewritten to
the nodes' (nothing else but a faster check interval, fewer connections and a stats
socket), every
listener has `proxy_protocol: true`.

- Every health check of the sample passes against real nodes (PROXY v2 LOCAL
  header, then the greeting; EHLO for SMTP): all servers come UP.
- Through the balancer a client logs in over IMAPS and submits over
  submission, and the node audits the client's address, not HAProxy's.
- Node A killed (SIGKILL): HAProxy marks it DOWN in every backend, and new
  sessions through the balancer are all served by node B.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import MARTIN, MssInstance, make_message
from nodes_support import pg_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SAMPLE = Path(__file__).resolve().parents[2] / "conf" / "haproxy" / "mss.cfg"
# The sample's production ports, by listener name of the demo instance.
PORTS = {25: "smtp-mx", 587: "submission", 465: "submissions", 143: "imap", 993: "imaps"}
BACKENDS = ("mx", "submission", "submissions", "imap", "imaps")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_sample(a: MssInstance, b: MssInstance, directory: Path) -> tuple[str, dict[str, int]]:
    """The sample on loopback: (config text, front port by listener name)."""
    text = SAMPLE.read_text(encoding="utf-8")
    # The autoconfig block: the demo instances have no such listener.
    text = text[: text.index("# ---- Mail client autoconfiguration")]
    for line in ("    log /dev/log local0\n", "    user haproxy\n", "    group haproxy\n",
                 "    daemon\n"):
        assert line in text, line
        text = text.replace(line, "")
    text = text.replace("global\n", f"global\n    stats socket {directory}/haproxy.sock\n", 1)
    assert "maxconn 20000" in text
    text = text.replace("maxconn 20000", "maxconn 200")  # within a test's file limit
    assert "check inter 5s" in text
    text = text.replace("check inter 5s", "check inter 200ms")
    front: dict[str, int] = {}

    def bind(m: re.Match[str]) -> str:
        name = PORTS[int(m.group(1))]
        front[name] = _free_port()
        return f"bind 127.0.0.1:{front[name]}"

    text, n = re.subn(r"bind :(\d+)", bind, text)
    assert n == len(PORTS), n
    for host, node in (("10.0.0.11", a), ("10.0.0.12", b)):
        text, n = re.subn(rf"{re.escape(host)}:(\d+)",
                          lambda m, node=node: f"127.0.0.1:{node.port(PORTS[int(m.group(1))])}",
                          text)
        assert n == len(PORTS), n
    return text, front


def server_states(directory: Path) -> dict[tuple[str, str], str]:
    """(backend, server) → status, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(directory / "haproxy.sock"))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and line[0] != "#"]
    return {(r[0], r[1]): r[17] for r in rows if r[1] not in ("FRONTEND", "BACKEND")}


def _wait_states(directory: Path, want: dict[str, str], timeout: float = 20.0
                 ) -> dict[tuple[str, str], str]:
    deadline = time.monotonic() + timeout
    while True:
        states = server_states(directory)
        if all(states.get((bk, srv)) == st for srv, st in want.items() for bk in BACKENDS):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.1)  # HAProxy's checks run every 200 ms; bounded


@pytest.fixture
def balanced_nodes(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any
                   ) -> Iterator[tuple[MssInstance, MssInstance, dict[str, int], Path]]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed (.ci/run installs Debian's haproxy)")
    a, b, _ = pg_nodes(tmp_path_factory, pg_cluster, "haproxy-nodes", settings={
        "client_cert: optional}": "client_cert: optional, proxy_protocol: true}"})
    directory = tmp_path_factory.mktemp("haproxy-nodes")
    proc = None
    try:
        for node in (a, b):
            node.proxied = frozenset(PORTS.values())
            node.start()
        text, front = render_sample(a, b, directory)
        (directory / "haproxy.cfg").write_text(text, encoding="utf-8")
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(directory / "haproxy.cfg")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not (directory / "haproxy.sock").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)  # waiting for haproxy to start, bounded
        yield a, b, front, directory
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        for node in (a, b):
            if node.running:
                node.stop()
            node.kill()


def _imaps_login(node: MssInstance, port: int, source: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    ctx: ssl.SSLContext = node.client_context()
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        tls.sendall(f'a LOGIN {MARTIN} "{node.password(MARTIN)}"\r\n'.encode())
        while not (line := reader.readline()).startswith(b"a "):
            assert line, "connection closed"
        tls.sendall(b"b LOGOUT\r\n")
        return line


def test_the_sample_balances_two_nodes_and_takes_a_dead_one_out(
    balanced_nodes: tuple[MssInstance, MssInstance, dict[str, int], Path],
) -> None:
    a, b, front, directory = balanced_nodes
    # Every check of the sample passes against both nodes.
    _wait_states(directory, {"mss1": "UP", "mss2": "UP"})

    assert _imaps_login(a, front["imaps"], "127.0.0.7").startswith(b"a OK")
    with smtplib.SMTP("127.0.0.1", front["submission"], timeout=10,
                      source_address=("127.0.0.7", 0)) as s:
        s.starttls(context=a.client_context())
        s.login(MARTIN, a.password(MARTIN))
        s.sendmail(MARTIN, [MARTIN], make_message("via the balancer", "x", sender=MARTIN,
                                                  to=[MARTIN]))
    audits = a.audit_text() + b.audit_text()
    assert '"peer": "127.0.0.7"' in audits or '"peer":"127.0.0.7"' in audits, audits[-2000:]

    a.kill()  # SIGKILL: the node vanishes
    states = _wait_states(directory, {"mss1": "DOWN", "mss2": "UP"})
    assert all(st != "UP" for (bk, srv), st in states.items() if srv == "mss1")
    for i in range(6):  # round robin would have sent half of them to A
        assert _imaps_login(b, front["imaps"], f"127.0.0.{20 + i}").startswith(b"a OK")
    b_audit = b.audit_text()
    assert all(f"127.0.0.{20 + i}" in b_audit for i in range(6))
