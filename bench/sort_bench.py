#!/usr/bin/env python3
"""SORT and THREAD on a 100,000-message folder (the README's figures, issue 11).

A real server process (tests/e2e/imap_support.py, SQLite store, plaintext
loopback listener) and a plain socket client (bench/imap_bench.py's). The
folder holds distinct messages: 3,000 subjects, 500 senders, dates over two
years, threads of 1 to 12 messages linked by References / In-Reply-To (some
parents missing), flagged as a mailbox is (`flags_of`). They are stored through the store's own delivery
preparation (`SqlStore.prepare`: metadata and sort keys computed and
encrypted as at delivery) and bulk-inserted, then cached under --workdir
(a folder cached by an older revision is migrated when the bench opens it).

Printed, each as client wall time and server CPU: SORT (DATE), SORT
(SUBJECT), SORT (FROM), THREAD REFERENCES, ESEARCH-style
SORT RETURN (PARTIAL 1:50) (REVERSE DATE), then with a search key other than
ALL (the messages chosen first): SEARCH UNDELETED, SORT (DATE) UNDELETED and
UNSEEN, THREAD REFERENCES UNDELETED. First on a fresh server process (cold:
the first command decrypts the keys of the whole folder, the others find them
in memory), then their UID forms (warm: keys in memory, the answer computed),
then these again (cached: the same messages, the process's answer reused).
Target: under 1 s each. With a calibration figure: the machine is shared, and
a loaded one runs Python several times slower.

The bench's messages are ~300 bytes by default; `--body-size 65536` pads each
body with text to about that size, as real mail is: where SQLite keeps a key
column beside a large body, reading it walks the body's pages, which small
messages hide. Each size gets its own cached folder.

    .venv/bin/python bench/sort_bench.py [--messages 100000] [--body-size 0]
        [--workdir run/bench-sort]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from imap_bench import BIG_USER, Client, cpu_s  # noqa: E402
from imap_support import PASSWORD, ServerProcess, make_world  # noqa: E402

# (name, command, the flag its search key leaves out)
COMMANDS = (
    ("SORT (DATE)", "SORT (DATE) UTF-8 ALL", ""),
    ("SORT (SUBJECT)", "SORT (SUBJECT) UTF-8 ALL", ""),
    ("SORT (FROM)", "SORT (FROM) UTF-8 ALL", ""),
    ("THREAD REFERENCES", "THREAD REFERENCES UTF-8 ALL", ""),
    ("SORT RETURN (PARTIAL 1:50) (REVERSE DATE)",
     "SORT RETURN (PARTIAL 1:50) (REVERSE DATE) UTF-8 ALL", ""),
    # A search key other than ALL (webmails hide deleted messages; desktop
    # clients ask for UNSEEN): the messages are chosen first.
    ("SEARCH UNDELETED", "SEARCH UNDELETED", "\\Deleted"),
    ("SORT (DATE) UNDELETED", "SORT (DATE) UTF-8 UNDELETED", "\\Deleted"),
    ("SORT (DATE) UNSEEN", "SORT (DATE) UTF-8 UNSEEN", "\\Seen"),
    ("THREAD REFERENCES UNDELETED", "THREAD REFERENCES UTF-8 UNDELETED", "\\Deleted"),
)
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def messages(n: int, seed: int = 11) -> list[tuple[bytes, int]]:
    """(raw message, internal date) of n distinct messages in threads."""
    rnd = random.Random(seed)
    out: list[tuple[bytes, int]] = []
    i = 0
    while i < n:
        size = min(n - i, rnd.choice((1, 1, 1, 2, 3, 4, 6, 12)))
        topic = f"Resultats patient {rnd.randrange(3000)}"
        root = f"<t{i}@labo.test>"
        missing_root = rnd.random() < 0.05
        ids: list[str] = []
        when = _EPOCH + timedelta(seconds=rnd.randrange(2 * 365 * 86400))
        for k in range(size):
            mid = root if k == 0 else f"<t{i}.{k}@labo.test>"
            refs = ids[-5:]
            if missing_root and k > 0:
                refs = [root, *refs]
            sender = f"agent{rnd.randrange(500)}@hopital.test"
            head = [f"From: Agent {sender[5:8]} <{sender}>", f"To: <{BIG_USER}>",
                    f"Subject: {'Re: ' if k else ''}{topic}",
                    f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
                    f"Message-ID: {mid}"]
            if refs:
                head += [f"In-Reply-To: {refs[-1]}", "References: " + " ".join(refs)]
            raw = ("\r\n".join(head) + "\r\n\r\n" + f"Compte rendu {i + k}.\r\n").encode()
            if not (missing_root and k == 0):
                out.append((raw, int(when.timestamp()) + 60))
                ids.append(mid)
            when += timedelta(minutes=rnd.randrange(1, 600))
        i += size
    rnd.shuffle(out)  # arrival order is not date order
    return out[:n]


def flags_of(uid: int) -> str:
    """The stored flags of message `uid`, as a mailbox has them: six in seven
    seen, one in 20 deleted (and seen), one in 25 flagged; a handful of
    distinct combinations, as in real folders. Arrival order is not date
    order, so these are spread over the sort."""
    flags = set()
    if uid % 7:
        flags.add("\\Seen")
    if uid % 20 == 0:
        flags |= {"\\Deleted", "\\Seen"}
    if uid % 25 == 0:
        flags.add("\\Flagged")
    return " ".join(sorted(flags))


def padded(raw: bytes, body_size: int) -> bytes:
    """`raw` with its body grown by lines of text to about `body_size`
    bytes (the same filler for every message: what is stored is encrypted,
    so no two rows look alike anyway)."""
    missing = body_size - len(raw)
    if missing <= 0:
        return raw
    line = b"Examen clinique sans particularite, bilan biologique joint au dossier.\r\n"
    return raw + line * (missing // len(line) + 1)


def build_world(workdir: Path, n: int, body_size: int = 0) -> dict[str, Any]:
    marker = workdir / (f"world-{n}-flags.json" if not body_size
                        else f"world-{n}-{body_size}-flags.json")
    if marker.exists():
        from storage import migrate

        config = dict(json.loads(marker.read_text()))
        migrate(config["url"])
        return config
    if workdir.exists():
        shutil.rmtree(workdir)
    config = make_world(workdir, None, users=1)
    from storage import open_store
    from storage.models import BodyRow, FolderRow, MessageRow, SortKeysRow

    store = open_store(config["url"], Path(config["key_file"]))
    inbox = store.get_folder(store.get_mailbox(BIG_USER).id, "INBOX")
    t = time.perf_counter()
    with store.engine.begin() as c:
        first = (c.execute(BodyRow.__table__.select().order_by(BodyRow.id.desc()).limit(1))
                 .first())
        next_id = (first.id if first else 0) + 1
        batch_b: list[dict[str, Any]] = []
        batch_m: list[dict[str, Any]] = []
        batch_k: list[dict[str, Any]] = []
        per_batch = 5000 if body_size < 8192 else 500  # bodies held in memory at once
        for uid, (raw, idate) in enumerate(messages(n), 1):
            raw = padded(raw, body_size)
            sealed = dict(store.prepare(raw).sealed)
            batch_k.append({"body_id": next_id, "key_id": sealed["key_id"],
                            "data": sealed.pop("sort_keys")})
            batch_b.append({"id": next_id, **sealed})
            batch_m.append({"folder_id": inbox.id, "uid": uid, "modseq": 2, "flags": flags_of(uid),
                            "internal_date": idate, "size": len(raw), "recent": False,
                            "body_id": next_id})
            next_id += 1
            if len(batch_b) == per_batch:
                c.execute(BodyRow.__table__.insert(), batch_b)
                c.execute(SortKeysRow.__table__.insert(), batch_k)
                c.execute(MessageRow.__table__.insert(), batch_m)
                batch_b, batch_m, batch_k = [], [], []
        if batch_b:
            c.execute(BodyRow.__table__.insert(), batch_b)
            c.execute(SortKeysRow.__table__.insert(), batch_k)
            c.execute(MessageRow.__table__.insert(), batch_m)
        c.execute(FolderRow.__table__.update().where(FolderRow.id == inbox.id)
                  .values(uidnext=n + 1, highestmodseq=2))
    store.close()
    print(f"  built a {n}-message folder in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    marker.write_text(json.dumps(config))
    return dict(config)


def calibration() -> float:
    """CPU seconds of a fixed pure-Python workload (100,000 small objects
    made and sorted, five times): how fast this machine runs Python right
    now. A shared VM under load runs the same work several times slower."""
    cpu = time.process_time()
    for _ in range(5):
        items = [(str(i * 7919 % 100_003), i, [i]) for i in range(100_000)]
        items.sort()
        del items
    return time.process_time() - cpu


def run(port: int, pid: int) -> dict[str, dict[str, float]]:
    c = Client(port, timeout=300)
    c.cmd(f'LOGIN {BIG_USER} "{PASSWORD}"')
    untagged, _ = c.cmd("SELECT INBOX")
    exists = next(int(x.split()[1]) for x in untagged if x.endswith(b" EXISTS\r\n"))
    out: dict[str, dict[str, float]] = {}
    # cold: the first of a fresh process (the folder's keys decrypted);
    # warm: the UID form (keys in memory, the answer computed); cached: the
    # UID form again (the same messages: the answer is reused)
    for rnd in ("cold", "warm", "cached"):
        for name, text, left_out in COMMANDS:
            cpu, t = cpu_s(pid), time.perf_counter()
            lines, _ = c.cmd(text if rnd == "cold" else "UID " + text)
            wall = time.perf_counter() - t
            out.setdefault(name, {})[rnd] = wall
            out[name][rnd + "_cpu"] = cpu_s(pid) - cpu
            if name.startswith(("SORT (", "SEARCH")):
                chosen = sum(left_out not in flags_of(u).split() for u in range(1, exists + 1))
                assert len(lines) == 1 and len(lines[0].split()) == chosen + 2, name
            if name.startswith("THREAD"):
                assert lines[0].count(b"(") >= 1
    c.cmd("LOGOUT")
    c.close()
    out["exists"] = {"n": exists}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--body-size", type=int, default=0,
                    help="pad each message to about this many bytes (0: ~300 bytes)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the folder is built and cached (default run/bench-sort, "
                         "run/bench-sort-SIZE with --body-size)")
    args = ap.parse_args()
    workdir = args.workdir or ROOT / "run" / (
        "bench-sort" if not args.body_size else f"bench-sort-{args.body_size}")
    config = build_world(workdir, args.messages, args.body_size)
    before = calibration()
    srv = ServerProcess(config, workdir, "sort")
    ports = srv.start()
    assert srv.proc is not None
    try:
        results = run(ports["plain"], srv.proc.pid)
    finally:
        srv.stop()
    after = calibration()
    results["machine"] = {"calibration_cpu": (before + after) / 2, "load": os.getloadavg()[0],
                          "body_size": args.body_size}
    size = f"bodies padded to ~{args.body_size} bytes" if args.body_size else "~300-byte messages"
    print(f"{results['exists']['n']} messages in the folder ({size}); load average "
          f"{results['machine']['load']:.1f}; calibration (fixed Python work) "
          f"{results['machine']['calibration_cpu']:.2f} s CPU")
    print(f"{'command':45} {'cold s':>8} {'(cpu)':>6} {'warm s':>8} {'(cpu)':>6} "
          f"{'cached s':>8} {'(cpu)':>6}")
    for name, _, _ in COMMANDS:
        r = results[name]
        print(f"{name:45} {r['cold']:8.3f} {r['cold_cpu']:6.2f} {r['warm']:8.3f} "
              f"{r['warm_cpu']:6.2f} {r['cached']:8.3f} {r['cached_cpu']:6.2f}")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
