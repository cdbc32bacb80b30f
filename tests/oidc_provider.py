"""A small but real OpenID Connect provider for the tests: HTTPS on
127.0.0.1 (port 0) from the standard library (`http.server` + `ssl`), its
certificate from a `trustme` CA, serving

- ``/.well-known/openid-configuration`` (issuer, jwks_uri, introspection_endpoint),
- ``/jwks`` (its public keys: one RSA, one EC P-256; more after `rotate`),
- ``/introspect`` (RFC 7662, HTTP Basic client credentials),

and minting access tokens signed with its own keys (`mint`). It runs in a
thread of the test process; daemons under test (in-process or in a
subprocess) reach it over real sockets. `down()` makes every request fail
with 503 until `up()`; `requests` counts what was asked.

    with OidcProvider() as idp:
        token = idp.mint("sec.durand@hopital.test")
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

AUDIENCE = "mss-mail"
CLIENT_ID = "mss-mail"
CLIENT_SECRET = "s3cr3t-of-the-mail-server"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class _Key:
    def __init__(self, kid: str, alg: str) -> None:
        self.kid = kid
        self.alg = alg
        self.private: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                             if alg == "RS256" else ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        pub = self.private.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": _int(pub.n), "e": _int(pub.e)}
        return {"kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": b64url(pub.x.to_bytes(32, "big")), "y": b64url(pub.y.to_bytes(32, "big"))}

    def sign(self, data: bytes) -> bytes:
        if self.alg == "RS256":
            return bytes(self.private.sign(data, padding.PKCS1v15(), hashes.SHA256()))
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class OidcProvider:
    def __init__(self, directory: Path | None = None, *, path: str = "/realms/mss") -> None:
        self.ca = trustme.CA()
        self._cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.path = path
        self.keys = [_Key("rsa-1", "RS256"), _Key("ec-1", "ES256")]
        self.published = list(self.keys)  # what /jwks shows
        self.active: dict[str, dict[str, Any]] = {}  # token -> introspection answer
        self.requests: Counter[str] = Counter()
        self.available = True
        self.directory = directory
        self._server: ThreadingHTTPServer | None = None
        self._port: int | None = None  # kept after stop(): nobody listens there then
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ server

    @property
    def port(self) -> int:
        assert self._port is not None, "start() first"
        return self._port

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.path}"

    def ca_file(self, directory: Path) -> Path:
        """The CA certificate (PEM) a client must trust, written to `directory`."""
        path = directory / "idp-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def secret_file(self, directory: Path) -> Path:
        path = directory / "idp-client-secret"
        path.write_text(CLIENT_SECRET + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                provider.requests[self.path] += 1
                if not provider.available:
                    return self._send(503, {"error": "unavailable"})
                if self.path == f"{provider.path}/.well-known/openid-configuration":
                    return self._send(200, provider.metadata())
                if self.path == f"{provider.path}/jwks":
                    return self._send(200, {"keys": [k.jwk() for k in provider.published]})
                return self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                provider.requests[self.path] += 1
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if not provider.available:
                    return self._send(503, {"error": "unavailable"})
                if self.path != f"{provider.path}/introspect":
                    return self._send(404, {"error": "not found"})
                expected = "Basic " + base64.b64encode(
                    f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._send(401, {"error": "invalid_client"})
                token = form.get("token", [""])[0]
                return self._send(200, provider.active.get(token, {"active": False}))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name="oidc-provider")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def down(self) -> None:
        self.available = False

    def up(self) -> None:
        self.available = True

    # ------------------------------------------------------------ documents

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "introspection_endpoint": f"{self.issuer}/introspect",
            "token_endpoint": f"{self.issuer}/token",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def rotate(self, alg: str = "RS256") -> _Key:
        """A new signing key, published from now on (an unknown kid to
        anyone who fetched the keys before)."""
        key = _Key(f"{alg.lower()}-{len(self.keys) + 1}", alg)
        self.keys.append(key)
        self.published.append(key)
        return key

    def settings(self, directory: Path, **overrides: Any) -> dict[str, Any]:
        """`identity_provider` settings pointing at this provider."""
        values: dict[str, Any] = {
            "issuer": self.issuer, "audience": AUDIENCE,
            "ca_file": str(self.ca_file(directory)),
        }
        if "introspection" in overrides.get("validation", ()):
            values.update(client_id=CLIENT_ID,
                          client_secret_file=str(self.secret_file(directory)))
        values.update(overrides)
        return values

    # ------------------------------------------------------------ tokens

    def mint(self, login: str | None, *, alg: str = "RS256", key: _Key | None = None,
             lifetime: float = 300.0, now: float | None = None, claim: str = "email",
             **claims: Any) -> str:
        """A signed access token naming `login` in `claim`; `claims` override
        (aud="other", iss=..., exp=..., nbf=...; None removes one)."""
        now = time.time() if now is None else now
        key = key or next(k for k in self.keys if k.alg == alg)
        payload: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": secrets.token_hex(8),
            "iat": int(now), "exp": int(now + lifetime), "jti": secrets.token_hex(8),
        }
        if login is not None:
            payload[claim] = login
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(payload).encode()))
        signature = key.sign(signing_input.encode())
        token = signing_input + "." + b64url(signature)
        self.active[token] = {"active": True, **payload, "client_id": "thunderbird",
                              "token_type": "Bearer"}
        return token

    def opaque(self, login: str, **answer: Any) -> str:
        """An opaque (non-JWT) token only introspection knows."""
        token = secrets.token_urlsafe(32)
        self.active[token] = {"active": True, "iss": self.issuer, "aud": AUDIENCE,
                              "email": login, "exp": int(time.time() + 300), **answer}
        return token

    def revoke(self, token: str) -> None:
        self.active[token] = {"active": False}
