"""policy.sasl: every mechanism's grammar, as tables (well-formed and
malformed inputs), and the exchanges' shapes. One strictness for both
daemons: malformed input is a failure, never a guessed name."""

from __future__ import annotations

import base64
import json

import pytest

from policy import sasl
from policy.sasl import (
    Challenge,
    ExternalLogin,
    Failed,
    FailureKind,
    PasswordLogin,
    TokenLogin,
)

M = FailureKind.MALFORMED
TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
LONG = b"x" * (sasl.MAX_RESPONSE + 1)


def run(name: str, *responses: bytes, initial: bytes | None = None) -> sasl.Outcome:
    mech = sasl.mechanism(name)
    assert mech is not None
    outcome = mech.start(initial)
    for response in responses:
        assert isinstance(outcome, Challenge), outcome
        outcome = mech.respond(response)
    return outcome


def kind(outcome: sasl.Outcome) -> FailureKind | None:
    return outcome.kind if isinstance(outcome, Failed) else None


# ---------------------------------------------------------------- base64 lines


@pytest.mark.parametrize(("line", "expected"), [
    (b"=", b""),
    (b"", b""),
    (b"  AGEAYg==  ", b"\x00a\x00b"),
    (b"AGEAYg==", b"\x00a\x00b"),
])
def test_decode_response(line: bytes, expected: bytes) -> None:
    assert sasl.decode_response(line) == expected


@pytest.mark.parametrize(("line", "failure"), [
    (b"*", FailureKind.CANCELLED),
    (b" * ", FailureKind.CANCELLED),
    (b"not base64!", FailureKind.BAD_BASE64),
    (b"AGEAYg", FailureKind.BAD_BASE64),  # padding missing
    (b"AGE=AYg=", FailureKind.BAD_BASE64),
    (b"==", FailureKind.BAD_BASE64),
    (b"\xff\xfe", FailureKind.BAD_BASE64),
])
def test_decode_response_failures(line: bytes, failure: FailureKind) -> None:
    assert kind(sasl.decode_response(line)) is failure  # type: ignore[arg-type]


def test_decode_base64_initial_response() -> None:
    assert sasl.decode_base64(b"=") == b""
    assert sasl.decode_base64(b"AA==") == b"\x00"
    assert sasl.decode_base64(b"A") is None


def test_mechanism_names_and_advertising() -> None:
    assert sasl.mechanism("plain").name == "PLAIN"  # type: ignore[union-attr]
    assert sasl.mechanism("CRAM-MD5") is None
    assert sasl.advertised(passwords=True, external=False, tokens=False) == ["PLAIN", "LOGIN"]
    assert sasl.advertised(passwords=True, external=True, tokens=True) == [
        "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2", "EXTERNAL"]
    assert sasl.advertised(passwords=False, external=True, tokens=False) == ["EXTERNAL"]


# ---------------------------------------------------------------- PLAIN


@pytest.mark.parametrize(("message", "expected"), [
    (b"\x00tim\x00tanstaaftanstaaf", PasswordLogin("tim", "tanstaaftanstaaf")),
    (b"Tim\x00tim\x00pw", PasswordLogin("tim", "pw")),  # authzid = authcid, any case
    (b"\x00d\xc3\xa9lia\x00mot de passe \xc3\xa9", PasswordLogin("délia", "mot de passe é")),
    (b"\x00" + b"u" * 320 + b"\x00" + b"p" * 1024, PasswordLogin("u" * 320, "p" * 1024)),
])
def test_plain_accepts(message: bytes, expected: PasswordLogin) -> None:
    assert run("PLAIN", initial=message) == expected
    assert run("PLAIN", message) == expected  # after an empty challenge


@pytest.mark.parametrize(("message", "failure"), [
    (b"", M),  # empty
    (b"tim", M),  # no NUL
    (b"\x00tim", M),  # one NUL
    (b"\x00tim\x00pw\x00", M),  # an extra NUL
    (b"\x00tim\x00pw\x00more", M),
    (b"\x00\x00pw", M),  # empty authcid
    (b"\x00tim\x00", M),  # empty password
    (b"\x00t\xffim\x00pw", M),  # bad UTF-8 in the authcid: never a guessed name
    (b"\x00tim\x00p\xc3w", M),  # bad UTF-8 in the password
    (b"\xc3\x00tim\x00pw", M),  # bad UTF-8 in the authzid
    (b"\x00" + b"u" * 321 + b"\x00pw", M),  # over-long authcid
    (b"\x00tim\x00" + b"p" * 1025, M),  # over-long password
    (b"\x00tim\x00" + LONG, M),
    (b"admin\x00tim\x00pw", FailureKind.AUTHZID_REFUSED),  # act as another: refused
])
def test_plain_refuses(message: bytes, failure: FailureKind) -> None:
    assert kind(run("PLAIN", initial=message)) is failure


def test_plain_without_initial_response_sends_an_empty_challenge() -> None:
    assert run("PLAIN") == Challenge(b"")


# ---------------------------------------------------------------- LOGIN


def test_login_prompts() -> None:
    mech = sasl.Login()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"tim") == Challenge(b"Password:")
    assert mech.respond(b"pw") == PasswordLogin("tim", "pw")
    assert run("LOGIN", b"pw", initial=b"tim") == PasswordLogin("tim", "pw")  # SASL-IR


@pytest.mark.parametrize(("username", "password"), [
    (b"", b"pw"),  # empty user name
    (b"ti\x00m", b"pw"),  # NUL
    (b"t\xffim", b"pw"),  # bad UTF-8
    (b"u" * 321, b"pw"),  # over-long
    (b"tim", b""),  # empty password
    (b"tim", b"p\x00w"),
    (b"tim", b"p\xc3"),
    (b"tim", b"p" * 1025),
])
def test_login_refuses(username: bytes, password: bytes) -> None:
    mech = sasl.Login()
    mech.start(None)
    outcome = mech.respond(username)
    if isinstance(outcome, Challenge):
        outcome = mech.respond(password)
    assert kind(outcome) is M


# ---------------------------------------------------------------- EXTERNAL


@pytest.mark.parametrize(("message", "expected"), [
    (b"", ExternalLogin(None)),  # "=": whatever the certificate maps to
    (b"dr.martin@hopital.test", ExternalLogin("dr.martin@hopital.test")),  # Thunderbird
])
def test_external_accepts(message: bytes, expected: ExternalLogin) -> None:
    assert run("EXTERNAL", initial=message) == expected
    assert run("EXTERNAL", message) == expected


@pytest.mark.parametrize("message", [b"dr\xff", b"dr\x00martin", b"d" * 321])
def test_external_refuses(message: bytes) -> None:
    assert kind(run("EXTERNAL", initial=message)) is M


# ---------------------------------------------------------------- OAUTHBEARER


def bearer(gs2: bytes = b"n,a=user@example.com,", pairs: bytes = b"host=server.example.com"
           b"\x01port=143\x01auth=Bearer " + TOKEN.encode()) -> bytes:
    return gs2 + b"\x01" + pairs + b"\x01\x01"


@pytest.mark.parametrize(("message", "expected"), [
    (bearer(), TokenLogin(TOKEN, "user@example.com")),  # RFC 7628 4.1
    (bearer(b"n,,"), TokenLogin(TOKEN, None)),  # no authzid
    (bearer(b"y,,"), TokenLogin(TOKEN, None)),
    (bearer(pairs=b"auth=bearer " + TOKEN.encode()), TokenLogin(TOKEN, "user@example.com")),
    (bearer(b"n,a=us=2Cer=3D@x,"), TokenLogin(TOKEN, "us,er=@x")),  # RFC 5801 escapes
    (bearer(pairs=b"auth=Bearer a.b-c_d~e+f/g=="), TokenLogin("a.b-c_d~e+f/g==", "user@example.com")),
])
def test_oauthbearer_accepts(message: bytes, expected: TokenLogin) -> None:
    assert run("OAUTHBEARER", initial=message) == expected
    assert run("OAUTHBEARER", message) == expected  # imaplib: no initial response


@pytest.mark.parametrize("message", [
    b"",  # empty
    b"n,a=user@example.com,",  # header only
    bearer(b"p=tls-unique,,"),  # channel binding is not supported
    bearer(b"x,,"),  # bad GS2 flag
    bearer(b"n,"),  # header not closed (the \x01 lands in the authzid)
    bearer(b"n,b=user,"),  # not a=
    bearer(b"n,a=us=2Xer,"),  # bad escape
    bearer(b"n,a=us\xffer,"),  # bad UTF-8
    b"n,,auth=Bearer " + TOKEN.encode() + b"\x01\x01",  # no \x01 after the header
    b"n,,\x01auth=Bearer " + TOKEN.encode() + b"\x01",  # missing the final \x01\x01
    bearer(pairs=b"host=server.example.com"),  # missing auth=
    bearer(pairs=b"auth=Basic dXNlcjpwYXNz"),  # not a Bearer token
    bearer(pairs=b"auth=Bearer"),  # no token
    bearer(pairs=b"auth=Bearer  " + TOKEN.encode()),  # two spaces
    bearer(pairs=b"auth=Bearer tok\xc3\xa9n"),  # not a b64token
    bearer(pairs=b"auth=Bearer a=b"),
    bearer(pairs=b"auth=Bearer x\x01auth=Bearer y"),  # repeated key
    bearer(pairs=b"auth"),  # no "="
    bearer(pairs=b"h0st=x\x01auth=Bearer " + TOKEN.encode()),  # key not ALPHA
    bearer(pairs=b"auth=Bearer " + b"t" * sasl.MAX_RESPONSE),  # over-long
])
def test_oauthbearer_refuses(message: bytes) -> None:
    assert kind(run("OAUTHBEARER", initial=message)) is M


def test_oauthbearer_error_continuation() -> None:
    """RFC 7628 3.2.2: a refused token gets a JSON status challenge; the
    client answers %x01 and the exchange fails."""
    mech = sasl.OAuthBearer()
    assert isinstance(mech.start(bearer()), TokenLogin)
    challenge = mech.refuse("https://idp.example/.well-known/openid-configuration")
    assert isinstance(challenge, Challenge)
    assert json.loads(challenge.data) == {
        "status": "invalid_token",
        "openid-configuration": "https://idp.example/.well-known/openid-configuration"}
    assert base64.b64encode(b"\x01") == b"AQ=="
    assert kind(mech.respond(b"\x01")) is FailureKind.TOKEN_REFUSED


def test_oauthbearer_error_needs_the_acknowledgement() -> None:
    mech = sasl.OAuthBearer()
    mech.start(bearer())
    mech.refuse()
    assert kind(mech.respond(bearer())) is M


# ---------------------------------------------------------------- XOAUTH2


def xoauth2(user: bytes = b"someuser@example.com", token: bytes = TOKEN.encode()) -> bytes:
    return b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01"


@pytest.mark.parametrize(("message", "expected"), [
    (xoauth2(), TokenLogin(TOKEN, "someuser@example.com")),
    (b"auth=Bearer " + TOKEN.encode() + b"\x01user=u@x\x01\x01", TokenLogin(TOKEN, "u@x")),
])
def test_xoauth2_accepts(message: bytes, expected: TokenLogin) -> None:
    assert run("XOAUTH2", initial=message) == expected


@pytest.mark.parametrize("message", [
    b"",
    xoauth2()[:-1],  # one final \x01 only
    b"user=u@x\x01\x01",  # missing auth=
    b"auth=Bearer " + TOKEN.encode() + b"\x01\x01",  # missing user=
    xoauth2(user=b""),  # empty user
    xoauth2(user=b"u\xffx"),
    xoauth2(token=b""),
    b"user=u@x\x01auth=OAuth " + TOKEN.encode() + b"\x01\x01",  # not Bearer
    b"user=u@x\x01auth=Bearer " + TOKEN.encode() + b"\x01host=x\x01\x01",  # unknown key
    b"n,,\x01" + xoauth2(),  # an OAUTHBEARER header
])
def test_xoauth2_refuses(message: bytes) -> None:
    assert kind(run("XOAUTH2", initial=message)) is M


@pytest.mark.parametrize("ack", [b"", b"\x01"])
def test_xoauth2_error_continuation(ack: bytes) -> None:
    """Google's form: a JSON status challenge, then an empty response."""
    mech = sasl.XOAuth2()
    mech.start(xoauth2())
    challenge = mech.refuse(None)
    assert isinstance(challenge, Challenge)
    assert json.loads(challenge.data) == {"status": "401", "schemes": "bearer"}
    assert kind(mech.respond(ack)) is FailureKind.TOKEN_REFUSED


def test_password_mechanisms_fail_at_once_when_refused() -> None:
    assert kind(sasl.Plain().refuse()) is FailureKind.TOKEN_REFUSED


@pytest.mark.parametrize("name", sorted(sasl.MECHANISMS))
def test_fed_byte_by_byte_nothing_crashes(name: str) -> None:
    """Every prefix of a valid response is an outcome, never an exception."""
    samples = {"PLAIN": b"\x00tim\x00pw", "LOGIN": b"tim", "EXTERNAL": b"tim",
               "OAUTHBEARER": bearer(), "XOAUTH2": xoauth2()}
    data = samples[name]
    for i in range(len(data) + 1):
        mech = sasl.mechanism(name)
        assert mech is not None
        assert isinstance(mech.start(data[:i]), Challenge | Failed | PasswordLogin
                          | ExternalLogin | TokenLogin)
