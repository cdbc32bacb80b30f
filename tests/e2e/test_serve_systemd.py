"""`mssctl serve` as the systemd unit runs it (`Type=notify`, watchdog,
`ExecReload` = SIGHUP), with a datagram socket the test binds standing in
for systemd: the notify messages arrive in order, READY=1 only once every
listener answers, WATCHDOG=1 keeps coming from a live reactor and stops when
a worker's reactor stalls."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import IO_TIMEOUT, MssInstance, first_line

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
READY_DEADLINE = 40.0


class Manager:
    """The service manager's end of $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        text = self.sock.recv(4096).decode("utf-8")
        msg = dict(line.split("=", 1) for line in text.splitlines())
        self.seen.append(msg)
        return msg

    def until(self, key: str, timeout: float) -> dict[str, str]:
        """The next message carrying `key` (WATCHDOG=1 pings in between skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {key} within {timeout} s; seen {self.seen}"
            msg = self.next(remaining)
            if key in msg:
                return msg

    def pings_within(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        pings = 0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.next(remaining)
            except TimeoutError:
                break
            pings += msg.get("WATCHDOG") == "1"
        return pings

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Manager]:
    m = Manager(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(m.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield m
    m.close()


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


@pytest.mark.parametrize("workers", [1, 2])
def test_notify_sequence(tmp_path_factory: pytest.TempPathFactory, manager: Manager,
                         workers: int) -> None:
    inst = MssInstance.demo(tmp_path_factory, f"notify{workers}")
    inst.serve_args = ("--workers", str(workers))
    try:
        inst.start()
        assert inst.proc is not None
        ready = manager.until("READY", READY_DEADLINE)
        assert ready["MAINPID"] == str(inst.proc.pid)
        assert "imaps 127.0.0.1:" in ready["STATUS"] and "smtp-mx" in ready["STATUS"]
        if workers > 1:
            assert ready["STATUS"].startswith(f"{workers} workers")
        # READY=1 came after every listener was adopted and the store opened.
        assert first_line(inst.port("imap"), IO_TIMEOUT).startswith(b"* OK ")
        assert first_line(inst.port("smtp-mx"), IO_TIMEOUT).startswith(b"220 ")
        assert manager.pings_within(1.6) >= 2

        inst.proc.send_signal(signal.SIGHUP)
        reloading = manager.until("RELOADING", 10)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        reloaded = manager.until("READY", 15)
        assert reloaded["STATUS"] == "running; files reloaded"
        events = [line for line in inst.audit_text().splitlines() if '"reload"' in line]
        assert len(events) == workers  # every worker had reloaded before READY=1
        assert manager.pings_within(1.1) >= 1

        assert inst.stop(signal.SIGTERM) == 0
        assert manager.until("STOPPING", 5)["STOPPING"] == "1"
    finally:
        inst.kill()
    # Workers never speak for the service (NotifyAccess=main).
    ready_count = sum(1 for m in manager.seen if m.get("READY") == "1")
    assert ready_count == 2, manager.seen


def test_a_stalled_worker_stops_the_watchdog(tmp_path_factory: pytest.TempPathFactory,
                                             manager: Manager) -> None:
    inst = MssInstance.demo(tmp_path_factory, "stall")
    inst.serve_args = ("--workers", "2")
    try:
        inst.start()
        assert inst.proc is not None
        manager.until("READY", READY_DEADLINE)
        assert manager.pings_within(1.1) >= 1
        workers = children(inst.proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGSTOP)  # its reactor stops beating
        try:
            manager.pings_within(0.8)  # pings sent while its last beat was fresh
            assert manager.pings_within(2.0) == 0
        finally:
            os.kill(workers[0], signal.SIGCONT)
        assert manager.pings_within(2.0) >= 1
        assert "stopped beating" in inst.log_tail(20000)
        assert inst.stop(signal.SIGTERM) == 0
    finally:
        inst.kill()
