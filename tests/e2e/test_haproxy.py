"""HAProxy (Debian's, started by the test on loopback) in front of `mssctl
serve` with the PROXY protocol: v1 to the submission listener, v2 to IMAPS.
Clients connect from other loopback addresses (127.0.0.2, 127.0.0.3) and the
audit names them, not HAProxy; a client that skips the balancer is closed
without a word and audited."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import MARTIN, MssInstance, make_message

pytestmark = pytest.mark.e2e

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxied(settings: Path, names: tuple[str, ...]) -> None:
    text = settings.read_text(encoding="utf-8")
    for name in names:
        text, n = re.subn(rf"(\{{name: {name}, [^}}]*)\}}", r"\1, proxy_protocol: true}", text)
        assert n == 1, name
    settings.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MssInstance, dict[str, int]]]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed (.ci/run installs Debian's haproxy)")
    inst = MssInstance.demo(tmp_path_factory, "haproxy")
    _proxied(inst.directory / "mss.yaml", ("submission", "imaps"))
    inst.start()
    front = {"submission": _free_port(), "imaps": _free_port()}
    config = inst.directory / "haproxy.cfg"
    config.write_text(f"""\
global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend submission_in
  bind 127.0.0.1:{front["submission"]}
  default_backend submission_out
backend submission_out
  server mss 127.0.0.1:{inst.port("submission")} send-proxy
frontend imaps_in
  bind 127.0.0.1:{front["imaps"]}
  default_backend imaps_out
backend imaps_out
  server mss 127.0.0.1:{inst.port("imaps")} send-proxy-v2
""", encoding="utf-8")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        for port in front.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    assert time.monotonic() < deadline, "haproxy did not listen"
                    time.sleep(0.05)  # waiting for haproxy to bind, bounded
        yield inst, front
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert inst.stop() == 0, inst.log_tail()


def _events(inst: MssInstance, action: str) -> list[dict[str, object]]:
    return [e for e in (json.loads(line) for line in inst.audit_text().splitlines()
                        if line.strip()) if e["action"] == action]


def _wait_event(inst: MssInstance, action: str, pred: object) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in _events(inst, action) if pred(e)]  # type: ignore[operator]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {action} event"
        time.sleep(0.05)  # the audit file is appended by the server, bounded


def test_submission_through_haproxy_v1_sees_the_client(
        balanced: tuple[MssInstance, dict[str, int]]) -> None:
    inst, front = balanced
    with smtplib.SMTP("127.0.0.1", front["submission"], timeout=10,
                      source_address=("127.0.0.2", 0)) as s:
        s.starttls(context=inst.client_context())
        s.login(MARTIN, inst.password(MARTIN))
        s.sendmail(MARTIN, [MARTIN], make_message("via haproxy", "x", sender=MARTIN,
                                                  to=[MARTIN]))
    login = _wait_event(inst, "login", lambda e: e["actor"] == MARTIN
                        and e.get("peer") == "127.0.0.2")
    assert login["result"] == "allow"
    assert _wait_event(inst, "rcpt", lambda e: e.get("peer") == "127.0.0.2")


def test_imaps_through_haproxy_v2_sees_the_client(
        balanced: tuple[MssInstance, dict[str, int]]) -> None:
    inst, front = balanced
    raw = socket.create_connection(("127.0.0.1", front["imaps"]), timeout=10,
                                   source_address=("127.0.0.3", 0))
    ctx: ssl.SSLContext = inst.client_context()
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        tls.sendall(f'a LOGIN {MARTIN} "{inst.password(MARTIN)}"\r\n'.encode())
        while not (line := reader.readline()).startswith(b"a "):
            assert line, "connection closed"
        assert line.startswith(b"a OK"), line
        tls.sendall(b"b LOGOUT\r\n")
    assert _wait_event(inst, "login", lambda e: e.get("peer") == "127.0.0.3")["result"] == "allow"


def test_a_client_that_skips_the_balancer_is_closed_and_audited(
        balanced: tuple[MssInstance, dict[str, int]]) -> None:
    inst, _ = balanced
    with socket.create_connection(("127.0.0.1", inst.port("submission")), timeout=10,
                                  source_address=("127.0.0.4", 0)) as s:
        s.sendall(b"EHLO sneaky.example\r\n")
        s.settimeout(10)
        try:
            assert s.recv(4096) == b""  # closed without a greeting
        except ConnectionResetError:
            pass  # or reset: the server aborts, it has nothing to say
    event = _wait_event(inst, "connection", lambda e: e.get("reason") == "proxy-untrusted"
                        or e.get("reason") == "proxy-header")
    # 127.0.0.4 is in the default proxy_from (127.0.0.0/8): its header is what is wrong.
    assert event["reason"] == "proxy-header" and event["actor"] == "127.0.0.4"
    assert event["result"] == "deny" and event["target"] == "submission"
