"""`MessageStore.deliver_many` (group commit), against SQLite and PostgreSQL.

One transaction for many deliveries, each all-or-nothing on its own: a
delivery that fails (quota, missing mailbox, a database refusal of that row)
leaves the others committed, with consecutive UIDs and exact quota totals.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from storage.interface import (
    AccountClass,
    AppendResult,
    Delivery,
    MailboxType,
    NotFound,
    QuotaExceeded,
    StoreError,
)
from storage.models import BodyRow, MessageRow


def msg(n: int, pad: int = 0) -> bytes:
    return (
        f"From: <lab@labo.test>\r\nTo: <dr@hopital.test>\r\nSubject: result {n}\r\n"
        f"Message-ID: <r{n}@labo.test>\r\n\r\nvalue {n}\r\n" + "x" * pad
    ).encode()


@pytest.fixture
def boxes(any_store: Any) -> tuple[Any, Any, Any]:
    acc = any_store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    dr = any_store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    org = any_store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    return any_store, dr, org


def test_many_deliveries_one_call(boxes: Any) -> None:
    store, dr, org = boxes
    deliveries = [Delivery(msg(i), (dr.id,) if i % 2 else (dr.id, org.id)) for i in range(6)]
    results = store.deliver_many(deliveries)
    assert len(results) == 6 and not any(isinstance(r, StoreError) for r in results)
    # UIDs are consecutive per INBOX, in list order; each delivery one new MODSEQ.
    assert [r[0].uid for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r[1].uid for r in results if len(r) == 2] == [1, 2, 3]
    modseqs = [r[0].modseq for r in results]
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == 6
    inbox = store.get_folder(dr.id, "INBOX")
    assert inbox.uidnext == 7 and inbox.highestmodseq == modseqs[-1]
    assert [e.uid for e in store.index(inbox.id)] == [1, 2, 3, 4, 5, 6]
    assert all(e.modseq == m for e, m in zip(store.index(inbox.id), modseqs, strict=True))
    for i, r in enumerate(results):
        assert store.message_body(inbox.id, r[0].uid) == msg(i)
    assert store.claim_recent(inbox.id) == frozenset(range(1, 7))
    assert store.mailbox_usage(dr.id) == (sum(len(msg(i)) for i in range(6)), 6)
    assert store.mailbox_usage(org.id) == (sum(len(msg(i)) for i in range(0, 6, 2)), 3)
    [info] = store.message_infos(inbox.id, [2])
    assert info.size == len(msg(1)) and info.metadata


def test_a_failing_delivery_does_not_fail_the_others(boxes: Any) -> None:
    store, dr, org = boxes
    store.set_quota(org.id, len(msg(0)) + len(msg(1)))
    results = store.deliver_many(
        [
            Delivery(msg(0), (org.id,)),
            Delivery(msg(1), (dr.id, 99999)),  # no such mailbox: nobody gets it
            Delivery(msg(1), (org.id, dr.id)),
            Delivery(msg(2), (org.id,)),  # the quota is reached by now
            Delivery(msg(3), (dr.id, org.id)),  # all or nothing: not even dr
            Delivery(msg(4), ()),
            Delivery(msg(5), (dr.id,)),
        ]
    )
    assert isinstance(results[1], NotFound)
    assert isinstance(results[3], QuotaExceeded) and isinstance(results[4], QuotaExceeded)
    assert results[5] == []
    ok = [r for r in results if isinstance(r, list) and r]
    assert all(isinstance(a, AppendResult) for r in ok for a in r)
    dr_inbox = store.get_folder(dr.id, "INBOX")
    org_inbox = store.get_folder(org.id, "INBOX")
    # Refused deliveries took no UID.
    assert [r.uid for r in results[2]] == [2, 1]
    assert [r.uid for r in results[6]] == [2]
    assert [store.message_body(dr_inbox.id, u) for u in (1, 2)] == [msg(1), msg(5)]
    assert [store.message_body(org_inbox.id, u) for u in (1, 2)] == [msg(0), msg(1)]
    assert store.mailbox_usage(org.id) == (len(msg(0)) + len(msg(1)), 2)
    assert store.mailbox_usage(dr.id) == (len(msg(1)) + len(msg(5)), 2)
    assert dr_inbox.uidnext == 3 and org_inbox.uidnext == 3


def test_a_database_refusal_is_isolated_by_its_savepoint(boxes: Any) -> None:
    """A row the database refuses (here: the UID the counter hands out is
    already taken, as after a damaged counter) rolls back that delivery alone,
    body included; the batch still commits the others."""
    store, dr, org = boxes
    org_inbox = store.get_folder(org.id, "INBOX")
    with store.engine.begin() as c:
        body_id = c.execute(
            insert(BodyRow).values(key_id="x", size=1, body=b"x", meta=b"x")
        ).inserted_primary_key[0]
        c.execute(insert(MessageRow).values(
            folder_id=org_inbox.id, uid=1, modseq=1, flags="", internal_date=0, size=1,
            recent=False, body_id=body_id))
        bodies_before = c.execute(select(func.count()).select_from(BodyRow)).scalar()
    results = store.deliver_many(
        [Delivery(msg(0), (dr.id,)), Delivery(msg(1), (org.id,)), Delivery(msg(2), (dr.id,))]
    )
    assert isinstance(results[1], StoreError)
    assert [r[0].uid for r in results if isinstance(r, list)] == [1, 2]
    inbox = store.get_folder(dr.id, "INBOX")
    assert [store.message_body(inbox.id, u) for u in (1, 2)] == [msg(0), msg(2)]
    assert store.mailbox_usage(dr.id) == (len(msg(0)) + len(msg(2)), 2)
    assert store.mailbox_usage(org.id) == (0, 0)
    assert store.get_folder(org.id, "INBOX").uidnext == 1
    with store.engine.connect() as c:
        # Two new bodies: the refused delivery's body was rolled back with it.
        assert c.execute(select(func.count()).select_from(BodyRow)).scalar() == bodies_before + 2


def test_empty_and_deliver_still_all_or_nothing(boxes: Any) -> None:
    store, dr, org = boxes
    assert store.deliver_many([]) == []
    assert store.deliver_many([Delivery(msg(0), ())]) == [[]]
    store.set_quota(org.id, 1)
    with pytest.raises(QuotaExceeded):
        store.deliver(Delivery(msg(0), (dr.id, org.id)))
    with pytest.raises(NotFound):
        store.deliver(Delivery(msg(0), (dr.id, 4242)))
    assert store.mailbox_usage(dr.id) == (0, 0)
    assert store.get_folder(dr.id, "INBOX").uidnext == 1


def test_concurrent_batches_never_share_a_uid(boxes: Any) -> None:
    """Threads of one store committing batches and single deliveries into the
    same INBOX: UIDs stay unique and consecutive, usage exact."""
    store, dr, _ = boxes
    errors: list[BaseException] = []
    uids: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            for n in range(5):
                if k % 2:
                    res = store.deliver_many([Delivery(msg(k * 100 + n + j), (dr.id,))
                                              for j in range(3)])
                    got = [r[0].uid for r in res if isinstance(r, list)]
                else:
                    got = [store.deliver(Delivery(msg(k * 100 + n), (dr.id,)))[0].uid]
                with lock:
                    uids.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = 2 * 5 * 3 + 2 * 5
    assert sorted(uids) == list(range(1, expected + 1))
    assert store.mailbox_usage(dr.id)[1] == expected
    assert store.get_folder(dr.id, "INBOX").uidnext == expected + 1
