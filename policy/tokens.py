"""Identity-provider access tokens: JWT (RFC 7519) checks, pure (no I/O).

`verify_jwt` takes a compact JWS token, the provider's keys (a JWKS, RFC 7517)
and what we expect (issuer, audience, clock, leeway, the claim naming the
account) and returns the `TokenClaims`, or raises `TokenError` with a short
reason recorded in the audit log ("expired", "wrong-audience",
"bad-signature" ...). Only RS256 and ES256 are accepted: never "none", never
a shared-secret HS* algorithm (a public key must not become an HMAC key).

`policy.idp` fetches the keys (and asks the introspection endpoint,
RFC 7662) on a thread; `Policy.authenticate_token` maps the result to an
account.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN = 12288
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    """A token that does not log anyone in. `reason` is one of: malformed,
    algorithm, unknown-key, bad-signature, wrong-issuer, wrong-audience,
    expired, not-yet-valid, no-login-claim, unverified-email (the login claim
    is "email" and the token says `email_verified` false), inactive (introspection), and
    `temporary` is set when the provider could not be asked (unavailable)."""

    def __init__(self, reason: str, *, login: str | None = None, temporary: bool = False,
                 detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.login = login  # who the token names, when that much was verified
        self.temporary = temporary
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says, as far as login needs."""

    login: str  # the configured claim (e.g. email), lower-cased
    subject: str | None  # sub
    issuer: str | None
    expires: float | None
    validated_by: str  # "jwks", "introspection" or "jwks+introspection"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of checking a token: claims, or the error's reason."""

    claims: TokenClaims | None = None
    error: str | None = None
    temporary: bool = False  # the provider could not be asked: try again later
    login: str | None = None  # who an invalid token names, if known (audit)

    @classmethod
    def failed(cls, exc: TokenError) -> TokenCheck:
        return cls(None, exc.reason, exc.temporary, exc.login)


@dataclass(frozen=True, slots=True)
class Expectations:
    issuer: str
    audience: str
    login_claim: str
    now: float
    leeway: float


# ---------------------------------------------------------------- parsing


def b64url_decode(text: str) -> bytes:
    """Base64url without padding (RFC 7515 2); raises TokenError("malformed")."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("malformed", detail="bad base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", detail="bad base64url") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):  # "[[[[…": the parser recurses
        raise TokenError("malformed", detail="not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("malformed", detail="not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class ParsedJwt:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_jwt(token: str) -> ParsedJwt:
    """The three parts of a compact JWS; raises TokenError("malformed")."""
    if len(token) > MAX_TOKEN:
        raise TokenError("malformed", detail="too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed", detail="not a JWT")
    header = _json_object(b64url_decode(parts[0]))
    payload = _json_object(b64url_decode(parts[1]))
    return ParsedJwt(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"),
                     b64url_decode(parts[2]))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


# ---------------------------------------------------------------- keys


def _b64_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"missing {name}")
    return int.from_bytes(b64url_decode(value), "big")


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def public_key(jwk: Mapping[str, Any]) -> PublicKey | None:
    """The key of one JWK (RSA, or EC P-256), or None for a key we cannot
    use (another type or curve, a private or symmetric key, bad numbers)."""
    try:
        kty = jwk.get("kty")
        if kty == "RSA":
            if "d" in jwk:
                return None
            return rsa.RSAPublicNumbers(_b64_int(jwk, "e"), _b64_int(jwk, "n")).public_key()
        if kty == "EC" and jwk.get("crv") == "P-256":
            if "d" in jwk:
                return None
            return ec.EllipticCurvePublicNumbers(
                _b64_int(jwk, "x"), _b64_int(jwk, "y"), ec.SECP256R1()).public_key()
    except (ValueError, TokenError):
        return None
    return None


def usable_keys(jwks: Mapping[str, Any]) -> dict[str, tuple[PublicKey, str | None]]:
    """kid -> (key, its "alg" if the JWK names one), for the signing keys of a
    JWKS document; keys without a kid are listed under ""."""
    out: dict[str, tuple[PublicKey, str | None]] = {}
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        return out
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        key = public_key(jwk)
        if key is None:
            continue
        kid = jwk.get("kid", "")
        alg = jwk.get("alg")
        if isinstance(kid, str):
            out[kid] = (key, alg if isinstance(alg, str) else None)
    return out


def verify_signature(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:  # RFC 7518 3.4: R || S, 32 octets each
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


# ---------------------------------------------------------------- claims


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("malformed", detail=f"{name} is not a number")
    return float(value)


def login_of(payload: Mapping[str, Any], claim: str) -> str | None:
    value = payload.get(claim)
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return None


def check_claims(payload: Mapping[str, Any], expect: Expectations, *,
                 require_exp: bool = True, validated_by: str = "jwks") -> TokenClaims:
    """Issuer, audience, validity window, login claim. `require_exp`: an
    introspection answer may leave exp out (the provider said "active")."""
    login = login_of(payload, expect.login_claim)
    issuer = payload.get("iss")
    if require_exp or issuer is not None:
        if issuer != expect.issuer:
            raise TokenError("wrong-issuer", login=login)
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is None:
        if require_exp or aud is not None:
            raise TokenError("wrong-audience", login=login)
    elif expect.audience not in audiences:
        raise TokenError("wrong-audience", login=login)
    exp = _number(payload, "exp")
    if exp is None and require_exp:
        raise TokenError("malformed", login=login, detail="no exp")
    if exp is not None and expect.now > exp + expect.leeway:
        raise TokenError("expired", login=login)
    nbf = _number(payload, "nbf")
    if nbf is not None and expect.now + expect.leeway < nbf:
        raise TokenError("not-yet-valid", login=login)
    if login is None:
        raise TokenError("no-login-claim", detail=expect.login_claim)
    if expect.login_claim == "email" and payload.get("email_verified", True) is not True:
        # A provider that lets users set their email unproved says so here;
        # such an address names no account ("nOAuth").
        raise TokenError("unverified-email", login=login)
    sub = payload.get("sub")
    return TokenClaims(login=login, subject=sub if isinstance(sub, str) else None,
                       issuer=issuer if isinstance(issuer, str) else None,
                       expires=exp, validated_by=validated_by)


def verify_jwt(parsed: ParsedJwt, keys: Mapping[str, tuple[PublicKey, str | None]],
               expect: Expectations) -> TokenClaims:
    """Signature (RS256/ES256 with the key named by kid), then the claims.
    Raises TokenError; "unknown-key" means the caller may refresh the JWKS
    and try again."""
    alg = parsed.header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenError("algorithm", detail=str(alg)[:20])
    if "crit" in parsed.header:
        # RFC 7515 4.1.11: extensions we do not understand must be refused.
        raise TokenError("malformed", detail="crit header")
    kid = parsed.header.get("kid", "")
    if not isinstance(kid, str):
        raise TokenError("malformed", detail="kid is not a string")
    found = keys.get(kid)
    if found is None and not kid and len(keys) == 1:
        found = next(iter(keys.values()))  # a provider with one key may omit kid
    if found is None:
        raise TokenError("unknown-key")
    key, key_alg = found
    if key_alg is not None and key_alg != alg:
        raise TokenError("algorithm", detail="differs from the key's")
    if not verify_signature(alg, key, parsed.signing_input, parsed.signature):
        raise TokenError("bad-signature")
    return check_claims(parsed.payload, expect)
