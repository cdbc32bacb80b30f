"""SASL mechanisms (RFC 4422) for both daemons: pure, no Twisted, no I/O.

A protocol (IMAP AUTHENTICATE, SMTP AUTH) decodes each client line with
`decode_response` (base64, ``*`` cancels, ``=`` is empty), feeds the bytes to
a mechanism object and acts on what comes back:

- `Challenge`: send it (base64) and wait for the next client line;
- `PasswordLogin` / `ExternalLogin` / `TokenLogin`: the credentials to check;
- `Failed`: a typed failure (malformed input, cancelled, authzid refused,
  the end of a refused token exchange), mapped once by each protocol's
  catalogue (`imapd/errors.py`, `mssmtpd/replies.py`).

One strictness for both daemons: input that does not follow the mechanism's
grammar (bad UTF-8, missing or extra separators, over-long fields) is a
`Failed(MALFORMED)`, never a guessed name. No proxy authorisation: an authzid
must name the authenticating identity itself (one identity acts, and is the
one traced).

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), EXTERNAL
(RFC 4422 appendix A), OAUTHBEARER (RFC 7628, GS2 header of RFC 5801) and
XOAUTH2 (the Google/Microsoft form ``user=U\\x01auth=Bearer T\\x01\\x01``).
A refused token gets its error continuation: `Mechanism.refuse` returns the
JSON status challenge; the client's acknowledgement (``\\x01``, or an empty
response for XOAUTH2) then ends the exchange with `Failed(TOKEN_REFUSED)`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass
from typing import ClassVar

# Longest identity (an account login: the store's column) and secret we read.
MAX_IDENTITY = 320
MAX_PASSWORD = 1024
# Longest decoded client response of any mechanism (RFC 4954 4: 12288 octets
# of base64 per line, which decodes to less).
MAX_RESPONSE = 12288


class FailureKind(enum.Enum):
    MALFORMED = "malformed"  # does not follow the mechanism's grammar
    BAD_BASE64 = "bad-base64"  # the line is not base64
    CANCELLED = "cancelled"  # the client sent "*"
    AUTHZID_REFUSED = "authzid-refused"  # asks to act as someone else
    TOKEN_REFUSED = "token-refused"  # noqa: S105 - end of a refused token exchange


class Kind(enum.Enum):
    """What a mechanism's credentials are checked against."""

    PASSWORD = "password"  # noqa: S105 - a kind, not a secret
    EXTERNAL = "external"
    TOKEN = "token"  # noqa: S105 - a kind, not a secret


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes  # raw; the protocol base64-encodes it


@dataclass(frozen=True, slots=True)
class Failed:
    kind: FailureKind
    # A fixed description for logs and audit; never client data.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    authcid: str
    password: str


@dataclass(frozen=True, slots=True)
class ExternalLogin:
    authzid: str | None  # None: whatever the certificate maps to


@dataclass(frozen=True, slots=True)
class TokenLogin:
    token: str
    user: str | None  # the authzid (OAUTHBEARER a=) or user= (XOAUTH2), if given


Credentials = PasswordLogin | ExternalLogin | TokenLogin
Outcome = Challenge | Failed | Credentials

CANCELLED = Failed(FailureKind.CANCELLED, "cancelled by the client")


def _malformed(detail: str) -> Failed:
    return Failed(FailureKind.MALFORMED, detail)


# ---------------------------------------------------------------- base64


def decode_base64(text: bytes) -> bytes | None:
    """An initial response or a response line: ``=`` is empty (RFC 4959,
    RFC 4954), else strict base64 (None when it is not)."""
    text = text.strip()
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_response(line: bytes) -> bytes | Failed:
    """A client's line during an exchange: ``*`` cancels, else `decode_base64`."""
    if line.strip() == b"*":
        return CANCELLED
    data = decode_base64(line)
    if data is None:
        return Failed(FailureKind.BAD_BASE64, "response is not base64")
    return data


def encode_challenge(challenge: Challenge) -> bytes:
    return base64.b64encode(challenge.data)


# ---------------------------------------------------------------- helpers


def _utf8(data: bytes, limit: int, what: str) -> str | Failed:
    if len(data) > limit:
        return _malformed(f"{what} too long")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _malformed(f"{what} is not UTF-8")
    if "\x00" in text:
        return _malformed(f"NUL in {what}")
    return text


def _same_identity(authzid: str, authcid: str) -> bool:
    return authzid.strip().lower() == authcid.strip().lower()


# ---------------------------------------------------------------- mechanisms


class Mechanism:
    """One exchange. `start` takes the initial response (None when the
    client sent none), `respond` each later response; both return the next
    `Outcome`. A mechanism object serves one exchange only."""

    name: ClassVar[str]
    kind: ClassVar[Kind]

    def start(self, initial: bytes | None) -> Outcome:
        if initial is None:
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, response: bytes) -> Outcome:
        raise NotImplementedError

    def refuse(self, openid_configuration: str | None = None) -> Outcome:
        """After the credentials were refused: the error continuation of the
        token mechanisms, `Failed(TOKEN_REFUSED)` at once for the others."""
        return Failed(FailureKind.TOKEN_REFUSED, "refused")


class Plain(Mechanism):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd``."""

    name = "PLAIN"
    kind = Kind.PASSWORD

    def respond(self, response: bytes) -> Outcome:
        if len(response) > MAX_RESPONSE:
            return _malformed("response too long")
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return _malformed("expected authzid NUL authcid NUL password")
        authzid = _utf8(parts[0], MAX_IDENTITY, "authzid")
        authcid = _utf8(parts[1], MAX_IDENTITY, "authcid")
        password = _utf8(parts[2], MAX_PASSWORD, "password")
        for field in (authzid, authcid, password):
            if isinstance(field, Failed):
                return field
        assert isinstance(authzid, str) and isinstance(authcid, str)
        assert isinstance(password, str)
        if not authcid or not password:
            return _malformed("empty authcid or password")
        if authzid and not _same_identity(authzid, authcid):
            return Failed(FailureKind.AUTHZID_REFUSED, "authzid differs from authcid")
        return PasswordLogin(authcid, password)


class Login(Mechanism):
    """draft-murchison-sasl-login: the server asks ``Username:`` then
    ``Password:``. With SASL-IR the initial response is the user name
    (RFC 4959 allows one for any mechanism; Outlook sends it)."""

    name = "LOGIN"
    kind = Kind.PASSWORD
    USERNAME: ClassVar[bytes] = b"Username:"
    PASSWORD: ClassVar[bytes] = b"Password:"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Outcome:
        if initial is None:
            return Challenge(self.USERNAME)
        return self.respond(initial)

    def respond(self, response: bytes) -> Outcome:
        if self._username is None:
            username = _utf8(response, MAX_IDENTITY, "user name")
            if isinstance(username, Failed):
                return username
            if not username:
                return _malformed("empty user name")
            self._username = username
            return Challenge(self.PASSWORD)
        password = _utf8(response, MAX_PASSWORD, "password")
        if isinstance(password, Failed):
            return password
        if not password:
            return _malformed("empty password")
        return PasswordLogin(self._username, password)


class External(Mechanism):
    """RFC 4422 appendix A: the optional authzid. Thunderbird sends the login
    name, others an empty response."""

    name = "EXTERNAL"
    kind = Kind.EXTERNAL

    def respond(self, response: bytes) -> Outcome:
        authzid = _utf8(response, MAX_IDENTITY, "authzid")
        if isinstance(authzid, Failed):
            return authzid
        return ExternalLogin(authzid or None)


# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
# RFC 7628 3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF)
_KEY = re.compile(rb"[A-Za-z]+")
_VALUE = re.compile(rb"[\x21-\x7e \t\r\n]*")
_MAX_TOKEN = MAX_RESPONSE


def _bearer(value: bytes) -> str | Failed:
    """``Bearer <b64token>`` (RFC 6750 2.1; the scheme is case-insensitive)."""
    scheme, sp, token = value.partition(b" ")
    if not sp or scheme.lower() != b"bearer":
        return _malformed("auth is not a Bearer token")
    if len(token) > _MAX_TOKEN or not _B64TOKEN.fullmatch(token):
        return _malformed("bearer token has invalid characters")
    return token.decode("ascii")


def _kv_pairs(body: bytes) -> dict[bytes, bytes] | Failed:
    """``key=value`` pairs separated by ``\\x01``, the list ending with
    ``\\x01\\x01`` (``body`` starts after the header's separator)."""
    if not body.endswith(b"\x01\x01"):
        return _malformed("missing the final \\x01\\x01")
    pairs: dict[bytes, bytes] = {}
    for item in body[:-2].split(b"\x01"):
        key, eq, value = item.partition(b"=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            return _malformed("bad key=value pair")
        if key in pairs:
            return _malformed("repeated key")
        pairs[key] = value
    return pairs


def _token_error(status: str, openid_configuration: str | None, *, xoauth2: bool) -> bytes:
    if xoauth2:
        # What Google and Microsoft send (a JSON object, HTTP-like status).
        body: dict[str, str] = {"status": "401", "schemes": "bearer"}
    else:
        body = {"status": status}
    if openid_configuration:
        body["openid-configuration"] = openid_configuration
    return json.dumps(body, separators=(",", ":")).encode("ascii")


class _TokenMechanism(Mechanism):
    kind = Kind.TOKEN
    XOAUTH2: ClassVar[bool] = False

    def __init__(self) -> None:
        self._refused = False

    def respond(self, response: bytes) -> Outcome:
        if self._refused:
            return self._acknowledged(response)
        if len(response) > MAX_RESPONSE:
            return _malformed("response too long")
        return self._parse(response)

    def _parse(self, response: bytes) -> Outcome:
        raise NotImplementedError

    def _acknowledged(self, response: bytes) -> Outcome:
        # RFC 7628 3.2.3: the client answers the error with a lone %x01;
        # XOAUTH2 clients send an empty response. Either way it ends here.
        if response in (b"\x01", b""):
            return Failed(FailureKind.TOKEN_REFUSED, "token refused")
        return _malformed("expected \\x01 after the error status")

    def refuse(self, openid_configuration: str | None = None) -> Outcome:
        self._refused = True
        return Challenge(_token_error("invalid_token", openid_configuration,
                                      xoauth2=self.XOAUTH2))


def _saslname(value: bytes) -> str | Failed:
    """RFC 5801 saslname: UTF-8 with "," written =2C and "=" written =3D."""
    if b"," in value:
        return _malformed("comma in authzid")
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i:i + 1] == b"=":
            code = value[i + 1:i + 3]
            if code not in (b"2C", b"3D"):
                return _malformed("bad escape in authzid")
            out += b"," if code == b"2C" else b"="
            i += 3
        else:
            out += value[i:i + 1]
            i += 1
    return _utf8(bytes(out), MAX_IDENTITY, "authzid")


class OAuthBearer(_TokenMechanism):
    """RFC 7628: ``n,a=user,\\x01host=...\\x01port=...\\x01auth=Bearer T\\x01\\x01``.
    Channel binding is not supported: the GS2 flag must be "n" or "y"."""

    name = "OAUTHBEARER"

    def _parse(self, response: bytes) -> Outcome:
        flag, comma, rest = response.partition(b",")
        if not comma or flag not in (b"n", b"y"):
            return _malformed("bad GS2 header flag")
        authzid_field, comma, body = rest.partition(b",")
        if not comma:
            return _malformed("bad GS2 header")
        user: str | None = None
        if authzid_field:
            if not authzid_field.startswith(b"a="):
                return _malformed("bad GS2 authzid")
            name = _saslname(authzid_field[2:])
            if isinstance(name, Failed):
                return name
            user = name or None
        if not body.startswith(b"\x01"):
            return _malformed("missing \\x01 after the GS2 header")
        pairs = _kv_pairs(body[1:])
        if isinstance(pairs, Failed):
            return pairs
        if b"auth" not in pairs:
            return _malformed("missing auth=")
        token = _bearer(pairs[b"auth"])
        if isinstance(token, Failed):
            return token
        return TokenLogin(token, user)


class XOAuth2(_TokenMechanism):
    """Google's and Microsoft's ``user=U\\x01auth=Bearer T\\x01\\x01``."""

    name = "XOAUTH2"
    XOAUTH2 = True

    def _parse(self, response: bytes) -> Outcome:
        pairs = _kv_pairs(response)
        if isinstance(pairs, Failed):
            return pairs
        if set(pairs) != {b"user", b"auth"}:
            return _malformed("expected exactly user= and auth=")
        user = _utf8(pairs[b"user"], MAX_IDENTITY, "user")
        if isinstance(user, Failed):
            return user
        if not user:
            return _malformed("empty user")
        token = _bearer(pairs[b"auth"])
        if isinstance(token, Failed):
            return token
        return TokenLogin(token, user)


MECHANISMS: dict[str, type[Mechanism]] = {
    m.name: m for m in (Plain, Login, External, OAuthBearer, XOAuth2)
}


def mechanism(name: str) -> Mechanism | None:
    """A new exchange of the named mechanism (case-insensitive), or None."""
    cls = MECHANISMS.get(name.upper())
    return cls() if cls is not None else None


def advertised(*, passwords: bool, external: bool, tokens: bool) -> list[str]:
    """The mechanisms to offer, in the order clients should prefer them
    (SMTP ``AUTH`` EHLO line, IMAP ``AUTH=`` capabilities)."""
    names: list[str] = []
    if passwords:
        names += ["PLAIN", "LOGIN"]
    if tokens:
        names += ["OAUTHBEARER", "XOAUTH2"]
    if external:
        names.append("EXTERNAL")
    return names


__all__ = [
    "CANCELLED",
    "MAX_IDENTITY",
    "MAX_PASSWORD",
    "MAX_RESPONSE",
    "MECHANISMS",
    "Challenge",
    "Credentials",
    "External",
    "ExternalLogin",
    "Failed",
    "FailureKind",
    "Kind",
    "Login",
    "Mechanism",
    "OAuthBearer",
    "Outcome",
    "PasswordLogin",
    "Plain",
    "TokenLogin",
    "XOAuth2",
    "advertised",
    "decode_base64",
    "decode_response",
    "encode_challenge",
    "mechanism",
]
