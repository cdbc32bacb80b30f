"""The CI guard of tests/conftest.py: on CI a skip fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

PROBE = """
import pytest

@pytest.mark.skipif(True, reason="tool missing")
def test_needs_a_tool():
    pass

@pytest.mark.xfail(strict=True, reason="known")
def test_known_bug():
    assert False
"""


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-p", "no:randomly", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )


def test_a_skip_fails_on_ci(tmp_path: Path) -> None:
    result = _run(tmp_path, "true")
    assert result.returncode != 0, result.stdout
    assert "skipped on CI, which must run every test: " in result.stdout
    assert "1 xfailed" in result.stdout  # an expected failure is not a skip


def test_a_skip_is_a_skip_elsewhere(tmp_path: Path) -> None:
    result = _run(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "1 xfailed" in result.stdout
