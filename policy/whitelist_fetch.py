"""The national whitelist fetched from the agency's HTTPS URL.

`refresh_whitelist` is blocking (run it on a thread): it downloads the
document, parses it as `Whitelist.parse` does (a broken or hostile document is
refused whole), writes it as the last good copy (`policy.whitelist_file`,
replaced atomically, so a restart without the network still has it) and swaps
it into the policy. Anything that goes wrong keeps the running list and the
file as they were. One audit event per attempt (`whitelist-refresh`).
"""

from __future__ import annotations

import http.client
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy.whitelist import Whitelist, WhitelistError

# A real list has ~6,500 entries (about 4 MB); anything far larger is refused.
MAX_DOCUMENT = 64 * 1024 * 1024
TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class RefreshResult:
    ok: bool
    url: str
    domains: int = 0
    generated: str | None = None
    reason: str | None = None  # why the running list was kept


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to plain http: the agency's URL is used as given."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, ca_file: Path | None, timeout: float = TIMEOUT) -> bytes:
    """The document at the https URL (certificate and host name verified).
    Raises OSError (network, TLS, HTTP status) or WhitelistError (too large)."""
    if not url.startswith("https://"):
        raise WhitelistError(f"{url}: only https:// URLs are used")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         _NoRedirect())
    with opener.open(url, timeout=timeout) as response:  # noqa: S310 - https only, above
        data: bytes = response.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise WhitelistError(f"{url}: larger than {MAX_DOCUMENT} bytes")
    return data


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".whitelist-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresh_whitelist(policy: Any, url: str, copy: Path, ca_file: Path | None,
                      timeout: float = TIMEOUT) -> RefreshResult:
    """Fetch, check, keep a copy, swap (see the module docstring)."""
    try:
        data = fetch(url, ca_file, timeout)
        whitelist = Whitelist.parse(data)
        _write_atomically(copy, data)
    except (OSError, WhitelistError, urllib.error.URLError, ssl.SSLError,
            http.client.HTTPException) as exc:  # a cut answer, a bad status line
        reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        policy.audit.record("system", "whitelist-refresh", url, "fail", reason=reason[:500],
                            kept=policy.whitelist is not None)
        return RefreshResult(False, url, reason=reason)
    policy.whitelist = whitelist
    policy.audit.record("system", "whitelist-refresh", url, "ok",
                        domains=len(whitelist.domains), generated=whitelist.generated)
    return RefreshResult(True, url, len(whitelist.domains), whitelist.generated)
