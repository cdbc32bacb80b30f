"""One-time code secrets in the store (SQLite and PostgreSQL): encrypted at
rest, bound to their account, replay protection shared by every process."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from storage import crypto
from storage.crypto import add_key
from storage.interface import AccountClass, NotFound
from storage.sqlbase import AF

SECRET = b"\x01" * 20


def account(store: Any, login: str = "sec.durand@hopital.test") -> Any:
    return store.add_account(login, "S", AccountClass.STAFF)


def test_secret_round_trip_and_removal(any_store: Any) -> None:
    acc = account(any_store)
    assert any_store.totp_factor(acc.id) is None
    any_store.set_totp_secret(acc.id, SECRET)
    factor = any_store.totp_factor(acc.id)
    assert factor is not None and factor.secret == SECRET and factor.last_step is None
    assert SECRET.hex() not in repr(factor)
    any_store.set_totp_secret(acc.id, None)
    assert any_store.totp_factor(acc.id) is None


def test_secret_is_encrypted_at_rest(any_store: Any) -> None:
    acc = account(any_store)
    any_store.set_totp_secret(acc.id, SECRET)
    with any_store.engine.connect() as c:
        blob = c.execute(select(AF.c.totp_secret)).scalar_one()
    assert SECRET not in bytes(blob)


def test_unknown_account(any_store: Any) -> None:
    with pytest.raises(NotFound):
        any_store.set_totp_secret(9999, SECRET)
    assert any_store.claim_totp_step(9999, 5) is False


def test_steps_only_move_forward(open_any: Any) -> None:
    first = open_any()
    first.add_domain("hopital.test")
    acc = account(first)
    first.set_totp_secret(acc.id, SECRET)
    other = open_any()  # another worker process's store
    assert first.claim_totp_step(acc.id, 100) is True
    assert other.claim_totp_step(acc.id, 100) is False  # replayed elsewhere
    assert other.claim_totp_step(acc.id, 99) is False  # an older code
    assert other.claim_totp_step(acc.id, 101) is True
    assert first.totp_factor(acc.id).last_step == 101
    # A new secret starts afresh.
    first.set_totp_secret(acc.id, SECRET)
    assert first.totp_factor(acc.id).last_step is None
    assert first.claim_totp_step(acc.id, 50) is True


def test_a_secret_cannot_be_moved_to_another_account(any_store: Any) -> None:
    a, b = account(any_store), account(any_store, "sec.petit@hopital.test")
    any_store.set_totp_secret(a.id, SECRET)
    any_store.set_totp_secret(b.id, b"\x02" * 20)
    with any_store.engine.begin() as c:
        blob, key_id = c.execute(select(AF.c.totp_secret, AF.c.key_id)
                                 .where(AF.c.account_id == a.id)).one()
        c.execute(update(AF).where(AF.c.account_id == b.id)
                  .values(totp_secret=blob, key_id=key_id))
    with pytest.raises(crypto.DecryptionError):
        any_store.totp_factor(b.id)


def test_secrets_follow_key_rotation(any_store: Any, key_file: Any) -> None:
    acc = account(any_store)
    any_store.set_totp_secret(acc.id, SECRET)
    new = add_key(key_file)
    while any_store.reencrypt(batch=10):
        pass
    with any_store.engine.connect() as c:
        assert c.execute(select(AF.c.key_id)).scalar_one() == new
    assert any_store.totp_factor(acc.id).secret == SECRET
