"""Group commit with a gathering wait (`LocalDelivery(gather=...)`), on the
real store's `deliver_many`: messages completed within the wait share one
transaction, and no client hears 250 before that transaction has committed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smtp_transcript import add_user, codes, inbox, make_env

from mssmtpd.delivery import LocalDelivery
from mssmtpd.replies import R
from mssmtpd.server import SMTPFactory
from storage.interface import Delivery

DELIVERED = f"{R.DELIVERED.code} {R.DELIVERED.status}"


class CountingStore:
    """The real SqlStore; counts the deliver_many transactions."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.batches: list[int] = []

    def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Any]:
        self.batches.append(len(deliveries))
        return self._store.deliver_many(deliveries)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_messages_within_the_wait_share_one_commit(tmp_path: Path, store: Any) -> None:
    for i in range(4):
        add_user(store, f"u{i}@hopital.test")
    counting = CountingStore(store)
    env = make_env(tmp_path, counting)
    factory = env.factories["mx"] = SMTPFactory(env.services, env.listener("mx"))
    factory.delivery = LocalDelivery(env.services, gather=0.005)
    convs = [env.connect("mx", ip=f"192.0.2.{i + 1}") for i in range(4)]
    for i, conv in enumerate(convs):
        conv.cmd("EHLO c.example")
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u{i}@hopital.test>\r\nDATA\r\n")
        conv.take()
    for i, conv in enumerate(convs[:3]):
        # Completed, but not committed yet: no reply, nothing stored.
        assert conv.send(f"Subject: {i}\r\n\r\nbody {i}\r\n.\r\n".encode()) == b""
    assert counting.batches == [] and inbox(store, "u0@hopital.test") == []
    env.clock.advance(0.004)
    assert counting.batches == []
    env.clock.advance(0.001)  # the wait is over: one commit for the three
    assert counting.batches == [3]
    for i, conv in enumerate(convs[:3]):
        assert codes(conv.take()) == [DELIVERED]
        [raw] = inbox(store, f"u{i}@hopital.test")
        assert raw.endswith(f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())
    # A later message waits again, alone.
    assert convs[3].send(b"Subject: 3\r\n\r\nbody 3\r\n.\r\n") == b""
    env.clock.advance(0.005)
    assert counting.batches == [3, 1] and codes(convs[3].take()) == [DELIVERED]
    assert factory.delivery.commits == 2 and factory.delivery.committed == 4


def test_a_full_batch_does_not_wait(tmp_path: Path, store: Any) -> None:
    for i in range(2):
        add_user(store, f"u{i}@hopital.test")
    counting = CountingStore(store)
    env = make_env(tmp_path, counting)
    factory = env.factories["mx"] = SMTPFactory(env.services, env.listener("mx"))
    factory.delivery = LocalDelivery(env.services, gather=10.0, max_batch=2)
    convs = [env.connect("mx", ip=f"192.0.2.{i + 1}") for i in range(2)]
    for i, conv in enumerate(convs):
        conv.cmd("EHLO c.example")
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u{i}@hopital.test>\r\nDATA\r\n")
        conv.take()
    assert convs[0].send(b"Subject: 0\r\n\r\nx\r\n.\r\n") == b""
    assert codes(convs[1].send(b"Subject: 1\r\n\r\nx\r\n.\r\n")) == [DELIVERED]
    assert counting.batches == [2] and codes(convs[0].take()) == [DELIVERED]
    # The gathering timer was cancelled (only the sessions' idle timers remain).
    assert all("_gathered" not in repr(c) for c in env.clock.getDelayedCalls())
    assert factory.delivery._timer is None


def test_one_refused_message_in_a_batch(tmp_path: Path, store: Any) -> None:
    """Quota on one mailbox: its sender gets the temporary refusal, the
    others of the same commit their 250."""
    for i in range(3):
        add_user(store, f"u{i}@hopital.test")
    store.set_quota(store.get_mailbox("u1@hopital.test").id, 10)
    counting = CountingStore(store)
    env = make_env(tmp_path, counting)
    factory = env.factories["mx"] = SMTPFactory(env.services, env.listener("mx"))
    factory.delivery = LocalDelivery(env.services, gather=0.005)
    convs = [env.connect("mx", ip=f"192.0.2.{i + 1}") for i in range(3)]
    for i, conv in enumerate(convs):
        conv.cmd("EHLO c.example")
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u{i}@hopital.test>\r\nDATA\r\n")
        conv.take()
        conv.send(f"Subject: {i}\r\n\r\nbody\r\n.\r\n".encode())
    env.clock.advance(0.005)
    assert counting.batches == [3]
    replies = [codes(c.take()) for c in convs]
    quota = f"{R.QUOTA_EXCEEDED_TEMP.code} {R.QUOTA_EXCEEDED_TEMP.status}"
    assert replies == [[DELIVERED], [quota], [DELIVERED]]
    assert len(inbox(store, "u0@hopital.test")) == 1 and inbox(store, "u1@hopital.test") == []
    assert len(inbox(store, "u2@hopital.test")) == 1


class ShortStore(CountingStore):
    """Breaks the deliver_many contract: one result fewer than deliveries."""

    def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Any]:
        return super().deliver_many(deliveries)[:-1]


def test_a_store_breaking_its_contract_leaves_no_client_waiting(
    tmp_path: Path, store: Any
) -> None:
    for i in range(2):
        add_user(store, f"u{i}@hopital.test")
    env = make_env(tmp_path, ShortStore(store))
    factory = env.factories["mx"] = SMTPFactory(env.services, env.listener("mx"))
    factory.delivery = LocalDelivery(env.services, gather=0.005)
    convs = [env.connect("mx", ip=f"192.0.2.{i + 1}") for i in range(2)]
    for i, conv in enumerate(convs):
        conv.cmd("EHLO c.example")
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u{i}@hopital.test>\r\nDATA\r\n")
        conv.take()
        assert conv.send(f"Subject: {i}\r\n\r\nbody\r\n.\r\n".encode()) == b""
    env.clock.advance(0.005)
    for conv in convs:
        [code] = codes(conv.take())
        assert code.startswith("451 ")  # a temporary local error, never silence
