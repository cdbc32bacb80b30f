"""The documentation and the example settings follow the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from conf.loader import load_settings
from conf.settings import (
    AuditSettings,
    AutoconfigSettings,
    DatabaseSettings,
    IdentityProviderSettings,
    LimitSettings,
    ListenerSettings,
    LockoutSettings,
    LoginMethodSettings,
    PolicySettings,
    QueueSettings,
    Settings,
    TLSSettings,
)
from mssctl.init import default_flows, render_config

REPO = Path(__file__).resolve().parents[2]
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("", Settings),
    ("listeners[].", ListenerSettings),
    ("database.", DatabaseSettings),
    ("tls.", TLSSettings),
    ("limits.", LimitSettings),
    ("queue.", QueueSettings),
    ("audit.", AuditSettings),
    ("policy.", PolicySettings),
    ("policy.lockout.", LockoutSettings),
    ("policy.login_methods.", LoginMethodSettings),
    ("identity_provider.", IdentityProviderSettings),
    ("autoconfig.", AutoconfigSettings),
]


@pytest.mark.parametrize(
    "key", [prefix + name for prefix, model in SECTIONS for name in model.model_fields]
)
def test_every_setting_is_in_the_readme_reference(key: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"| `{key}` |" in readme


def test_defaults_files_are_what_init_writes() -> None:
    expected = render_config(
        domain="hopital.test", hostname="mx.hopital.test", port_offset=0, demo=False,
        pki={"cert_file": "pki/server.pem", "key_file": "pki/server.key",
             "ca_file": "pki/ca.pem", "crl_file": "pki/crl.pem"},
    )
    assert (REPO / "conf" / "defaults" / "mss.yaml").read_text(encoding="utf-8") == expected
    assert (REPO / "conf" / "defaults" / "flows.yaml").read_text(encoding="utf-8") == default_flows()


def test_example_settings_load_and_state_the_model_defaults() -> None:
    settings = load_settings(REPO / "conf" / "defaults" / "mss.yaml")
    # The example spells the defaults out: it must not drift from the models.
    assert settings.limits == LimitSettings()
    assert settings.queue == QueueSettings()
    assert settings.policy.login_methods == PolicySettings().login_methods
    assert settings.policy.deprecations() == []
    assert settings.policy.enforce_whitelist == PolicySettings().enforce_whitelist
    assert settings.policy.lockout == LockoutSettings()
    assert settings.audit.retention_days == AuditSettings.model_fields["retention_days"].default
    assert settings.database.threads == DatabaseSettings.model_fields["threads"].default
    assert settings.workers == Settings.model_fields["workers"].default
    assert [(lst.port, lst.role.value, lst.tls.value) for lst in settings.listeners] == [
        (2525, "mx", "starttls"), (2587, "submission", "starttls"),
        (2465, "submission", "implicit"), (1143, "imap", "starttls"),
        (1993, "imap", "implicit"),
    ]


def test_readme_states_exactly_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up: two commands", 1)[1].split("\n## ", 1)[0]
    block = setup.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]


@pytest.mark.parametrize("demo", [False, True])
def test_init_requires_operator_certificates_on_mx(tmp_path: Path, demo: bool) -> None:
    """New instances (the demo too) refuse an MX peer without a certificate
    or with a DN not listed; the model's default stays off for old files."""
    (tmp_path / "mss.yaml").write_text(render_config(
        domain="hopital.test", hostname="mx.hopital.test", port_offset=0, demo=demo,
        pki={"cert_file": "pki/server.pem", "key_file": "pki/server.key",
             "ca_file": "pki/ca.pem", "crl_file": "pki/crl.pem"}), encoding="utf-8")
    settings = load_settings(tmp_path / "mss.yaml")
    assert settings.policy.mx_require_client_cert is True
    assert settings.policy.enforce_whitelist is True
    assert PolicySettings().mx_require_client_cert is False
