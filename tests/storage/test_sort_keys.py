"""The SORT / THREAD keys kept at delivery (table `sort_keys`, revision
0018; a column of `bodies` from 0013), on SQLite and PostgreSQL: stored
encrypted with every new message, computed and written back for messages
stored before, rotated like every keyed row, gone with their body."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from storage.crypto import add_key
from storage.interface import AccountClass, Delivery, MailboxType, NotFound
from storage.models import BodyRow, SortKeysRow


def _count(store: Any, row: type[Any]) -> int:
    with store.engine.begin() as c:
        return int(c.execute(select(func.count()).select_from(row)).scalar_one())


def _keyless_bodies(store: Any) -> int:
    """Bodies without a keys row (stored before revision 0013)."""
    return _count(store, BodyRow) - _count(store, SortKeysRow)


def _raw(n: int) -> bytes:
    return (f"From: Dr Martin <martin@hopital.test>\r\nTo: secretariat@hopital.test\r\n"
            f"Subject: Re: dossier {n}\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <m{n}@hopital.test>\r\nReferences: <root@hopital.test>\r\n"
            f"\r\nbody {n}\r\n").encode()


def _inbox(store: Any) -> int:
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return int(store.get_folder(mb.id, "INBOX").id)


def test_keys_of_delivered_and_appended_messages(any_store: Any) -> None:
    inbox = _inbox(any_store)
    mb = any_store.get_mailbox("dr@hopital.test")
    any_store.deliver(Delivery(raw=_raw(1), mailbox_ids=(mb.id,)))
    any_store.append(inbox, _raw(2))
    keys = any_store.sort_keys(inbox, [1, 2, 99])
    assert set(keys) == {1, 2}
    k = keys[2]
    assert (k.subject, k.reply, k.from_, k.display_from, k.to) == (
        "dossier 2", True, "martin", "Dr Martin", "secretariat")
    assert k.sent == 1704189600 and k.message_id == "<m2@hopital.test>"
    assert k.references == ("<root@hopital.test>",)
    assert any_store.sort_keys(inbox, [2])[2] == k  # from the cache now
    with pytest.raises(NotFound):
        any_store.sort_keys(inbox + 1000, [1])


def test_messages_stored_before_0013_get_their_keys_written_back(
        open_any: Callable[..., Any]) -> None:
    first = open_any()
    first.add_domain("hopital.test")
    inbox = _inbox(first)
    for n in range(3):
        first.append(inbox, _raw(n))
    with first.engine.begin() as c:
        c.execute(delete(SortKeysRow))
    fresh = open_any()  # no cache: finds no keys rows
    keys = fresh.sort_keys(inbox, [1, 2, 3])
    assert [keys[u].subject for u in (1, 2, 3)] == ["dossier 0", "dossier 1", "dossier 2"]
    assert _count(fresh, SortKeysRow) == 3
    assert open_any().sort_keys(inbox, [1, 2, 3]) == keys


def test_old_messages_not_asked_for_are_not_computed(open_any: Callable[..., Any]) -> None:
    """The first read of a folder takes all of its rows; of those stored
    without keys only the ones asked for are computed from the message
    (a SORT of a few messages of a large old folder must not read them
    all); the others come when asked for."""
    first = open_any()
    first.add_domain("hopital.test")
    inbox = _inbox(first)
    for n in range(4):
        first.append(inbox, _raw(n))
    with first.engine.begin() as c:
        c.execute(delete(SortKeysRow))
    fresh = open_any()
    assert fresh.sort_keys(inbox, [2]).keys() == {2}  # a part: only what was asked for
    assert fresh.sort_keys(inbox, [2])[2].subject == "dossier 1"
    assert _count(fresh, SortKeysRow) == 1
    keys = fresh.sort_keys(inbox, [1, 2, 3, 4])
    assert [keys[u].subject for u in (1, 2, 3, 4)] == [f"dossier {n}" for n in range(4)]
    assert _keyless_bodies(fresh) == 0


def test_rotation_moves_the_sort_keys_too(open_any: Callable[..., Any], key_file: Path) -> None:
    store = open_any()
    store.add_domain("hopital.test")
    inbox = _inbox(store)
    store.append(inbox, _raw(1))
    store.append(inbox, _raw(2))
    with store.engine.begin() as c:  # one row from before 0013
        first = c.execute(select(BodyRow.id).order_by(BodyRow.id)).scalars().first()
        c.execute(delete(SortKeysRow).where(SortKeysRow.body_id == first))
    new = add_key(key_file)
    assert sorted(store.check_keys()) == []
    while store.reencrypt(batch=1):  # one row a call: bodies, then their keys
        pass
    with store.engine.begin() as c:
        bodies = c.execute(select(BodyRow.key_id)).scalars().all()
        keys_rows = c.execute(select(SortKeysRow.body_id, SortKeysRow.key_id)).all()
    assert set(bodies) == {new} and len(bodies) == 2
    assert [r.key_id for r in keys_rows] == [new] and keys_rows[0].body_id != first
    assert store.check_keys() == []
    keys = open_any().sort_keys(inbox, [1, 2])
    assert keys[1].message_id == "<m1@hopital.test>" and keys[2].subject == "dossier 2"


def test_a_recreated_folder_does_not_reuse_cached_keys(any_store: Any) -> None:
    inbox = _inbox(any_store)
    mb = any_store.get_mailbox("dr@hopital.test")
    folder = any_store.create_folder(mb.id, "Archives")
    any_store.append(folder.id, _raw(1))
    assert any_store.sort_keys(folder.id, [1])[1].subject == "dossier 1"
    any_store.delete_folder(mb.id, "Archives")
    again = any_store.create_folder(mb.id, "Archives")
    any_store.append(again.id, _raw(7))
    assert any_store.sort_keys(again.id, [1])[1].subject == "dossier 7"
    assert any_store.sort_keys(inbox, [1]) == {}


def test_fill_sort_keys_in_batches(open_any: Callable[..., Any]) -> None:
    """`mssctl db sort-keys`: older messages get their keys ahead of the
    first SORT, a batch per transaction, the same keys as at delivery."""
    store = open_any()
    store.add_domain("hopital.test")
    inbox = _inbox(store)
    for n in range(3):
        store.append(inbox, _raw(n))
    delivered = open_any().sort_keys(inbox, [1, 2, 3])
    with store.engine.begin() as c:
        c.execute(delete(SortKeysRow))
    assert [store.fill_sort_keys(batch=2), store.fill_sort_keys(batch=2),
            store.fill_sort_keys(batch=2)] == [2, 1, 0]
    assert _keyless_bodies(store) == 0
    assert open_any().sort_keys(inbox, [1, 2, 3]) == delivered


def test_keys_written_after_a_rotation_follow_the_new_key(
        open_any: Callable[..., Any], key_file: Path) -> None:
    """Keys computed for an old message are written under the current key,
    whatever its body's: `check_keys` reads them, and reading them back
    never needs the body's key row."""
    store = open_any()
    store.add_domain("hopital.test")
    inbox = _inbox(store)
    store.append(inbox, _raw(1))
    old = _body_key_ids(store)
    with store.engine.begin() as c:
        c.execute(delete(SortKeysRow))
    new = add_key(key_file)
    fresh = open_any()
    assert fresh.fill_sort_keys() == 1
    with fresh.engine.begin() as c:
        assert c.execute(select(SortKeysRow.key_id)).scalars().all() == [new]
    assert _body_key_ids(fresh) == old != {new}
    assert fresh.check_keys() == []
    assert open_any().sort_keys(inbox, [1])[1].subject == "dossier 1"


def _body_key_ids(store: Any) -> set[str]:
    with store.engine.begin() as c:
        return set(c.execute(select(BodyRow.key_id)).scalars())


def test_no_keys_row_outlives_its_body(any_store: Any) -> None:
    """Expunge, MOVE, folder deletion: a body no message points at goes, and
    its keys row with it (ON DELETE CASCADE, on both backends); a body a
    copy still uses keeps its keys."""
    inbox = _inbox(any_store)
    mb = any_store.get_mailbox("dr@hopital.test")
    for n in range(4):
        any_store.append(inbox, _raw(n), flags=["\\Deleted"] if n < 2 else [])
    other = any_store.create_folder(mb.id, "Archives")
    any_store.copy(inbox, [1], other.id)  # uid 1's body is shared now
    assert (_count(any_store, BodyRow), _count(any_store, SortKeysRow)) == (4, 4)
    assert any_store.expunge(inbox) == [1, 2]
    assert (_count(any_store, BodyRow), _count(any_store, SortKeysRow)) == (3, 3)
    any_store.move(inbox, [3], other.id)  # moved: the body stays, so do its keys
    assert (_count(any_store, BodyRow), _count(any_store, SortKeysRow)) == (3, 3)
    assert any_store.sort_keys(other.id, [1, 2])[1].subject == "dossier 0"
    any_store.delete_folder(mb.id, "Archives")
    assert (_count(any_store, BodyRow), _count(any_store, SortKeysRow)) == (1, 1)
    with any_store.engine.begin() as c:
        kept = c.execute(select(SortKeysRow.body_id)).scalars().all()
        assert kept == c.execute(select(BodyRow.id)).scalars().all()


def test_keys_of_an_older_version_are_replaced(open_any: Callable[..., Any]) -> None:
    """A keys row that `sortkeys.decode` does not read (another VERSION) is
    computed again and overwritten; a fill never overwrites a row, and
    never writes one for a body that is gone."""
    from storage import crypto, sortkeys

    store = open_any()
    store.add_domain("hopital.test")
    inbox = _inbox(store)
    store.append(inbox, _raw(1))
    ring = store._keys.ring()
    stale = ring.encrypt_with(ring.current_id, b'[0, 1, "s"]', crypto.AAD_SORT_KEYS)
    with store.engine.begin() as c:
        body = c.execute(select(BodyRow.id)).scalar_one()
        c.execute(SortKeysRow.__table__.update().values(data=stale))
    assert open_any().sort_keys(inbox, [1])[1].subject == "dossier 1"
    with store.engine.begin() as c:
        data = bytes(c.execute(select(SortKeysRow.data)).scalar_one())
    assert sortkeys.decode(ring.decrypt(ring.current_id, data, crypto.AAD_SORT_KEYS)) is not None
    with store.engine.begin() as c:
        store._put_sort_keys(c, [(body, ring.current_id, stale), (body + 99, "k1", stale)],
                             replace=False)
    with store.engine.begin() as c:
        assert [bytes(d) for d in c.execute(select(SortKeysRow.data)).scalars()] == [data]
