"""Logging in with a second factor and with identity-provider tokens, against
the product as a user runs it (`mssctl init --demo`, `mssctl account totp
enable`, `mssctl serve`), with real clients over real sockets: Python's
imaplib and smtplib. The identity provider is a real OpenID provider over
HTTPS on 127.0.0.1 in this process (tests/oidc_provider.py), which the
server's workers ask for its keys."""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from integration_support import DURAND, IO_TIMEOUT, PETIT, MssInstance, run_mssctl
from oidc_provider import AUDIENCE, OidcProvider

from policy import totp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "auth")
    ca = idp.ca_file(inst.directory)
    with open(inst.directory / "mss.yaml", "a", encoding="utf-8") as f:
        f.write(f"\nidentity_provider:\n  issuer: {idp.issuer}\n  audience: {AUDIENCE}\n"
                f"  ca_file: {ca.name}\n  login_claim: email\n")
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


@pytest.fixture(scope="module")
def petit_secret(mss: MssInstance) -> bytes:
    """`mssctl account totp enable` while the server runs: the URI it prints."""
    out = run_mssctl(mss, "account", "totp", "enable", PETIT)
    uri = re.search(r"^(otpauth://totp/\S+)$", out, re.M)
    assert uri, out
    assert "█" in out or "▀" in out  # the terminal QR code
    parts = urllib.parse.urlsplit(uri.group(1))
    assert urllib.parse.unquote(parts.path) == f"/hopital.test:{PETIT}"
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["issuer"] == "hopital.test" and query["digits"] == "6"
    secret = query["secret"]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def audit_events(mss: MssInstance, actor: str | None = None) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in mss.audit_text().splitlines() if line.strip()]
    return [e for e in events if actor is None or e["actor"] == actor]


def logins(mss: MssInstance, actor: str) -> list[tuple[str, str | None]]:
    return [(e["result"], e.get("reason")) for e in audit_events(mss, actor)
            if e["action"] == "login"]


def imap(mss: MssInstance) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", mss.port("imaps"), ssl_context=mss.client_context(),
                             timeout=IO_TIMEOUT)


def smtp(mss: MssInstance) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL("127.0.0.1", mss.port("submissions"), context=mss.client_context(),
                         timeout=IO_TIMEOUT)
    s.ehlo("client.test")
    return s


def oauthbearer(token: str, user: str) -> Any:
    """imaplib's authobject: the GS2 message, then %x01 after an error status."""
    def answer(challenge: bytes) -> bytes:
        if challenge:
            assert json.loads(challenge)["status"] == "invalid_token"
            return b"\x01"
        return f"n,a={user},\x01host=127.0.0.1\x01auth=Bearer {token}\x01\x01".encode()
    return answer


def xoauth2(token: str, user: str) -> Any:
    """smtplib's authobject: the initial response, then "" after an error status."""
    def answer(challenge: bytes | None = None) -> str:
        if challenge:
            assert json.loads(challenge)["status"] == "401"
            return ""
        return f"user={user}\x01auth=Bearer {token}\x01\x01"
    return answer


# ---------------------------------------------------------------- tokens


def test_imap_and_smtp_log_in_with_a_token(mss: MssInstance, idp: OidcProvider) -> None:
    with imap(mss) as conn:
        assert "AUTH=OAUTHBEARER" in conn.capabilities and "AUTH=XOAUTH2" in conn.capabilities
        typ, _ = conn.authenticate("OAUTHBEARER", oauthbearer(idp.mint(DURAND), DURAND))
        assert typ == "OK"
        assert conn.select("INBOX")[0] == "OK"
    with imap(mss) as conn:
        assert conn.authenticate("XOAUTH2", lambda _: (
            f"user={DURAND}\x01auth=Bearer {idp.mint(DURAND, alg='ES256')}\x01\x01"))[0] == "OK"
    with smtp(mss) as s:
        assert "XOAUTH2" in s.esmtp_features["auth"]
        code, _ = s.auth("XOAUTH2", xoauth2(idp.mint(DURAND), DURAND))
        assert code == 235
        assert s.mail(DURAND)[0] == 250
    events = [e for e in audit_events(mss, DURAND) if e["action"] == "login"]
    assert [(e["result"], e["method"], e["mechanism"]) for e in events] == [
        ("allow", "token", "OAUTHBEARER"), ("allow", "token", "XOAUTH2"),
        ("allow", "token", "XOAUTH2")]


def test_expired_and_wrong_audience_tokens_are_refused_and_audited(
        mss: MssInstance, idp: OidcProvider) -> None:
    before = len(logins(mss, DURAND))
    expired = idp.mint(DURAND, exp=int(time.time()) - 3600)
    with imap(mss) as conn, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        conn.authenticate("OAUTHBEARER", oauthbearer(expired, DURAND))
    with smtp(mss) as s, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        s.auth("XOAUTH2", xoauth2(idp.mint(DURAND, aud="another-client"), DURAND))
    assert refused.value.smtp_code == 535
    assert logins(mss, DURAND)[before:] == [("deny", "token-expired"),
                                            ("deny", "token-wrong-audience")]
    log = mss.audit_text()
    assert expired not in log and expired.split(".")[2] not in log  # never the token


# ---------------------------------------------------------------- password + code


def test_password_and_code_once(mss: MssInstance, petit_secret: bytes) -> None:
    password = mss.password(PETIT)
    step = totp.time_step(time.time())
    code = totp.code_at(petit_secret, step)
    with imap(mss) as conn, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        conn.login(PETIT, password)  # the password alone no longer does
    with imap(mss) as conn:
        assert conn.login(PETIT, password + code)[0] == "OK"
    # The same code again, over SMTP this time: refused, audited.
    with smtp(mss) as s, pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(PETIT, password + code)
    with smtp(mss) as s:
        assert s.login(PETIT, password + totp.code_at(petit_secret, step + 1))[0] == 235
    # (smtplib tries PLAIN, then LOGIN after a 535: the code is replayed twice.)
    assert logins(mss, PETIT) == [("deny", "totp-missing"), ("allow", None),
                                  ("deny", "totp-replayed"), ("deny", "totp-replayed"),
                                  ("allow", None)]
    enable = [e for e in audit_events(mss) if e["action"] == "totp-enable"]
    assert len(enable) == 1 and enable[0]["target"] == PETIT
    assert enable[0]["actor"].startswith("admin:")  # as every admin change


def test_others_still_log_in_with_their_password(mss: MssInstance) -> None:
    """The demo allows a password alone: Thunderbird's flow keeps working."""
    with imap(mss) as conn:
        assert conn.login(DURAND, mss.password(DURAND))[0] == "OK"


def test_totp_disable(mss: MssInstance, petit_secret: bytes) -> None:
    out = run_mssctl(mss, "account", "totp", "disable", PETIT)
    assert "disabled" in out
    with imap(mss) as conn:
        assert conn.login(PETIT, mss.password(PETIT))[0] == "OK"
    assert [e["action"] for e in audit_events(mss) if e["action"].startswith("totp-")] == [
        "totp-enable", "totp-disable"]
