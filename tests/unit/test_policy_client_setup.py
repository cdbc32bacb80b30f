"""`Policy.client_setup_methods`: the login methods autoconfiguration
offers for an address (the world of test_policy_decisions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_policy_decisions import World, make_world

from conf.settings import AuthMethod


@pytest.fixture
def world(tmp_path: Path, dev_pki: Any, settings_factory: Any, store: Any) -> Iterator[World]:
    w = make_world(tmp_path, dev_pki, settings_factory, store)
    yield w
    w.audit.close()


def test_client_setup_methods_are_the_same_for_every_address(world: World) -> None:
    """The anonymous query gets one answer whatever the address (it takes
    none), so it does not tell which addresses are practitioners' or
    systems' accounts (it did: a card holder got the card alone, a system
    the organisation certificate alone, anyone else the staff's methods):
    the staff's methods in order, then the other classes' not listed yet.
    tests/e2e/test_autoconfig.py checks the documents are byte-identical."""
    assert world.policy.client_setup_methods() == [
        AuthMethod.PASSWORD, AuthMethod.PASSWORD_TOTP, AuthMethod.TOKEN, AuthMethod.CARD,
        AuthMethod.ORG_CERTIFICATE]
    assert world.events() == []  # a query: no decision recorded
