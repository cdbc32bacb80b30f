"""The production install: the systemd unit shipped in conf/systemd is valid
(`systemd-analyze verify`, and `systemd-analyze security` rates its
hardening), and `mssctl serve` runs the way the unit runs it: as an
unprivileged user holding only CAP_NET_BIND_SERVICE as an ambient capability
(`setpriv`, as systemd's AmbientCapabilities= does), binding ports below
1024 on 127.0.0.1; a message submitted there is read over IMAPS there, and a
worker that dies is replaced on the same low ports."""

from __future__ import annotations

import configparser
import imaplib
import os
import pwd
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import (
    DURAND,
    IO_TIMEOUT,
    ROOT,
    MssInstance,
    first_line,
    make_message,
)

from storage.threaded import WRITER_NICE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UNIT = ROOT / "conf" / "systemd" / "mss.service"
SERVICE_USER = "nobody"
START_DEADLINE = 40.0


# ---------------------------------------------------------------- the unit


def unit_for_this_host(tmp_path: Path, text: str | None = None) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's mssctl
    (verify checks that the command exists and is executable)."""
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    mssctl = Path(sys.executable).parent / "mssctl"
    assert mssctl.is_file(), mssctl
    path = tmp_path / "mss.service"
    path.write_text(text.replace("/opt/mss/bin/mssctl", str(mssctl)), encoding="utf-8")
    return path


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = verify(unit_for_this_host(tmp_path))
    assert result.returncode == 0 and not result.stdout and not result.stderr, result


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text(encoding="utf-8").replace(
        "ProtectHome=yes", "ProtectHome=yess\nWatchDogSec=30")
    result = verify(unit_for_this_host(tmp_path, broken))
    assert "protect home value" in result.stderr, result
    assert "Unknown key 'WatchDogSec'" in result.stderr, result


def test_unit_settings() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    svc = parser["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["User"] == "mss" and "WatchdogSec" in svc
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["ExecStart"].split()[1:] == ["serve", "--config", "/var/lib/mss/mss.yaml"]
    assert svc["AmbientCapabilities"] == svc["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    # The SQLite writer lane runs below the worker's priority
    # (storage.threaded.WRITER_NICE), which needs no limit raised.
    assert WRITER_NICE > 0 and "LimitNICE" not in svc
    for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("SystemCallFilter", "@system-service"), ("KillMode", "mixed")]:
        assert svc[key] == value, key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert set(svc["ReadWritePaths"].split()) == {"/var/lib/mss", "/var/log/mss"}


def test_unit_hardening_exposure(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager",
         str(unit_for_this_host(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, result
    # systemd rates 0-10; below 2 is "OK" (a default unit is about 9.6, "UNSAFE").
    assert float(match.group(1)) < 2.0, result.stdout


# ---------------------------------------------------------------- running as the unit does


def free_low_ports(count: int) -> list[int]:
    rng = random.Random()  # noqa: S311 - port choice
    found: list[int] = []
    for port in rng.sample(range(600, 1024), 424):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free port below 1024")


def as_service_user(*command: str, capability: bool = True) -> list[str]:
    """What systemd does for User=, AmbientCapabilities=, NoNewPrivileges=."""
    caps = (["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
            if capability else [])
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={pwd.getpwnam(SERVICE_USER).pw_gid}",
            "--clear-groups", *caps, "--no-new-privs", *command]


@pytest.fixture
def service_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MssInstance,
                                                                                  dict[str, int]]]:
    if os.geteuid() != 0:
        pytest.skip("switching to the service user needs root (the CI runs as root)")
    template = MssInstance.demo(tmp_path_factory, "service")
    # Outside pytest's 0700 tmp tree, owned by the service user.
    base = Path(tempfile.mkdtemp(prefix="mss-service-"))
    base.chmod(0o711)
    directory = base / "inst"
    shutil.copytree(template.directory, directory)
    inst = MssInstance.from_init_output(
        directory, template.offset, template.init_output.replace(str(template.directory),
                                                                 str(directory)),
        random.Random())  # noqa: S311
    submission, imaps = free_low_ports(2)
    config = directory / "mss.yaml"
    text = config.read_text(encoding="utf-8")
    for name, port in (("submission", submission), ("imaps", imaps)):
        text = text.replace(f"port: {inst.port(name)},", f"port: {port},")
    config.write_text(text, encoding="utf-8")
    user = pwd.getpwnam(SERVICE_USER)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    opened = _traversable(ROOT, Path(sys.executable).resolve().parent)
    try:
        yield inst, {"submission": submission, "imaps": imaps}
    finally:
        inst.kill()
        shutil.rmtree(base, ignore_errors=True)
        for path, mode in opened:
            path.chmod(mode)


def _traversable(*paths: Path) -> list[tuple[Path, int]]:
    """The service user runs the checkout's code with its Python, as an
    installed service runs the installed one: a checkout cloned into a
    0700 directory (`mktemp -d`) is out of its reach. The directories above
    `paths` that others may not enter get the search bit for the test's
    time; returned with their modes, to put back."""
    opened: list[tuple[Path, int]] = []
    for top in paths:
        for path in [top, *top.parents]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if not mode & stat.S_IXOTH and all(p != path for p, _ in opened):
                path.chmod(mode | stat.S_IXOTH)
                opened.append((path, mode))
    return opened


def serve_as_service(inst: MssInstance, *extra: str, capability: bool = True,
                     notify: str | None = None) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    if notify is not None:  # as systemd sets it: an abstract socket needs no file access
        env.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC="2000000")
    with open(inst.log_file, "ab") as log:
        return subprocess.Popen(
            as_service_user(sys.executable, "-m", "mssctl.main", "serve", "--config",
                            str(inst.directory / "mss.yaml"), *extra, capability=capability),
            stdout=log, stderr=subprocess.STDOUT, cwd="/", env=env)


def wait_greeting(port: int, expected: bytes, proc: subprocess.Popen[bytes],
                  inst: MssInstance, tls: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while True:
        assert proc.poll() is None, inst.log_tail()
        if tls is None:
            line = first_line(port, 1.0)
        else:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                        tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    line = s.recv(1024)
            except OSError:
                line = b""
        if line.startswith(expected):
            return
        assert time.monotonic() < deadline, inst.log_tail()
        time.sleep(0.1)  # polling with a deadline


def deliver_and_read(inst: MssInstance, ports: dict[str, int], subject: str) -> None:
    ctx = inst.client_context()
    password = inst.password(DURAND)
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.login(DURAND, password)
        s.sendmail(DURAND, [DURAND], make_message(subject, "bonjour", sender=DURAND,
                                                  to=[DURAND]))
    imap = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=ctx, timeout=IO_TIMEOUT)
    try:
        assert imap.login(DURAND, password)[0] == "OK"
        imap.select("INBOX")
        typ, data = imap.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], (subject, data)
    finally:
        imap.logout()


def test_serve_as_unprivileged_user_with_the_capability(
        service_instance: tuple[MssInstance, dict[str, int]]) -> None:
    inst, ports = service_instance
    name = f"mss-test-{os.getpid()}-{time.monotonic_ns()}"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind("\0" + name)
    manager.settimeout(START_DEADLINE)
    try:
        proc = serve_as_service(inst, "--workers", "2", notify="@" + name)
        inst.proc = proc
        ready: dict[str, str] = {}
        while "READY" not in ready:  # WATCHDOG=1 pings may come first
            ready = dict(line.split("=", 1) for line in
                         manager.recv(4096).decode().splitlines())
    finally:
        manager.close()
    assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid), ready
    assert f"submission 127.0.0.1:{ports['submission']}" in ready["STATUS"]
    ctx = inst.client_context()
    wait_greeting(ports["submission"], b"220 ", proc, inst)
    wait_greeting(ports["imaps"], b"* OK ", proc, inst, ctx)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{pwd.getpwnam(SERVICE_USER).pw_uid}\s", status, re.M)
    assert int(re.search(r"^CapEff:\s+(\w+)", status, re.M).group(1), 16) == 1 << 10  # type: ignore[union-attr]
    deliver_and_read(inst, ports, "as a service")
    # The audit file and the database belong to the service user.
    assert (inst.directory / "audit.log").stat().st_uid == pwd.getpwnam(SERVICE_USER).pw_uid

    # A worker that dies is replaced, binding the low ports again.
    workers = [int(x) for x in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
               .read_text().split()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        now = [int(x) for x in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
               .read_text().split()]
        if len(now) == 2 and workers[0] not in now:
            break
        assert time.monotonic() < deadline, inst.log_tail()
        time.sleep(0.1)  # polling with a deadline
    for _ in range(4):  # the kernel spreads connections over both workers
        deliver_and_read(inst, ports, f"after respawn {_}")
    assert "cannot restart worker" not in inst.log_tail(20000)
    assert inst.stop(signal.SIGTERM) == 0


def test_serve_without_the_capability_names_the_problem(
        service_instance: tuple[MssInstance, dict[str, int]]) -> None:
    inst, ports = service_instance
    proc = serve_as_service(inst, capability=False)
    assert proc.wait(START_DEADLINE) == 2
    log = inst.log_tail()
    assert "Traceback" not in log
    assert f"127.0.0.1:{ports['submission']}: permission denied (ports below 1024 need root " \
           "or CAP_NET_BIND_SERVICE)" in log
