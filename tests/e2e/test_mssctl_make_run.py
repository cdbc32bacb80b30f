"""`make run` as the README promises: demo instance, every listener accepting
within 10 s, a banner saying how to connect, Ctrl-C stops everything."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mssctl_support import REPO, env, free_port_offset, wait_accepting

from mssctl.init import DEFAULT_PORTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_make_run_serves_the_demo_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "mssctl").exists() or shutil.which("make") is None:
        pytest.skip("needs `make` and the project installed in the running virtualenv")
    offset = free_port_offset()
    rundir = tmp_path / "dev"
    log = tmp_path / "make.log"
    with open(log, "w") as out:
        # -o: treat the install stamp as up to date (the suite runs inside that
        # very virtualenv; reinstalling is `make`'s job, not this test's).
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", f"{venv}/bin/mssctl", "run",
             f"VENV={venv}", f"RUNDIR={rundir}", f"INIT_ARGS=--port-offset {offset}"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env(), start_new_session=True,
        )
    try:
        ports = [port + offset for _, port, _, _ in DEFAULT_PORTS]
        started = time.monotonic()
        # The first run builds the demo instance (PKI, database): a one-off that
        # later runs skip. The listeners must then accept within 10 s; the whole
        # first run gets 20 s, which also absorbs a loaded test machine.
        while "Start it:" not in log.read_text() and time.monotonic() < started + 20:
            time.sleep(0.05)  # polling with a deadline, not synchronising
        assert "Start it:" in log.read_text(), log.read_text()
        init_done = time.monotonic()
        missing = wait_accepting(ports, min(init_done + 10, started + 20))
        assert missing == [], log.read_text()
        assert (rundir / "mss.yaml").is_file()

        def up() -> bool:  # banner printed and the worker answering
            text = log.read_text()
            return "Stop with Ctrl-C." in text and "imaps listening" in text

        deadline = time.monotonic() + 30  # generous: the suite shares two cores
        while not up() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling with a deadline, not synchronising
        text = log.read_text()
        assert f"CA file to trust: {rundir}/pki/ca.pem" in text  # from init
        for port in ports:
            assert f"127.0.0.1:{port}" in text  # from the banner
        assert "sec.durand@hopital.test" in text and "password:" in text

        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        proc.wait(timeout=10)
        assert wait_accepting(ports, time.monotonic()) == ports  # all closed
        assert "Traceback" not in log.read_text()
        assert "Main loop terminated" in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
