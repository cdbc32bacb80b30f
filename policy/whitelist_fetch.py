"""The national whitelist fetched from the agency's HTTPS URL.

`refresh_whitelist` is blocking (run it on a thread): it downloads the
document, parses it as `Whitelist.parse` does (a broken or hostile document is
refused whole), writes it as the last good copy (`policy.whitelist_file`,
replaced atomically, so a restart without the network still has it) and swaps
it into the policy. Anything that goes wrong keeps the running list and the
file as they were. One audit event per attempt (`whitelist-refresh`).

`SharedWhitelist` makes it one fetch per period for all the workers of all
the nodes on one database: the worker that takes the job's lease fetches and
keeps the document in the store (`put_shared_file`); the others take it from
there at their next tick, write their node's copy and swap it in.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    shared: bool = False  # taken from the store: another worker fetched it
    # The valid document fetched (what SharedWhitelist keeps in the store).
    document: bytes | None = field(default=None, repr=False, compare=False)


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
    return RefreshResult(True, url, len(whitelist.domains), whitelist.generated,
                         document=data)


class SharedWhitelist:
    """The whitelist refresh of one worker when several workers and nodes
    share a store: call `tick` now and then (on a thread: it blocks). The
    job's lease lasts `period` (`policy.whitelist_refresh`), so the URL is
    fetched once per period by whichever worker takes it; at the other ticks,
    and in the other workers, a document newer than the running one is taken
    from the store. Job and file names carry a digest of the URL: after a
    change of URL nothing fetched from the former one is used."""

    def __init__(self, policy: Any, store: Any, url: str, copy: Path,
                 ca_file: Path | None, holder: str, period: timedelta,
                 timeout: float = TIMEOUT) -> None:
        self.policy, self.store, self.url, self.copy = policy, store, url, copy
        self.ca_file, self.holder, self.period, self.timeout = ca_file, holder, period, timeout
        tag = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.job = f"whitelist-fetch:{tag}"
        self.name = f"whitelist:{tag}"
        # The running list was read from the copy at start: a shared document
        # with the same bytes is nothing new.
        try:
            self.digest: str | None = hashlib.sha256(copy.read_bytes()).hexdigest()
        except OSError:
            self.digest = None

    def tick(self, now: datetime) -> RefreshResult | None:
        """Fetches if this worker takes the lease, else takes a newer shared
        document; None when there was nothing to do."""
        if self.store.claim_job(self.job, self.holder, now, now + self.period):
            result = refresh_whitelist(self.policy, self.url, self.copy, self.ca_file,
                                       self.timeout)
            if result.document is not None:
                self.digest = self.store.put_shared_file(self.name, result.document, now)
            return result
        shared = self.store.shared_file(self.name, unless_digest=self.digest)
        if shared is None:
            return None
        try:
            whitelist = Whitelist.parse(shared.data)
            _write_atomically(self.copy, shared.data)
        except (OSError, WhitelistError) as exc:
            # Checked before it was stored: only a broken store or disk gets
            # here; the next newer document is tried again.
            self.digest = shared.digest
            return RefreshResult(False, self.url, reason=str(exc) or type(exc).__name__,
                                 shared=True)
        self.digest = shared.digest
        self.policy.whitelist = whitelist
        return RefreshResult(True, self.url, len(whitelist.domains), whitelist.generated,
                             shared=True)
