"""Helpers for the `mssctl` end-to-end tests: free port offsets, running the CLI."""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from mssctl.init import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[2]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_offset(rng: random.Random | None = None) -> int:
    """A random offset for which every default port is free right now and
    below the ephemeral range (so no outgoing connection takes it meanwhile)."""
    rng = rng or random.Random()  # noqa: S311 - not security
    highest = max(port for _, port, _, _ in DEFAULT_PORTS)
    top = max(_ephemeral_low() - highest - 1, 3001)
    for _ in range(200):
        offset = rng.randrange(3000, top)
        if all(port_is_free(port + offset) for _, port, _, _ in DEFAULT_PORTS):
            return offset
    raise RuntimeError("no free port offset found")


def mssctl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mssctl.main", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("MSS_CONFIG", None)
    return e


def run_mssctl(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mssctl_cmd(*args), input=input, capture_output=True, text=True, timeout=timeout,
        env=env(), cwd=REPO,
    )


def wait_accepting(ports: Sequence[int], deadline: float) -> list[int]:
    """Polls until every port accepts a TCP connection or the deadline
    (time.monotonic()) passes; returns the ports that never accepted."""
    pending = list(ports)
    while pending and time.monotonic() < deadline:
        still = []
        for port in pending:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                still.append(port)
        pending = still
        if pending:
            time.sleep(0.05)  # polling with a deadline, not synchronising
    return pending


def mssctl_inprocess(*argv: str, stdin: str | None = None,
                     monkeypatch: Any = None) -> tuple[int, str, str]:
    """`mssctl ARGV` through its entry point in this process: (status,
    stdout, stderr). `stdin` needs pytest's `monkeypatch`."""
    from mssctl.main import main

    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
