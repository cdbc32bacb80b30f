"""policy.login_methods and identity_provider in the settings file: typos are
configuration errors with a "did you mean", the old password_login_classes is
still read with a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from conf.loader import ConfigError, load_settings, settings_from_data
from conf.settings import AuthMethod

BASE: dict[str, Any] = {
    "domains": ["hopital.test"],
    "listeners": [{"port": 0, "role": "imap"}],
    "database": {"url": "sqlite:///mss.db"},
    "tls": {"cert_file": "pki/server.pem", "key_file": "pki/server.key"},
    "audit": {"path": "audit.log"},
    "key_file": "keys",
}


def problems(**extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        settings_from_data({**BASE, **extra}, "mss.yaml", Path("/etc/mss"))
    return err.value.lines


@pytest.mark.parametrize(("extra", "line"), [
    ({"policy": {"login_methods": {"staff": ["pasword"]}}},
     "mss.yaml: policy.login_methods.staff.0: expected one of card, org-certificate, password, "
     "password+totp, token, ldap, got 'pasword' (did you mean password?)"),
    ({"policy": {"login_methods": {"staff": ["password+otp"]}}},
     "(did you mean password+totp?)"),
    ({"policy": {"login_methods": {"practicioner": ["card"]}}},
     "mss.yaml: policy.login_methods.practicioner: unknown key (did you mean practitioner?)"),
    ({"policy": {"login_methods": {"system": ["org-cert"]}}}, "(did you mean org-certificate?)"),
    ({"policy": {"login_methods": {"admin": ["ldap"]}}},
     "policy.login_methods.admin allows ldap, but no ldap section is configured"),
    ({"policy": {"password_login_classes": ["staf"]}}, "(did you mean staff?)"),
    ({"policy": {"password_login_classes": ["staff"], "login_methods": {}}},
     "password_login_classes is replaced by login_methods"),
    ({"identity_provider": {"issuer": "http://idp.test", "audience": "m"}},
     "mss.yaml: identity_provider.issuer: expected an https:// URL, got 'http://idp.test'"),
    ({"identity_provider": {"issuer": "https://idp.test", "audience": "m",
                            "validation": ["introspektion"]}},
     "(did you mean introspection?)"),
    ({"identity_provider": {"issuer": "https://idp.test", "audience": "m",
                            "validation": ["introspection"]}},
     "introspection needs client_id and client_secret_file"),
    ({"identity_provider": {"isuer": "https://idp.test", "audience": "m"}},
     "identity_provider.isuer: unknown key (did you mean issuer?)"),
])
def test_problems_name_the_key_and_suggest(extra: dict[str, Any], line: str) -> None:
    found = problems(**extra)
    assert any(line in p for p in found), found


def test_identity_provider_files_are_relative_and_checked(tmp_path: Path) -> None:
    settings = settings_from_data({**BASE, "identity_provider": {
        "issuer": "https://idp.test/realms/mss", "audience": "mss-mail", "ca_file": "idp-ca.pem",
        "validation": ["jwks", "introspection"], "client_id": "mss",
        "client_secret_file": "idp-secret"}}, "mss.yaml", tmp_path)
    idp = settings.identity_provider
    assert idp is not None and idp.ca_file == tmp_path / "idp-ca.pem"
    assert idp.login_claim == "email" and idp.leeway == 60
    with pytest.raises(ConfigError) as err:
        settings_from_data({**BASE, "identity_provider": idp.model_dump(mode="json")},
                           "mss.yaml", tmp_path, check_files=True)
    assert any("identity_provider.ca_file: expected an existing file" in p
               for p in err.value.lines)


def test_password_login_classes_is_read_with_a_warning(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    path = tmp_path / "mss.yaml"
    path.write_text(yaml.safe_dump({**BASE, "policy": {"password_login_classes": ["staff"]}}))
    with caplog.at_level(logging.WARNING, logger="conf.loader"):
        settings = load_settings(path)
    assert AuthMethod.PASSWORD in settings.policy.login_methods.staff
    assert AuthMethod.PASSWORD not in settings.policy.login_methods.practitioner
    assert "policy.password_login_classes is deprecated" in caplog.text
