"""A migrated SQLite store per test in ~50 ms: migrate once per session (per
xdist worker) into a template, then copy the database file for each test.
Same store as tests/conftest.py `store` (domain "hopital.test"), without
paying the ~2 s Alembic upgrade every time."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

TEMPLATE_DOMAIN = "hopital.test"


@functools.cache
def _template() -> Path:
    from storage import open_store
    from storage.crypto import generate_key_file

    directory = Path(tempfile.mkdtemp(prefix="mss-store-template-"))
    atexit.register(shutil.rmtree, directory, True)
    generate_key_file(directory / "keys")
    s = open_store(f"sqlite:///{directory / 'mss.db'}", directory / "keys", create=True)
    s.add_domain(TEMPLATE_DOMAIN)
    s.close()
    return directory


def open_template_store(tmp_path: Path) -> Any:
    """A fresh store in tmp_path (mss.db + keys, the paths conftest.store_paths uses)."""
    from storage import open_store

    template = _template()
    for name in ("mss.db", "keys"):
        shutil.copy(template / name, tmp_path / name)
    return open_store(f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys")
