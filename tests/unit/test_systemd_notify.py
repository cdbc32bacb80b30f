"""The sd_notify protocol of `mssctl.systemd`, against real datagram sockets
the test binds (a path and an abstract name), and the supervisor's decisions
from the workers' health board."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mssctl.systemd import HealthBoard, Notifier, SupervisorHealth, WorkerHealth


def receive(sock: socket.socket, timeout: float = 5.0) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096)
    text = data.decode("utf-8")
    assert text.endswith("\n"), text
    return dict(line.split("=", 1) for line in text.splitlines())


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"mss-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield sock, "@" + name
    sock.close()


def test_ready_status_watchdog_reloading_stopping_to_a_path(
        path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000"}
    notifier = Notifier.from_environ(env)
    assert notifier is not None
    assert env == {}  # unset: children do not speak for the service
    assert notifier.watchdog_interval == 1.5

    assert notifier.ready("serving imap 127.0.0.1:993")
    msg = receive(sock)
    assert msg == {"READY": "1", "STATUS": "serving imap 127.0.0.1:993",
                   "MAINPID": str(os.getpid())}
    notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    notifier.reloading()
    msg = receive(sock)
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    assert abs(int(msg["MONOTONIC_USEC"]) / 1e6 - time.monotonic()) < 5
    notifier.reloaded("running; files reloaded")
    assert receive(sock) == {"READY": "1", "STATUS": "running; files reloaded"}
    notifier.stopping()
    assert receive(sock)["STOPPING"] == "1"
    notifier.close()


def test_abstract_namespace(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier is not None and notifier.watchdog_interval is None
    notifier.ready("multi\nline status")
    assert receive(sock)["STATUS"] == "multi line status"  # one line per field


@pytest.mark.parametrize("env", [
    {},
    {"NOTIFY_SOCKET": ""},
    {"NOTIFY_SOCKET": "relative/path"},
    {"NOTIFY_SOCKET": "@"},
])
def test_no_notifier_outside_systemd(env: dict[str, str]) -> None:
    assert Notifier.from_environ(dict(env)) is None


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("2000000", None, 2_000_000),
    ("2000000", "self", 2_000_000),
    ("2000000", "other", None),  # the watchdog is another process's
    ("0", None, None),
    ("soon", None, None),
])
def test_watchdog_usec_and_pid(path_socket: tuple[socket.socket, str], usec: str,
                               pid: str | None, expected: int | None) -> None:
    env = {"NOTIFY_SOCKET": path_socket[1], "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid() if pid == "self" else os.getpid() + 1)
    notifier = Notifier.from_environ(env)
    assert notifier is not None and notifier.watchdog_usec == expected


def test_a_vanished_manager_is_no_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False


def test_single_worker_health_speaks_directly(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    health = WorkerHealth(Notifier(address, 1_000_000))
    assert health.beat_interval == 0.5
    health.started("serving")
    assert receive(sock)["READY"] == "1"
    health.beat()
    assert receive(sock) == {"WATCHDOG": "1"}
    generation = health.reload_wanted()
    assert receive(sock)["RELOADING"] == "1"
    health.reloaded(generation, 2)
    msg = receive(sock)
    assert msg["READY"] == "1" and "2 file(s)" in msg["STATUS"]


def test_supervisor_ready_only_when_every_worker_started(
        path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    board = HealthBoard(2)
    for slot in (0, 1):
        board.reset_slot(slot)
    health = SupervisorHealth(Notifier(address), board, "2 workers")
    board.use_slot(0)
    board.mark_started()
    health.tick([0, 1])
    assert nothing_waiting(sock)
    board.use_slot(1)
    board.mark_started()
    health.tick([0, 1])
    assert receive(sock) == {"READY": "1", "STATUS": "2 workers", "MAINPID": str(os.getpid())}
    health.tick([0, 1])
    assert nothing_waiting(sock)  # once


def test_supervisor_reload_waits_for_every_worker(
        path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    board = HealthBoard(2)
    for slot in (0, 1):
        board.reset_slot(slot)
        board.use_slot(slot)
        board.mark_started()
    health = SupervisorHealth(Notifier(address), board, "2 workers")
    health.tick([0, 1])
    receive(sock)
    health.request_reload()
    assert receive(sock)["RELOADING"] == "1"
    board.use_slot(0)
    board.mark_reloaded(board.reload_wanted(), 0)
    health.tick([0, 1])
    assert nothing_waiting(sock)
    board.use_slot(1)
    board.mark_reloaded(board.reload_wanted(), 1)
    health.tick([0, 1])
    msg = receive(sock)
    assert msg["READY"] == "1" and "1 file(s)" in msg["STATUS"]
    # A worker started afterwards has read the files: no reload pending for it.
    board.reset_slot(1)
    assert not board.reload_pending(1)


def test_supervisor_withholds_the_watchdog_for_a_stalled_worker(
        path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    board = HealthBoard(2)
    for slot in (0, 1):
        board.reset_slot(slot)
        board.use_slot(slot)
        board.mark_started()
    notifier = Notifier(address, 200_000)  # 0.2 s: ping every 0.1 s
    health = SupervisorHealth(notifier, board, "2 workers")
    assert health.worker_beat_interval == pytest.approx(0.05)
    health.tick([0, 1])
    assert receive(sock)["READY"] == "1"
    assert receive(sock) == {"WATCHDOG": "1"}
    # Slot 1 beats, slot 0 does not: past half the timeout, no more pings.
    deadline = time.monotonic() + 0.35
    while time.monotonic() < deadline:
        board.use_slot(1)
        board.beat()
        health.tick([0, 1])
        time.sleep(0.02)  # the interval being tested, not synchronisation
    msgs = []
    while not nothing_waiting(sock):
        msgs.append(receive(sock))
    # At most the pings sent while slot 0's last beat was still fresh (0.1 s).
    assert len(msgs) <= 1, msgs
    board.use_slot(0)
    board.beat()
    time.sleep(0.11)  # let the supervisor's own interval pass
    board.use_slot(1)
    board.beat()
    board.use_slot(0)
    board.beat()
    health.tick([0, 1])
    assert receive(sock) == {"WATCHDOG": "1"}


def test_a_worker_starting_during_a_reload_does_not_hold_it(
        path_socket: tuple[socket.socket, str]) -> None:
    """SIGHUP is ignored while a worker starts (it is reading the files):
    its start answers the reload, and READY=1 follows."""
    sock, address = path_socket
    board = HealthBoard(2)
    for slot in (0, 1):
        board.reset_slot(slot)
    board.use_slot(0)
    board.mark_started()
    health = SupervisorHealth(Notifier(address), board, "2 workers")
    health.request_reload()  # before READY=1: nothing to tell systemd
    assert nothing_waiting(sock) and not health.reloading
    board.use_slot(1)
    board.mark_started()
    health.tick([0, 1])
    assert receive(sock)["READY"] == "1"
    board.reset_slot(1)  # worker 1 died and is being replaced
    health.request_reload()
    assert receive(sock)["RELOADING"] == "1"
    board.use_slot(0)
    board.mark_reloaded(board.reload_wanted(), 0)
    health.tick([0, 1])
    assert nothing_waiting(sock)  # worker 1 is still starting
    board.use_slot(1)
    board.mark_started()  # the new worker is up: it read the files
    health.tick([0, 1])
    assert receive(sock)["READY"] == "1"


def test_serve_says_why_it_cannot_start(path_socket: tuple[socket.socket, str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings file with problems: the first line is systemd's STATUS=."""
    from mssctl.main import main

    config = tmp_path / "mss.yaml"
    config.write_text("domains: [a.test]\nlistners: []\n", encoding="utf-8")
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert main(["serve", "--config", str(config)]) == 2
    msg = receive(sock)
    assert msg["STATUS"].startswith("cannot start: ") and "listners" in msg["STATUS"], msg
    assert "NOTIFY_SOCKET" not in os.environ
