"""Token checks against a real OpenID provider over HTTPS on 127.0.0.1
(tests/oidc_provider.py): JWKS signatures (RS256, ES256), claims, key
refresh on an unknown kid, introspection (RFC 7662), an unreachable provider;
then Policy.authenticate_token on a real store."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oidc_provider import OidcProvider, b64url

from conf.settings import (
    IdentityProviderSettings,
    ListenerRole,
    LoginMethodSettings,
    PolicySettings,
)
from policy.audit import FileAuditSink
from policy.decisions import Peer, Policy, Verdict
from policy.idp import IdentityProvider
from policy.tokens import TokenCheck, TokenClaims
from storage.interface import AccountClass

D = "hopital.test"
USER = f"sec.durand@{D}"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(idp: OidcProvider, tmp_path: Path, *, monotonic: Any = None, **overrides: Any
         ) -> IdentityProvider:
    settings = IdentityProviderSettings(**idp.settings(tmp_path, **overrides))
    kwargs: dict[str, Any] = {}
    if monotonic is not None:
        kwargs["monotonic"] = monotonic
    return IdentityProvider(settings, **kwargs)


def error(check: TokenCheck) -> str | None:
    return check.error


# ---------------------------------------------------------------- JWKS


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_valid_tokens(idp, tmp_path, alg) -> None:
    provider = make(idp, tmp_path)
    check = provider.verify(idp.mint("Sec.Durand@Hopital.test", alg=alg))
    assert check.claims is not None and check.claims.login == USER
    assert check.claims.validated_by == "jwks" and check.claims.issuer == idp.issuer


def relative(claims: dict[str, Any]) -> dict[str, Any]:
    """Times given as offsets from now (parameters are made at collection,
    which may be minutes before the test runs)."""
    now = int(time.time())
    return {k: now + v[1] if isinstance(v, tuple) else v for k, v in claims.items()}


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": ("now", -120)}, "expired"),  # beyond the 60 s leeway
    ({"nbf": ("now", 120)}, "not-yet-valid"),
    ({"aud": "another-client"}, "wrong-audience"),
    ({"aud": ["a", "b"]}, "wrong-audience"),
    ({"aud": None}, "wrong-audience"),
    ({"iss": "https://evil.example/realms/mss"}, "wrong-issuer"),
    ({"exp": None}, "malformed"),
    ({"exp": "tomorrow"}, "malformed"),
    ({"email_verified": False}, "unverified-email"),  # "nOAuth": an address nobody proved
    ({"email_verified": "true"}, "unverified-email"),
])
def test_refused_claims(idp, tmp_path, claims, reason) -> None:
    check = make(idp, tmp_path).verify(idp.mint(USER, **relative(claims)))
    assert check.claims is None and check.error == reason and not check.temporary
    if reason not in ("malformed",):
        assert check.login == USER  # the signature held: the audit may name who


@pytest.mark.parametrize("claims", [
    {"exp": ("now", -30)},  # within the leeway
    {"nbf": ("now", 30)},
    {"aud": ["other", "mss-mail"]},
])
def test_leeway_and_audience_lists(idp, tmp_path, claims) -> None:
    assert make(idp, tmp_path).verify(idp.mint(USER, **relative(claims))).claims is not None


def test_login_claim_is_configurable(idp, tmp_path) -> None:
    token = idp.mint(USER, claim="preferred_username")
    assert make(idp, tmp_path).verify(token).error == "no-login-claim"
    check = make(idp, tmp_path, login_claim="preferred_username").verify(token)
    assert check.claims is not None and check.claims.login == USER


def tamper(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body.update(changes)
    return f"{header}.{b64url(json.dumps(body).encode())}.{signature}"


def with_header(token: str, **header: Any) -> str:
    _, payload, signature = token.split(".")
    return f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"


@pytest.mark.parametrize(("make_token", "reason"), [
    (lambda idp: tamper(idp.mint(USER), email="dr.martin@hopital.test"), "bad-signature"),
    (lambda idp: with_header(idp.mint(USER), alg="RS256", kid="ec-1"), "algorithm"),
    (lambda idp: with_header(idp.mint(USER, alg="ES256"), alg="ES256", kid="ec-1")[:-4] + "AAAA",
     "bad-signature"),
    (lambda idp: with_header(idp.mint(USER), alg="none", kid="rsa-1"), "algorithm"),
    (lambda idp: with_header(idp.mint(USER), alg="HS256", kid="rsa-1"), "algorithm"),
    (lambda idp: with_header(idp.mint(USER), alg="RS256", kid="rsa-1", crit=["x"]), "malformed"),
    (lambda idp: with_header(idp.mint(USER), alg="RS256", kid="nobody"), "unknown-key"),
    (lambda idp: "not-a-jwt", "malformed"),
    (lambda idp: "a.b.c", "malformed"),
    (lambda idp: "e30.e30.", "algorithm"),  # {} header: no alg
    (lambda idp: with_header(idp.mint(USER), alg="RS256"), "unknown-key"),  # no kid, two keys
    (lambda idp: b64url(b"[1]") + ".e30.AA", "malformed"),
    (lambda idp: "e30." + b64url(b"\xff") + ".AA", "malformed"),
    (lambda idp: "x" * 20000 + ".a.b", "malformed"),
    (lambda idp: b64url(b"[" * 6000) + ".e30.AA", "malformed"),  # json recursed: RecursionError
])
def test_refused_tokens(idp, tmp_path, make_token, reason) -> None:
    check = make(idp, tmp_path).verify(make_token(idp))
    assert check.claims is None and check.error == reason and not check.temporary


def test_unknown_kid_refreshes_the_keys_at_most_every_interval(tmp_path) -> None:
    with OidcProvider() as idp:
        clock = Monotonic()
        provider = make(idp, tmp_path, monotonic=clock)
        assert provider.verify(idp.mint(USER)).claims is not None
        assert idp.requests[f"{idp.path}/jwks"] == 1
        assert provider.verify(idp.mint(USER)).claims is not None  # cached
        assert idp.requests[f"{idp.path}/jwks"] == 1
        new = idp.rotate("ES256")
        # Fetched 0 s ago: a token naming an unknown key does not refetch yet.
        assert provider.verify(idp.mint(USER, key=new)).error == "unknown-key"
        assert idp.requests[f"{idp.path}/jwks"] == 1
        clock.now += 11
        assert provider.verify(idp.mint(USER, key=new)).claims is not None
        assert idp.requests[f"{idp.path}/jwks"] == 2
        # Random kids cannot make us hammer the provider.
        for i in range(5):
            provider.verify(with_header(idp.mint(USER), alg="RS256", kid=f"random-{i}"))
        assert idp.requests[f"{idp.path}/jwks"] == 2


def test_keys_expire_after_jwks_cache(tmp_path) -> None:
    with OidcProvider() as idp:
        clock = Monotonic()
        provider = make(idp, tmp_path, monotonic=clock, jwks_cache=60)
        provider.verify(idp.mint(USER))
        clock.now += 61
        provider.verify(idp.mint(USER))
        assert idp.requests[f"{idp.path}/jwks"] == 2


def test_unreachable_provider_is_temporary(tmp_path) -> None:
    with OidcProvider() as idp:
        clock = Monotonic()
        provider = make(idp, tmp_path, monotonic=clock, jwks_cache=60)
        idp.down()
        check = provider.verify(idp.mint(USER))
        assert check.claims is None and check.error == "idp-unavailable" and check.temporary
        idp.up()
        assert provider.verify(idp.mint(USER)).claims is not None
        # Once known, the keys outlive a provider outage (kept when a refresh fails).
        idp.down()
        clock.now += 61
        assert provider.verify(idp.mint(USER)).claims is not None
    # Nobody listening at all, and a token naming a key we could not fetch.
    clock.now += 11
    check = provider.verify(idp.mint(USER, key=idp.rotate()))
    assert check.temporary and check.error == "idp-unavailable"


def test_provider_certificate_must_be_trusted(idp, tmp_path) -> None:
    other = OidcProvider()  # another CA, never started
    settings = IdentityProviderSettings(**idp.settings(tmp_path)).model_copy(
        update={"ca_file": other.ca_file(tmp_path)})
    check = IdentityProvider(settings).verify(idp.mint(USER))
    assert check.temporary and check.error == "idp-unavailable"


def test_discovery_must_name_the_configured_issuer(idp, tmp_path) -> None:
    settings = IdentityProviderSettings(**idp.settings(tmp_path)).model_copy(
        update={"issuer": idp.issuer + "/"})
    check = IdentityProvider(settings).verify(idp.mint(USER))
    assert check.temporary  # a misconfiguration, not the user's fault


# ---------------------------------------------------------------- introspection


def test_introspection_sees_revocation(idp, tmp_path) -> None:
    provider = make(idp, tmp_path, validation=["jwks", "introspection"])
    token = idp.mint(USER)
    check = provider.verify(token)
    assert check.claims is not None and check.claims.validated_by == "jwks+introspection"
    idp.revoke(token)
    check = provider.verify(token)
    assert check.error == "inactive" and check.login == USER


def test_opaque_tokens_by_introspection_only(idp, tmp_path) -> None:
    provider = make(idp, tmp_path, validation=["introspection"])
    check = provider.verify(idp.opaque(USER))
    assert check.claims is not None and check.claims.login == USER
    assert check.claims.validated_by == "introspection"
    assert provider.verify("unknown-opaque-token").error == "inactive"
    assert provider.verify(idp.opaque(USER, aud="other")).error == "wrong-audience"
    assert provider.verify(idp.opaque(USER, exp=int(time.time()) - 300)).error == "expired"
    assert make(idp, tmp_path).verify(idp.opaque(USER)).error == "malformed"  # JWKS only


def test_introspection_with_wrong_client_credentials_is_temporary(idp, tmp_path) -> None:
    provider = make(idp, tmp_path, validation=["introspection"])
    (tmp_path / "idp-client-secret").write_text("wrong")
    provider = IdentityProvider(provider.settings)
    check = provider.verify(idp.opaque(USER))
    assert check.temporary and check.error == "idp-unavailable"


def test_settings_validation(tmp_path) -> None:
    with pytest.raises(ValueError, match="https"):
        IdentityProviderSettings(issuer="http://idp.example", audience="a")
    with pytest.raises(ValueError, match="client_id"):
        IdentityProviderSettings(issuer="https://idp.example", audience="a",
                                 validation=["introspection"])


# ---------------------------------------------------------------- policy


def peer() -> Peer:
    return Peer("127.0.0.1", 1, "imaps", ListenerRole.IMAP, tls=True)


def claims(login: str = USER) -> TokenCheck:
    return TokenCheck(TokenClaims(login=login, subject="abc", issuer="https://idp",
                                  expires=None, validated_by="jwks"))


@pytest.fixture
def policy(tmp_path, settings_factory, store) -> Iterator[tuple[Policy, FileAuditSink]]:
    store.add_account(USER, "S", AccountClass.STAFF)
    store.add_account(f"gone@{D}", "G", AccountClass.STAFF)
    store.set_account_active(f"gone@{D}", False)
    store.add_account(f"dr.martin@{D}", "M", AccountClass.PRACTITIONER)
    audit = FileAuditSink(None)
    settings = settings_factory(tmp_path, policy=PolicySettings(
        login_methods=LoginMethodSettings()))
    yield Policy(settings, store, audit), audit
    audit.close()


@pytest.mark.parametrize(("check", "user", "reason"), [
    (claims(), None, None),
    (claims(), "SEC.DURAND@hopital.test", None),
    (claims(), f"dr.martin@{D}", "authzid-mismatch"),
    (claims(f"nobody@{D}"), None, "unknown-user"),
    (claims(f"gone@{D}"), None, "account-disabled"),
    (claims(f"dr.martin@{D}"), None, "method-not-allowed"),  # practitioners: card only
    (TokenCheck(error="expired", login=USER), None, "token-expired"),
    (TokenCheck(error="wrong-audience", login=USER), None, "token-wrong-audience"),
    (TokenCheck(error="bad-signature"), USER, "token-bad-signature"),
])
def test_authenticate_token(policy, check, user, reason) -> None:
    pol, audit = policy
    r = pol.authenticate_token(peer(), check, user, "OAUTHBEARER")
    assert len(audit.events) == 1
    ev = audit.events[0]
    if reason is None:
        assert r.identity is not None and r.identity.name == USER and r.identity.method == "token"
        assert ev.result == "allow" and ev.details["auth_method"] == "token"
    else:
        assert r.identity is None and r.decision.verdict is Verdict.DENY
        assert r.decision.reason == reason
        assert ev.result == "deny" and ev.details["reason"] == reason
    assert ev.details["method"] == "token" and ev.details["mechanism"] == "OAUTHBEARER"


def test_unavailable_provider_is_a_tempfail(policy) -> None:
    pol, audit = policy
    r = pol.authenticate_token(peer(), TokenCheck(error="idp-unavailable", temporary=True),
                               USER, "XOAUTH2")
    assert r.identity is None and r.decision.verdict is Verdict.TEMPFAIL
    assert audit.events[0].result == "tempfail"
    assert audit.events[0].details["reason"] == "idp-unavailable"
