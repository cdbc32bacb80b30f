"""`Policy.client_setup_methods`: the login methods autoconfiguration
offers for an address (the world of test_policy_decisions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_policy_decisions import D, World, make_world

from conf.settings import AuthMethod


@pytest.fixture
def world(tmp_path: Path, dev_pki: Any, settings_factory: Any, store: Any) -> Iterator[World]:
    w = make_world(tmp_path, dev_pki, settings_factory, store)
    yield w
    w.audit.close()


def test_client_setup_methods(world: World) -> None:
    """The class's methods in order; an address that is no active login
    gets the staff's, so that the answer does not tell which logins exist."""
    methods = world.policy.client_setup_methods
    assert methods(f"Dr.Martin@{D}") == [AuthMethod.CARD]  # production default for the class
    assert methods(f"labo@{D}") == [AuthMethod.ORG_CERTIFICATE]
    staff = [AuthMethod.PASSWORD, AuthMethod.PASSWORD_TOTP, AuthMethod.TOKEN, AuthMethod.CARD]
    assert methods(f"sec.durand@{D}") == staff
    for other in (f"nobody@{D}", f"cardiologie@{D}", f"gone@{D}", ""):
        assert methods(other) == staff, other
    assert world.events() == []  # a query: no decision recorded
