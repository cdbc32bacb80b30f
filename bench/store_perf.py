"""Store performance check (not a timed test): index() of a 100,000-message
folder, message_infos() of 1,000 UIDs, and append/deliver throughput, on SQLite
in a temp dir. Run: .venv/bin/python bench/store_perf.py [--postgres URL]"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402

from storage import open_store  # noqa: E402
from storage.crypto import generate_key_file  # noqa: E402
from storage.interface import AccountClass, Delivery, FlagMode, MailboxType  # noqa: E402
from storage.models import BodyRow, FolderRow, MessageRow  # noqa: E402

N = 100_000
MSG = (
    b"From: a@hopital.test\r\nTo: b@hopital.test\r\nSubject: perf\r\n"
    b"Message-ID: <x@hopital.test>\r\n\r\n" + b"line of text\r\n" * 50
)


def best(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="database URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    key = d / "keys"
    generate_key_file(key)
    url = args.url or f"sqlite:///{d / 'mss.db'}"
    store = open_store(url, key, create=True)
    store.add_domain("perf.test")
    acc = store.add_account("p@perf.test", "P", AccountClass.STAFF)
    mb = store.add_mailbox("p@perf.test", MailboxType.PER, owner_account_id=acc.id)
    inbox = store.get_folder(mb.id, "INBOX")

    t = time.perf_counter()
    n_append = 200
    for _ in range(n_append):
        store.append(inbox.id, MSG)
    dt = time.perf_counter() - t
    print(f"append: {n_append / dt:.0f}/s ({dt / n_append * 1000:.2f} ms each)")
    t = time.perf_counter()
    for _ in range(100):
        store.deliver(Delivery(MSG, (mb.id,)))
    dt = time.perf_counter() - t
    print(f"deliver: {100 / dt:.0f}/s")
    # Group commit as the SMTP server does it: CPU per delivery (process time,
    # so a busy machine or a slow fsync does not blur it) and wall rate.
    for size in (1, 16, 64):
        batches = max(2, 640 // size)
        cpu, t = time.process_time(), time.perf_counter()
        for _ in range(batches):
            store.deliver_many([Delivery(MSG, (mb.id,)) for _ in range(size)])
        cpu, dt = time.process_time() - cpu, time.perf_counter() - t
        n = batches * size
        print(f"deliver_many x{size}: {n / dt:.0f}/s, {cpu / n * 1000:.3f} ms CPU per delivery")

    # Bulk-fill a second folder with 100,000 rows sharing one body.
    big = store.create_folder(mb.id, "Big")
    body_id = store.append(big.id, MSG).uid  # noqa: F841 (creates a body row)
    with store.engine.begin() as c:
        bid = c.execute(BodyRow.__table__.select().limit(1)).first().id  # type: ignore[union-attr]
        rows = [
            {
                "folder_id": big.id,
                "uid": i + 2,
                "modseq": 3,
                "flags": "\\Seen" if i % 3 else "",
                "internal_date": 1_700_000_000 + i,
                "size": len(MSG),
                "recent": False,
                "body_id": bid,
            }
            for i in range(N)
        ]
        c.execute(insert(MessageRow.__table__), rows)
        c.execute(
            FolderRow.__table__.update()
            .where(FolderRow.__table__.c.id == big.id)
            .values(uidnext=N + 2, highestmodseq=3)
        )
    n = len(store.index(big.id))
    from storage.index import IndexCache

    def cold() -> None:
        store._index_cache = IndexCache()  # type: ignore[attr-defined]
        store.index(big.id)

    print(f"index({n}) cold (no cache): {best(cold) * 1000:.1f} ms")
    store.index(big.id)
    print(f"index({n}) unchanged folder: {best(lambda: store.index(big.id)) * 1000:.1f} ms")

    def after_change() -> None:
        store.append(big.id, MSG)
        store.store_flags(big.id, [5, 6], FlagMode.ADD, ["\\Flagged"])
        t = time.perf_counter()
        store.index(big.id)
        times.append(time.perf_counter() - t)

    times: list[float] = []
    for _ in range(5):
        after_change()
    print(f"index({n}) after append + flag change elsewhere: {min(times) * 1000:.1f} ms")
    uids = list(range(2, 1002))
    def infos_cold() -> None:
        store._meta_cache.clear()  # decrypt and decode every time, as on first sight
        store.message_infos(big.id, uids)

    print(f"message_infos(1000): {best(infos_cold) * 1000:.1f} ms cold, "
          f"{best(lambda: store.message_infos(big.id, uids)) * 1000:.1f} ms with the "
          "metadata cache")
    print(f"folder_status: {best(lambda: store.folder_status(big.id)) * 1000:.1f} ms")
    print(f"changes_since: {best(lambda: store.changes_since(big.id, 3)) * 1000:.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
