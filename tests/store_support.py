"""Test helpers shared by every tier, importable from any test module:

    from store_support import make_settings, store_paths, TEST_DOMAIN

(Import them from here, not from `conftest`: several conftest.py files exist,
and which one `import conftest` finds depends on collection order.)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from conf.settings import Settings

TEST_DOMAIN = "hopital.test"

# The production default (`conf.settings.LoginMethodSettings`) allows no
# password alone; the tests log staff and practitioners in with passwords, as
# the demo (`mssctl init --demo`) lets its people do.
TEST_LOGIN_METHODS: dict[str, list[str]] = {
    "practitioner": ["card", "password"],
    "staff": ["password", "password+totp", "token", "card"],
    "system": ["org-certificate", "password"],
    "admin": ["card", "password+totp"],
}


def store_paths(tmp_path: Path) -> tuple[str, Path]:
    """(database URL, key file) used by the `store` fixture for this tmp_path."""
    return f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings pointing at the store of `store_paths(tmp_path)`.

    Overrides replace top-level fields (e.g. ``listeners=[...]``, ``tls=...``,
    ``limits=LimitSettings(...)``). The TLS paths are placeholders under
    tmp_path/tls: tests that need real certificates pass their own ``tls``.
    ``policy`` given as a mapping gets `TEST_LOGIN_METHODS` unless it names
    its own ``login_methods``; a `PolicySettings` is taken as it is.
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
        "policy": {"login_methods": TEST_LOGIN_METHODS},
    }
    policy = overrides.get("policy")
    if isinstance(policy, dict):
        overrides["policy"] = {"login_methods": TEST_LOGIN_METHODS, **policy}
    values.update(overrides)
    return Settings.model_validate(values)


def copy_store_template(template: Path, tmp_path: Path) -> tuple[str, Path]:
    """Copies the template to the `store_paths(tmp_path)` locations."""
    url, key_file = store_paths(tmp_path)
    shutil.copy(template / "mss.db", tmp_path / "mss.db")
    shutil.copy(template / "keys", key_file)  # keeps mode 0600
    return url, key_file
