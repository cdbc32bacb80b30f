"""SASL on both daemons (one module, `policy.sasl`): transcripts on
StringTransport against a real SQLite store and, for tokens, a real OpenID
provider over HTTPS on 127.0.0.1 (tests/oidc_provider.py)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import PASSWORD, SECRETARY
from imap_transcript import add_user as add_imap_user
from imap_transcript import make_env as make_imap_env
from oidc_provider import OidcProvider
from smtp_transcript import codes
from smtp_transcript import make_env as make_smtp_env

from mssmtpd.replies import R
from policy import totp

USER = SECRETARY  # secretaire@hopital.test, staff


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def oauthbearer(token: str, user: str | None = USER) -> str:
    authzid = f"a={user}" if user else ""
    return b64(f"n,{authzid},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01")


def xoauth2(token: str, user: str = USER) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def reasons(audit: Any) -> list[tuple[str, str | None]]:
    return [(e.result, e.details.get("reason")) for e in audit.events if e.action == "login"]


# ---------------------------------------------------------------- IMAP


@pytest.fixture
def imap(tmp_path: Path, store: Any, idp: OidcProvider) -> Any:
    add_imap_user(store, USER)
    return make_imap_env(tmp_path, store, identity_provider=idp.settings(tmp_path))


def test_imap_advertises_token_mechanisms_only_with_a_provider(tmp_path, store, idp) -> None:
    add_imap_user(store, USER)
    plain = make_imap_env(tmp_path, store).connect()
    caps = plain.cmd("a1 CAPABILITY")
    assert b"AUTH=PLAIN AUTH=LOGIN" in caps and b"OAUTHBEARER" not in caps
    assert plain.cmd("a2 AUTHENTICATE OAUTHBEARER").startswith(b"a2 NO [CANNOT]")
    env = make_imap_env(tmp_path, store, identity_provider=idp.settings(tmp_path))
    caps = env.connect().cmd("a1 CAPABILITY")
    assert b"AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2" in caps
    # Not before STARTTLS: a bearer token is a password.
    c = env.connect("imap-starttls")
    caps = c.cmd("a1 CAPABILITY")
    assert b"OAUTHBEARER" not in caps and b"LOGINDISABLED" in caps
    assert c.cmd(f"a2 AUTHENTICATE XOAUTH2 {xoauth2(idp.mint(USER))}").startswith(
        b"a2 NO [PRIVACYREQUIRED]")


def test_imap_oauthbearer_and_xoauth2(imap, idp) -> None:
    c = imap.connect()
    assert c.cmd(f"a1 AUTHENTICATE OAUTHBEARER {oauthbearer(idp.mint(USER))}").startswith(
        b"a1 OK [CAPABILITY")
    c = imap.connect()
    assert c.cmd("a1 AUTHENTICATE XOAUTH2") == b"+ \r\n"  # no SASL-IR
    assert c.cmd(xoauth2(idp.mint(USER, alg="ES256"))).startswith(b"a1 OK [CAPABILITY")
    assert reasons(imap.audit) == [("allow", None), ("allow", None)]


def test_imap_refused_token_gets_the_error_continuation(imap, idp) -> None:
    c = imap.connect()
    expired = idp.mint(USER, exp=int(time.time()) - 3600)
    out = c.cmd(f"a1 AUTHENTICATE OAUTHBEARER {oauthbearer(expired)}")
    assert out.startswith(b"+ ") and out.endswith(b"\r\n")
    status = json.loads(base64.b64decode(out[2:-2]))
    assert status == {"status": "invalid_token",
                      "openid-configuration": f"{idp.issuer}/.well-known/openid-configuration"}
    assert c.cmd(b64(b"\x01")) == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    c.cmd(f"a2 AUTHENTICATE OAUTHBEARER {oauthbearer(idp.mint(USER, aud='other'))}")
    assert c.cmd("AQ==").startswith(b"a2 NO [AUTHENTICATIONFAILED]")
    assert reasons(imap.audit) == [("deny", "token-expired"), ("deny", "token-wrong-audience")]


def test_imap_token_for_another_user(imap, idp) -> None:
    c = imap.connect()
    c.cmd(f"a1 AUTHENTICATE OAUTHBEARER {oauthbearer(idp.mint(USER), 'dr.martin@hopital.test')}")
    assert c.cmd("AQ==").startswith(b"a1 NO [AUTHORIZATIONFAILED]")
    assert reasons(imap.audit) == [("deny", "authzid-mismatch")]


def test_imap_unreachable_provider_is_unavailable(tmp_path, store) -> None:
    add_imap_user(store, USER)
    with OidcProvider() as down:
        env = make_imap_env(tmp_path, store, identity_provider=down.settings(tmp_path))
        token = down.mint(USER)
        down.down()
        out = env.connect().cmd(f"a1 AUTHENTICATE OAUTHBEARER {oauthbearer(token)}")
    assert out.startswith(b"a1 NO [UNAVAILABLE]"), out
    assert [(e.result, e.details["reason"]) for e in env.audit.events] == [
        ("tempfail", "idp-unavailable")]


@pytest.mark.parametrize(("command", "reply"), [
    # Bad UTF-8 is refused, never a guessed name: IMAP and SMTP alike.
    ("a1 AUTHENTICATE PLAIN " + b64(b"\x00secr\xe9taire@hopital.test\x00pw"), b"a1 BAD"),
    ("a1 AUTHENTICATE PLAIN " + b64(b"\x00" + USER.encode() + b"\x00pw\x00"), b"a1 BAD"),
    ("a1 AUTHENTICATE PLAIN " + b64(f"boss@hopital.test\x00{USER}\x00{PASSWORD}"),
     b"a1 NO [AUTHORIZATIONFAILED]"),
])
def test_imap_malformed_sasl_is_refused_and_audited(imap, command, reply) -> None:
    out = imap.connect().cmd(command)
    assert out.startswith(reply), out
    (event,) = imap.audit.events
    assert event.actor == "-" and event.result == "deny"
    assert event.details["reason"] in ("malformed-sasl", "authzid-mismatch")


def test_imap_password_and_code(tmp_path, store) -> None:
    account = add_imap_user(store, USER)
    secret = totp.new_secret()
    store.set_totp_secret(account.id, secret)
    env = make_imap_env(tmp_path, store)
    code = totp.code_at(secret, totp.time_step(time.time()))
    c = env.connect()
    assert c.cmd(f'a1 LOGIN {USER} "{PASSWORD}"').startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert c.cmd(f'a2 LOGIN {USER} "{PASSWORD}{code}"').startswith(b"a2 OK")
    c = env.connect()
    assert c.cmd(f'a1 LOGIN {USER} "{PASSWORD}{code}"').startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert reasons(env.audit) == [("deny", "totp-missing"), ("allow", None),
                                  ("deny", "totp-replayed")]


# ---------------------------------------------------------------- SMTP


@pytest.fixture
def smtp(tmp_path: Path, store: Any, idp: OidcProvider) -> Any:
    add_imap_user(store, USER)
    return make_smtp_env(tmp_path, store, identity_provider=idp.settings(tmp_path))


def submission(env: Any) -> Any:
    conv = env.connect("submission")
    conv.ehlo()
    return conv


def test_smtp_ehlo_offers_tokens_only_with_a_provider(tmp_path, store, smtp) -> None:
    assert "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2\r\n" in smtp.connect("submission").ehlo().decode()
    plain = make_smtp_env(tmp_path, store).connect("submission")
    assert "AUTH PLAIN LOGIN\r\n" in plain.ehlo().decode()
    assert codes(plain.cmd("AUTH XOAUTH2 " + xoauth2("x"))) == ["504 5.5.4"]


def test_smtp_xoauth2_and_oauthbearer(smtp, idp) -> None:
    conv = submission(smtp)
    assert codes(conv.cmd("AUTH XOAUTH2 " + xoauth2(idp.mint(USER)))) == ["235 2.7.0"]
    conv = submission(smtp)
    assert codes(conv.cmd("AUTH OAUTHBEARER")) == ["334"]
    assert codes(conv.cmd(oauthbearer(idp.mint(USER), None))) == ["235 2.7.0"]
    assert codes(conv.cmd(f"MAIL FROM:<{USER}>")) == ["250 2.1.0"]


def test_smtp_refused_token(smtp, idp) -> None:
    conv = submission(smtp)
    out = conv.cmd("AUTH XOAUTH2 " + xoauth2(idp.mint(USER, aud="another")))
    assert out.startswith(b"334 ")
    assert json.loads(base64.b64decode(out[4:-2]))["status"] == "401"
    assert conv.cmd("") == R.AUTH_FAILED.to_bytes()  # Google's form: an empty response
    out = conv.cmd("AUTH OAUTHBEARER " + oauthbearer(idp.mint(USER, exp=1)))
    assert out.startswith(b"334 ")
    assert conv.cmd("*") == R.AUTH_CANCELLED.to_bytes()
    assert reasons(smtp.audit) == [("deny", "token-wrong-audience"), ("deny", "token-expired")]


def test_smtp_refused_tokens_count_toward_the_limit(smtp, idp) -> None:
    conv = submission(smtp)
    for _ in range(2):
        conv.cmd("AUTH XOAUTH2 " + xoauth2(idp.mint(USER, exp=1)))
        assert conv.cmd("") == R.AUTH_FAILED.to_bytes()
    conv.cmd("AUTH XOAUTH2 " + xoauth2(idp.mint(USER, exp=1)))
    assert codes(conv.cmd("*")) == ["501 5.7.0", "421 4.7.0"] and conv.closed


def test_smtp_unreachable_provider_is_454(tmp_path, store) -> None:
    add_imap_user(store, USER)
    with OidcProvider() as down:
        env = make_smtp_env(tmp_path, store, identity_provider=down.settings(tmp_path))
        token = down.mint(USER)
        down.down()
        assert submission(env).cmd("AUTH XOAUTH2 " + xoauth2(token)) == \
            R.AUTH_TEMPFAIL.to_bytes()


@pytest.mark.parametrize("initial", [
    b64(b"\x00secr\xe9taire@hopital.test\x00" + PASSWORD.encode()),  # was "replaced" before
    b64(b"\x00" + USER.encode() + b"\x00" + PASSWORD.encode() + b"\x00"),
    b64(b"boss@hopital.test\x00" + USER.encode() + b"\x00" + PASSWORD.encode()),
])
def test_smtp_malformed_sasl_is_refused_and_audited(smtp, initial) -> None:
    assert submission(smtp).cmd("AUTH PLAIN " + initial) == R.AUTH_FAILED.to_bytes()
    (event,) = smtp.audit.events
    assert event.actor == "-" and event.details["reason"] in ("malformed-sasl",
                                                              "authzid-mismatch")


def test_smtp_login_mechanism_with_bad_utf8(smtp) -> None:
    conv = submission(smtp)
    assert codes(conv.cmd("AUTH LOGIN")) == ["334"]
    assert conv.cmd(b64(b"secr\xe9taire")) == R.AUTH_FAILED.to_bytes()


def test_smtp_password_and_code(tmp_path, store) -> None:
    account = add_imap_user(store, USER)
    secret = totp.new_secret()
    store.set_totp_secret(account.id, secret)
    env = make_smtp_env(tmp_path, store)
    code = totp.code_at(secret, totp.time_step(time.time()))
    ok = submission(env).cmd("AUTH PLAIN " + b64(f"\x00{USER}\x00{PASSWORD}{code}"))
    assert ok == R.AUTH_OK.to_bytes()
    again = submission(env).cmd("AUTH PLAIN " + b64(f"\x00{USER}\x00{PASSWORD}{code}"))
    assert again == R.AUTH_FAILED.to_bytes()
    assert reasons(env.audit) == [("allow", None), ("deny", "totp-replayed")]


def test_method_not_allowed_looks_like_a_wrong_password(tmp_path, store) -> None:
    add_imap_user(store, USER)
    policy = {"login_methods": {"staff": ["password+totp", "token"]}}
    imap = make_imap_env(tmp_path, store, policy=policy)
    smtp = make_smtp_env(tmp_path, store, policy=policy)
    assert imap.connect().cmd(f'a1 LOGIN {USER} "{PASSWORD}"') == \
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert imap.connect().cmd(f'a1 LOGIN {USER} "wrong"') == \
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert submission(smtp).cmd("AUTH PLAIN " + b64(f"\x00{USER}\x00{PASSWORD}")) == \
        R.AUTH_FAILED.to_bytes()
    assert reasons(imap.audit) == [("deny", "method-not-allowed"), ("deny", "bad-credentials")]
    assert reasons(smtp.audit) == [("deny", "method-not-allowed")]
