"""Shared fixtures for every test tier.

`store`: a migrated SqlStore on SQLite in tmp_path (mss.db, keys), with the
domain "hopital.test" added (copied from a per-session template: fast).
`make_settings(tmp_path, **overrides)` returns a `conf.settings.Settings`
pointing at that same database and key file; import it (and `store_paths`,
`TEST_DOMAIN`) from `store_support`, or use the `settings_factory` fixture.

`pg_cluster` (session): a throwaway PostgreSQL cluster on 127.0.0.1, a
`pg_support.PgCluster` (`url(pg_cluster.new_database())` is a migrated, empty
database of its own); see tests/pg_support.py.

Other teams add fixtures in their own conftest files (tests/protocol/conftest.py,
tests/e2e/conftest.py ...) or append below, carefully.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_support import (  # noqa: F401 - re-exported for `from conftest import ...`
    TEST_DOMAIN,
    copy_store_template,
    make_settings,
    store_paths,
)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a migrated mss.db (domain "hopital.test") and its
    keys, made once per session (per xdist worker): copying it is ~10x faster
    than running the Alembic upgrade for every test."""
    from storage import open_store
    from storage.crypto import generate_key_file

    directory = tmp_path_factory.mktemp("store-template")
    generate_key_file(directory / "keys")
    s = open_store(f"sqlite:///{directory / 'mss.db'}", directory / "keys", create=True)
    s.add_domain(TEST_DOMAIN)
    s.close()  # last connection: the WAL is checkpointed into mss.db
    return directory


@pytest.fixture
def store(tmp_path: Path, store_template: Path) -> Iterator[Any]:
    """A migrated SqlStore (SQLite in tmp_path/mss.db, keys in tmp_path/keys)
    with the domain "hopital.test"."""
    from storage import open_store

    url, key_file = copy_store_template(store_template, tmp_path)
    s = open_store(url, key_file)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings_factory() -> Any:
    """The `make_settings` helper as a fixture, for tests that prefer injection."""
    return make_settings


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL cluster per session (per xdist worker), for
    tests/storage and tests/e2e alike: a `pg_support.PgCluster`. Without the
    PostgreSQL binaries the tests using it are skipped, except under CI=true
    where they FAIL."""
    from pg_support import pg_binaries, running_cluster

    bindir = pg_binaries()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries not found (initdb) and CI=true")
        pytest.skip("PostgreSQL binaries not found (initdb)")
    with running_cluster(bindir) as cluster:
        yield cluster


# ---------------------------------------------------------------- PKI (CERTS team)


@pytest.fixture(scope="session")
def dev_pki() -> Any:
    """A `certs.devpki.DevPKI` (demo=True, domain hopital.test, server names
    mx.hopital.test, localhost, 127.0.0.1) shared by the whole session. Do not
    modify its files; use `pki.copy_pki(dev_pki, tmp_path)` for that.
    Helpers: `from pki import tls_settings` (TLSSettings on this PKI)."""
    from pki import session_pki

    return session_pki()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """On CI (CI=true), a skipped test is a failure: nothing may be skipped for
    lack of a tool there (`.ci/run` installs them). Expected failures (xfail)
    are not skips and stay as they are."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and os.environ.get("CI", "").lower() in ("1", "true", "yes")
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped on CI, which must run every test: {reason}"


# ---------------------------------------------------------------- LDAP (directory sync)


def _need_slapd() -> None:
    from ldap_support import slapd_binaries

    if slapd_binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("slapd not found (Debian slapd, ldap-utils) and CI=true")
        pytest.skip("slapd not found (Debian slapd, ldap-utils)")


@pytest.fixture(scope="session")
def ldap_1000(dev_pki: Any) -> Iterator[Any]:
    """A throwaway slapd (`ldap_support.running_slapd`) holding 1,000 people
    and 50 service groups (`ldap_support.people_ldif`), for the whole
    session: do not change its entries (use `ldap_small`)."""
    from ldap_support import people_ldif, running_slapd

    _need_slapd()
    with running_slapd(dev_pki, people_ldif(1000, 50)) as server:
        yield server


@pytest.fixture
def ldap_small(dev_pki: Any, tmp_path: Path) -> Iterator[Any]:
    """A slapd of the test's own (12 people, 3 service groups), to change."""
    from ldap_support import people_ldif, running_slapd

    _need_slapd()
    with running_slapd(dev_pki, people_ldif(12, 3), tmp_path / "slapd") as server:
        yield server
