"""conf.loader: a plaintext listener (tls none) only on a loopback address.

LOGIN / AUTH PLAIN are accepted in clear on such a listener, so a password
must never reach it over a network.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conf.loader import ConfigError, is_loopback, load_settings

TEMPLATE = """\
hostname: mx.hopital.test
domains: [hopital.test]
listeners:
  - {{name: smtp-mx, port: 2525, role: mx}}
  - {{name: plain, port: 1143, role: imap, tls: none{address}}}
database:
  url: sqlite:///mss.db
tls:
  cert_file: pki/server.pem
  key_file: pki/server.key
audit:
  path: audit.log
key_file: keys
"""


def _load(tmp_path: Path, address: str | None) -> object:
    extra = "" if address is None else f", address: '{address}'"
    path = tmp_path / "mss.yaml"
    path.write_text(TEMPLATE.format(address=extra), encoding="utf-8")
    return load_settings(path)


@pytest.mark.parametrize("address", [None, "127.0.0.1", "127.5.6.7", "::1", "[::1]"])
def test_plaintext_listener_on_loopback_is_accepted(tmp_path: Path, address: str | None) -> None:
    settings = _load(tmp_path, address)
    assert settings.listeners[1].name == "plain"  # type: ignore[attr-defined]


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.10", "2001:db8::1", "",
                                     "localhost", "mail.hopital.test"])
def test_plaintext_listener_elsewhere_is_a_config_error(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, address)
    assert info.value.lines == [
        f"{tmp_path / 'mss.yaml'}: listeners.1.address: expected a loopback address (127.0.0.0/8 or ::1) "
        f"for a listener with tls none, got {address!r}"
    ]


def test_tls_listeners_may_bind_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "mss.yaml"
    path.write_text(TEMPLATE.format(address="").replace("tls: none", "tls: implicit")
                    .replace("role: mx}", "role: mx, address: '0.0.0.0'}"), encoding="utf-8")
    settings = load_settings(path)
    assert settings.listeners[0].address == "0.0.0.0"


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("128.0.0.1", False), ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("localhost", False),
])
def test_is_loopback(address: str, expected: bool) -> None:
    assert is_loopback(address) is expected
