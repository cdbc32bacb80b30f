"""Password hashing: scrypt from the standard library, self-describing strings.

Format: ``scrypt$N$r$p$salt_b64$hash_b64``. Verification is constant-time.

scrypt at N=2^14 costs tens of ms of CPU, which would bound a busy IMAP
server's login rate (clients reconnect constantly). Like Dovecot's
auth_cache, each process remembers recently *verified* credentials: keyed by
the stored hash string (unique per account thanks to its salt), it keeps an
HMAC-SHA256 of the password under a random per-process key, for a short TTL.
A hit needs the account's hash as just read from the store to be the very
string that was verified, so a password change or reset invalidates at once
(account disabling is checked by the caller on every login regardless).
Neither the password nor a reusable verifier leaves the process: the HMAC key
lives only in memory. Only successes are cached; a wrong password always
costs a full scrypt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

_N, _R, _P = 2**14, 8, 1

CACHE_TTL = 60.0  # seconds a verified password is remembered
CACHE_SIZE = 4096  # entries per process (LRU beyond that)


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _scrypt_verify(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(hash_b64)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=128 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


class VerifiedCache:
    """Stored hash -> (expiry, HMAC of the password that verified against it).

    Thread-safe: logins are verified in the store runner's thread pool.
    """

    def __init__(self, *, ttl: float = CACHE_TTL, size: int = CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()

    def hit(self, password: str, encoded: str) -> bool:
        if self.ttl <= 0 or self.size <= 0:
            return False
        with self._lock:
            entry = self._entries.get(encoded)
            if entry is None:
                return False
            if entry[0] <= self._clock():
                del self._entries[encoded]
                return False
        return hmac.compare_digest(entry[1], self._mac(password))

    def remember(self, password: str, encoded: str) -> None:
        if self.ttl <= 0 or self.size <= 0:
            return
        mac = self._mac(password)
        with self._lock:
            self._entries[encoded] = (self._clock() + self.ttl, mac)
            self._entries.move_to_end(encoded)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = VerifiedCache()


def verify_password(password: str, encoded: str, *, cache: VerifiedCache | None = None) -> bool:
    """True when `password` matches the stored `encoded` hash.

    Uses the per-process verified-credentials cache (see module docstring);
    pass `cache=` to use another (tests)."""
    c = _cache if cache is None else cache
    if c.hit(password, encoded):
        return True
    ok = _scrypt_verify(password, encoded)
    if ok:
        c.remember(password, encoded)
    return ok


@functools.cache
def _decoy_hash() -> str:
    # Of a random secret nobody knows, so that no password ever matches it
    # (and no success of it lands in the cache).
    return hash_password(secrets.token_urlsafe(32))


def spend_verification(password: str, encoded: str | None) -> None:
    """Does the work of verifying `password` against `encoded` (a decoy hash
    of the default cost when None) and forgets the answer: what a login that
    is refused before its password counts (a locked account) spends, so that
    its timing cannot tell it from a wrong password. Never through the
    verified-credentials cache: a cached right password would answer faster."""
    _scrypt_verify(password, encoded or _decoy_hash())
