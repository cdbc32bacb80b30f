"""The identity provider (OpenID Connect): its keys and its introspection
endpoint, asked over HTTPS.

`IdentityProvider.verify(token)` is blocking (network): the authenticator
runs it on a thread of its own runner, never on the reactor. It never raises
for a bad token or an unreachable provider: it returns a `TokenCheck` whose
error names why (`policy.tokens`), `temporary` when the provider could not
be asked (the protocols then answer "try again later", never "wrong
password").

Keys: the provider's metadata (``/.well-known/openid-configuration`` of the
configured issuer) names its ``jwks_uri``; the keys are kept for
`identity_provider.jwks_cache` seconds, fetched again at once (at most every
`refresh_interval` seconds, so random key ids cannot make us hammer the
provider) when a token names an unknown key, and kept when a refresh fails
(a token naming a key that could not be fetched is then a temporary failure).
Introspection (RFC 7662): a POST with the client's credentials (HTTP Basic)
to the provider's ``introspection_endpoint`` (or the configured one).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from conf.settings import IdentityProviderSettings, TokenValidation
from policy.tokens import (
    Expectations,
    PublicKey,
    TokenCheck,
    TokenClaims,
    TokenError,
    check_claims,
    login_of,
    looks_like_jwt,
    parse_jwt,
    usable_keys,
    verify_jwt,
)

log = logging.getLogger(__name__)

MAX_DOCUMENT = 1024 * 1024  # bytes read from any provider answer
DEFAULT_REFRESH_INTERVAL = 10.0  # seconds between two key fetches, at least


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A provider answer that redirects elsewhere is refused (it could lead
    to plain HTTP or to another host)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _unavailable(detail: str) -> TokenError:
    return TokenError("idp-unavailable", temporary=True, detail=detail)


class IdentityProvider:
    def __init__(
        self,
        settings: IdentityProviderSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
    ) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.discovery_url = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._clock = clock
        self._monotonic = monotonic
        self._refresh_interval = refresh_interval
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file is not None else None)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect())
        self._secret: str | None = None
        if settings.client_secret_file is not None:
            self._secret = settings.client_secret_file.read_text(encoding="utf-8").strip()
        self._lock = threading.Lock()  # one fetch at a time; readers see whole dicts
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, tuple[PublicKey, str | None]] = {}
        self._keys_expire = 0.0  # monotonic
        self._last_fetch: float | None = None  # monotonic

    # ------------------------------------------------------------ HTTP

    def _request(self, url: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
        """A JSON object from the provider; raises TokenError(idp-unavailable)."""
        if not url.startswith("https://"):
            raise _unavailable("provider URL is not https")
        request = urllib.request.Request(  # noqa: S310 - https only, checked above
            url, data=data, headers={"Accept": "application/json", **(headers or {})})
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as answer:
                body = answer.read(MAX_DOCUMENT + 1)
        except urllib.error.HTTPError as exc:
            raise _unavailable(f"HTTP {exc.code} from {_where(url)}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: a cut chunked answer, too many headers ...
            raise _unavailable(f"{_where(url)}: {type(exc).__name__}") from None
        if len(body) > MAX_DOCUMENT:
            raise _unavailable(f"answer of {_where(url)} too large")
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise _unavailable(f"answer of {_where(url)} is not JSON") from None
        if not isinstance(value, dict):
            raise _unavailable(f"answer of {_where(url)} is not a JSON object")
        return value

    def metadata(self) -> dict[str, Any]:
        """The provider's OpenID configuration (fetched once, then with the keys)."""
        if self._metadata is None:
            doc = self._request(self.discovery_url)
            if doc.get("issuer") != self.issuer:
                # OpenID Connect Discovery 4.3: it must name the issuer we asked.
                raise _unavailable("discovery names another issuer")
            self._metadata = doc
        return self._metadata

    # ------------------------------------------------------------ keys

    def _fetch_keys(self) -> None:
        self._last_fetch = self._monotonic()
        self._metadata = None  # keys moved? the metadata may say so
        uri = self.metadata().get("jwks_uri")
        if not isinstance(uri, str):
            raise _unavailable("discovery has no jwks_uri")
        keys = usable_keys(self._request(uri))
        self._keys = keys
        self._keys_expire = self._monotonic() + self.settings.jwks_cache
        log.info("identity provider: %d signing key(s) from %s", len(keys), _where(uri))

    def signing_keys(self, *, unknown_kid: bool = False) -> dict[str, tuple[PublicKey, str | None]]:
        """The cached keys, fetched when missing or expired, or (`unknown_kid`)
        when a token names a key we do not have, at most every
        `refresh_interval` seconds. A failed fetch keeps the keys we had."""
        with self._lock:
            now = self._monotonic()
            due = not self._keys or now >= self._keys_expire
            if unknown_kid and (self._last_fetch is None
                                or now - self._last_fetch >= self._refresh_interval):
                due = True
            if due:
                try:
                    self._fetch_keys()
                except TokenError:
                    # A token naming a key we could not fetch: try again later.
                    if unknown_kid or not self._keys:
                        raise
                    log.warning("identity provider: key refresh failed, keeping the known keys")
            return self._keys

    # ------------------------------------------------------------ tokens

    def _expectations(self) -> Expectations:
        s = self.settings
        return Expectations(issuer=s.issuer, audience=s.audience, login_claim=s.login_claim,
                            now=self._clock(), leeway=s.leeway)

    def _verify_jwt(self, token: str, expect: Expectations) -> TokenClaims:
        parsed = parse_jwt(token)
        try:
            return verify_jwt(parsed, self.signing_keys(), expect)
        except TokenError as exc:
            if exc.reason != "unknown-key":
                raise
        return verify_jwt(parsed, self.signing_keys(unknown_kid=True), expect)

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 2.1: POST token (and a hint) with the client's credentials."""
        s = self.settings
        endpoint = s.introspection_endpoint or self.metadata().get("introspection_endpoint")
        if not isinstance(endpoint, str):
            raise _unavailable("no introspection endpoint")
        credentials = f"{urllib.parse.quote(s.client_id or '')}:{urllib.parse.quote(self._secret or '')}"
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})
        return self._request(endpoint, body.encode("ascii"), {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii"),
        })

    def _verify(self, token: str) -> TokenClaims:
        methods = self.settings.validation
        expect = self._expectations()
        claims: TokenClaims | None = None
        if TokenValidation.JWKS in methods:
            if looks_like_jwt(token):
                claims = self._verify_jwt(token, expect)
            elif TokenValidation.INTROSPECTION not in methods:
                raise TokenError("malformed", detail="not a JWT")
        if TokenValidation.INTROSPECTION in methods:
            answer = self.introspect(token)
            if answer.get("active") is not True:
                raise TokenError("inactive",
                                 login=claims.login if claims else login_of(
                                     answer, self.settings.login_claim))
            if claims is None:
                claims = check_claims(answer, expect, require_exp=False,
                                      validated_by="introspection")
            else:
                claims = replace(claims, validated_by="jwks+introspection")
        assert claims is not None
        return claims

    def verify(self, token: str) -> TokenCheck:
        """Blocking: run it on a thread. Never raises for a bad token or an
        unreachable provider."""
        try:
            return TokenCheck(self._verify(token))
        except TokenError as exc:
            if exc.temporary:
                log.warning("identity provider unavailable: %s", exc.detail)
            return TokenCheck.failed(exc)


def _where(url: str) -> str:
    """Scheme, host and path of a URL for logs (never a query)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
