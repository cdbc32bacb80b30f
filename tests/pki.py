"""One development PKI per test session (per xdist worker), built on demand.

Use the `dev_pki` fixture (tests/conftest.py) or call `session_pki()`; the
PKI lives in a temporary directory removed at interpreter exit. Its paths are
read-only by convention: a test that needs to change a file (a new CRL, a
broken key) copies what it needs into its own tmp_path (`copy_pki`).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from certs.devpki import DevPKI, make_dev_pki
from conf.settings import TLSSettings

PKI_DOMAIN = "hopital.test"
PKI_HOSTNAMES = ["mx.hopital.test", "localhost", "127.0.0.1"]


def build_pki(directory: Path, *, demo: bool = True) -> DevPKI:
    return make_dev_pki(directory, hostnames=list(PKI_HOSTNAMES), domain=PKI_DOMAIN, demo=demo)


@functools.cache
def session_pki() -> DevPKI:
    directory = Path(tempfile.mkdtemp(prefix="mss-pki-"))
    atexit.register(shutil.rmtree, directory, True)
    return build_pki(directory)


def tls_settings(pki: DevPKI, *, crl: bool = True, **overrides: Any) -> TLSSettings:
    """TLSSettings using the PKI: server cert/key, ca.pem, and the CRLs."""
    values: dict[str, Any] = {
        "cert_file": pki.server.cert,
        "key_file": pki.server.key,
        "ca_files": [pki.ca_bundle],
        "crl_files": list(pki.crl_files) if crl else [],
    }
    values.update(overrides)
    return TLSSettings.model_validate(values)


def copy_pki(pki: DevPKI, directory: Path) -> DevPKI:
    """A copy of the PKI's files under `directory`, with paths rewritten."""
    shutil.copytree(pki.directory, directory, dirs_exist_ok=True)

    def move(p: Any) -> Any:
        if isinstance(p, Path) and p.is_relative_to(pki.directory):
            return directory / p.relative_to(pki.directory)
        if isinstance(p, tuple):
            return tuple(move(x) for x in p)
        if hasattr(p, "__dataclass_fields__"):
            return type(p)(**{k: move(getattr(p, k)) for k in p.__dataclass_fields__})
        return p

    return move(pki)  # type: ignore[no-any-return]
