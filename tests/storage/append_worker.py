"""Child process of test_crash.py: appends messages to one folder and prints
"<uid> <n>" after each append has returned (= is durably committed); with a
count of 0, until it is killed."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from storage import open_store


def main() -> None:
    url, key_file, folder_id, name, count = sys.argv[1:6]
    store = open_store(url, Path(key_file))
    for n in range(int(count)) if int(count) else itertools.count():
        raw = f"Subject: {name} {n}\r\n\r\nappended by {name} number {n}\r\n".encode()
        uid = store.append(int(folder_id), raw).uid
        sys.stdout.write(f"{uid} {n}\n")
        sys.stdout.flush()
    store.close()


if __name__ == "__main__":
    main()
