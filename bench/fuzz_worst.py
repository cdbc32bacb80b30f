#!/usr/bin/env python3
"""The worst CPU time of a single command found by the fuzz tier (README).

Runs the generators of tests/fuzz (`imap_fuzz.imap_cases`,
`smtp_fuzz.smtp_cases`: the same stores, Services, InlineRunner and Clock as
the tier) for a fixed number of sessions from a fixed seed, each command in
its own dataReceived call, and prints for IMAP and for SMTP the number of
commands run and the slowest one: its CPU time (`time.process_time`, so a
busy machine inflates it little) and the command itself (repr, truncated).
With the InlineRunner the store work of a command is counted in its time
(in service it runs on the store threads, off the reactor): the figure is an
upper bound of what one command may block the reactor.

    .venv/bin/python bench/fuzz_worst.py [--examples 3000] [--seed 20261127]
        [--only imap|smtp]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fuzz"), str(ROOT / "tests" / "protocol"),
                str(ROOT / "tests")]

import imap_fuzz  # noqa: E402
import smtp_fuzz  # noqa: E402
from fuzz_support import Chunking  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ONE_COMMAND_PER_CALL = st.just(Chunking("unit"))


# A password check: an unknown login costs a full scrypt (N=2^14) on purpose,
# like a known one, so that timing does not tell which logins exist.
AUTHENTICATION = re.compile(rb"(?i)\b(LOGIN|AUTHENTICATE|AUTH)\b")


def _shown(cpu: float, command: bytes) -> str:
    text = repr(command[:100]) + ("..." if len(command) > 100 else "")
    return f"{cpu * 1000:.1f} ms ({len(command):,} octets: {text})"


class Worst:
    def __init__(self) -> None:
        self.commands = 0
        self.sessions = 0
        self.failures: list[str] = []
        self.times: list[float] = []
        self.worst = (0.0, b"")
        self.worst_other = (0.0, b"")  # not a password check

    def add(self, case: Any, outcome: Any) -> None:
        self.sessions += 1
        for index, cpu in outcome.played.unit_cpu.items():
            wire = case.units[index].wire
            self.commands += 1
            self.times.append(cpu)
            self.worst = max(self.worst, (cpu, wire))
            if not AUTHENTICATION.search(wire):
                self.worst_other = max(self.worst_other, (cpu, wire))

    def line(self, name: str) -> str:
        self.times.sort()
        median = self.times[len(self.times) // 2] if self.times else 0.0
        p99 = self.times[int(len(self.times) * 0.99)] if self.times else 0.0
        return (f"{name}: {self.commands:,} fuzzed commands in {self.sessions:,} sessions; "
                f"worst CPU time of a single command {_shown(*self.worst)}; "
                f"without password checks {_shown(*self.worst_other)}; "
                f"median {median * 1000:.2f} ms, p99 {p99 * 1000:.1f} ms; "
                f"{len(self.failures)} property failures")


def measure(module: Any, cases: Any, examples: int, seed_value: int, workdir: Path) -> Worst:
    template = module.build_template(workdir / "template")
    worst = Worst()

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(cases(chunking=ONE_COMMAND_PER_CALL))
    def run(case: Any) -> None:
        outcome = module.run_case(case, template, workdir / "example")
        try:
            module.check_exact(case, outcome)
        except AssertionError as exc:
            worst.failures.append(f"{case.describe()}: {exc}")
        worst.add(case, outcome)

    run()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3000, help="sessions per protocol")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--only", choices=["imap", "smtp"])
    args = parser.parse_args()
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="mss-fuzz-bench-", dir=shm if shm.is_dir() else None))
    try:
        for name, module, cases in (("IMAP", imap_fuzz, imap_fuzz.imap_cases),
                                    ("SMTP", smtp_fuzz, smtp_fuzz.smtp_cases)):
            if args.only and args.only != name.lower():
                continue
            start = time.monotonic()
            worst = measure(module, cases, args.examples, args.seed, base / name.lower())
            print(worst.line(name) + f" [{time.monotonic() - start:.0f} s]", flush=True)
            for failure in worst.failures[:5]:
                print(f"  failure: {failure[:500]}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
