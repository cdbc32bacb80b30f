"""One-time codes (TOTP, RFC 6238) as the second factor of password logins.

What authenticator apps expect: 6 digits, a 30-second step, HMAC-SHA-1, a
160-bit secret shown as base32 in an ``otpauth://totp/...`` URI (the Key
Uri Format of Google Authenticator, which the others follow).

Mail clients can only send a password, so the code travels inside it: the
password immediately followed by the current 6-digit code, no separator
(``s3cret`` + ``123456`` -> ``s3cret123456``), the convention of Zimbra,
privacyIDEA and Dovecot's OTP plug-ins. One step of clock drift either way
is accepted; a step once used is refused afterwards (the store keeps the
last accepted step per account, shared by every worker process).

Pure: no I/O; the store keeps the secret (encrypted) and the last step.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import urllib.parse

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.hotp import HOTP

DIGITS = 6
PERIOD = 30  # seconds per step
DRIFT = 1  # steps accepted either side of now
SECRET_BYTES = 20  # 160 bits (RFC 4226 4 recommends it)


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def time_step(now: float) -> int:
    return int(now // PERIOD)


def code_at(secret: bytes, step: int) -> str:
    # SHA-1: what authenticator apps compute (RFC 6238 allows it; HOTP's
    # truncated HMAC does not depend on SHA-1's collision resistance).
    return HOTP(secret, DIGITS, SHA1(), enforce_key_length=False).generate(step).decode()  # noqa: S303


def matching_step(secret: bytes, code: str, now: float) -> int | None:
    """The time step within the drift window whose code is `code`, or None.
    Every candidate is compared (constant time), whichever matches."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    current = time_step(now)
    found: int | None = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    return found


def split_code(secret: str) -> tuple[str, str] | None:
    """(password, code) of "password followed by the code", or None when
    the text does not end with 6 digits after at least one character."""
    if len(secret) <= DIGITS:
        return None
    code = secret[-DIGITS:]
    if not (code.isascii() and code.isdigit()):
        return None
    return secret[:-DIGITS], code


def base32_secret(secret: bytes) -> str:
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """``otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...`` with the
    parameters spelled out (apps assume them, but some want them)."""
    label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
    query = urllib.parse.urlencode({
        "secret": base32_secret(secret), "issuer": issuer, "algorithm": "SHA1",
        "digits": str(DIGITS), "period": str(PERIOD),
    })
    return f"otpauth://totp/{label}?{query}"
