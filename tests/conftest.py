"""Shared fixtures for every test tier.

`store`: a migrated SqlStore on SQLite in tmp_path, with a generated key file and
the domain "hopital.test" added. `make_settings(tmp_path, **overrides)` returns a
`conf.settings.Settings` pointing at that same database and key file.

Other teams add fixtures in their own conftest files (tests/protocol/conftest.py,
tests/e2e/conftest.py ...) or append below, carefully.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conf.settings import Settings

TEST_DOMAIN = "hopital.test"


def store_paths(tmp_path: Path) -> tuple[str, Path]:
    """(database URL, key file) used by the `store` fixture for this tmp_path."""
    return f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings pointing at the store of `store_paths(tmp_path)`.

    Overrides replace top-level fields (e.g. ``listeners=[...]``, ``tls=...``,
    ``limits=LimitSettings(...)``). The TLS paths are placeholders under
    tmp_path/tls: tests that need real certificates pass their own ``tls``.
    """
    url, key_file = store_paths(tmp_path)
    values: dict[str, Any] = {
        "hostname": "mx.hopital.test",
        "domains": [TEST_DOMAIN],
        "listeners": [{"name": "imap", "port": 0, "role": "imap", "tls": "none"}],
        "database": {"url": url},
        "tls": {
            "cert_file": tmp_path / "tls" / "server.pem",
            "key_file": tmp_path / "tls" / "server.key",
            "ca_files": [tmp_path / "tls" / "ca.pem"],
        },
        "audit": {"path": tmp_path / "audit.log"},
        "key_file": key_file,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A migrated SqlStore (SQLite in tmp_path) with domain "hopital.test"."""
    from storage import open_store
    from storage.crypto import generate_key_file

    url, key_file = store_paths(tmp_path)
    generate_key_file(key_file)
    s = open_store(url, key_file, create=True)
    s.add_domain(TEST_DOMAIN)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings_factory() -> Any:
    """The `make_settings` helper as a fixture, for tests that prefer injection."""
    return make_settings


# ---------------------------------------------------------------- PKI (CERTS team)


@pytest.fixture(scope="session")
def dev_pki() -> Any:
    """A `certs.devpki.DevPKI` (demo=True, domain hopital.test, server names
    mx.hopital.test, localhost, 127.0.0.1) shared by the whole session. Do not
    modify its files; use `pki.copy_pki(dev_pki, tmp_path)` for that.
    Helpers: `from pki import tls_settings` (TLSSettings on this PKI)."""
    from pki import session_pki

    return session_pki()
