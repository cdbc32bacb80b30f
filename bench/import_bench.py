"""Time to import 10,000 messages from a Maildir (`mssctl import --maildir`),
then the second run that finds them all already there. A fresh demo instance
(`mssctl init --demo`, SQLite) in a temp dir; the Maildir is generated (4 KB
messages over 4 folders, random flags). Run:
.venv/bin/python bench/import_bench.py [--count N] [--batch N]"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mssctl.main import main as mssctl  # noqa: E402

FOLDERS = (".", ".Sent", ".Archives", ".Archives.2024")


def make_maildir(root: Path, count: int) -> None:
    rng = random.Random(1)
    for d in FOLDERS:
        for sub in ("cur", "new", "tmp"):
            (root / d / sub).mkdir(parents=True, exist_ok=True)
    filler = b"Ligne de compte rendu de consultation, sans donnee reelle.\n" * 66
    for n in range(count):
        stamp = 1_600_000_000 + rng.randrange(100_000_000)
        letters = "".join(c for c in "FRS" if rng.random() < 0.4)
        path = root / FOLDERS[n % len(FOLDERS)] / "cur" / f"{stamp}.M{n}P1.bench:2,{letters}"
        path.write_bytes(b"From: a@hopital.test\nTo: b@hopital.test\nSubject: bench %d\n"
                         b"Message-ID: <%d@bench.test>\n\n" % (n, n) + filler)
        os.utime(path, (stamp, stamp))


def run(*args: str) -> tuple[int, str, float, float]:
    out = io.StringIO()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = mssctl(list(args))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    return code, out.getvalue(), wall, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    code, out, _, _ = run("init", str(work / "inst"), "--demo", "--port-offset", "40000")
    assert code == 0, out
    make_maildir(work / "Maildir", args.count)
    config = ("--config", str(work / "inst" / "mss.yaml"))
    box = "sec.durand@hopital.test"
    code, out, wall, cpu = run("import", "--mailbox", box, "--maildir", str(work / "Maildir"),
                               "--batch", str(args.batch), *config)
    assert code == 0, out
    print(out.strip())
    print(f"import of {args.count} messages (Maildir, ~4 KB each, batches of {args.batch}): "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU, {args.count / wall:.0f} messages/s")
    code, out, wall, cpu = run("import", "--mailbox", box, "--maildir", str(work / "Maildir"),
                               *config)
    assert code == 0, out
    print(f"second run (all already there): {wall:.1f} s wall, {cpu:.1f} s CPU")
    code, out, wall, cpu = run("export", "--mailbox", box, str(work / "out"), *config)
    assert code == 0, out
    print(f"export to Maildir: {wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
