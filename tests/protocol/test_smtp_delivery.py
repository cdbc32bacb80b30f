"""Group commit: messages accepted while a commit runs share the next one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from smtp_transcript import add_user, codes, inbox, make_env
from twisted.internet import defer

from mssmtpd.delivery import LocalDelivery, TraceInfo, header_values, received_header
from mssmtpd.replies import R
from storage.interface import Delivery, StoreError


class BatchingStore:
    """The real SqlStore plus `deliver_many` as the store contract proposes it
    (here one transaction per delivery; the batching seam is what is tested)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Any]:
        self.batches.append(len(deliveries))
        out: list[Any] = []
        for d in deliveries:
            try:
                out.append(self._store.deliver(d))
            except StoreError as exc:
                out.append(exc)
        return out


class StepRunner:
    """Runs store calls only when the test says so (a thread pool that is slow)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((lambda: fn(*args, **kwargs), (), d))
        return d

    def step(self) -> bool:
        if not self.calls:
            return False
        fn, _, d = self.calls.pop(0)
        try:
            d.callback(fn())
        except Exception as exc:  # noqa: BLE001
            d.errback(exc)
        return True

    def drain(self) -> None:
        while self.step():
            pass


def test_concurrent_messages_share_a_commit(tmp_path: Path, store: Any) -> None:
    for i in range(3):
        add_user(store, f"u{i}@hopital.test")
    batching = BatchingStore(store)
    env = make_env(tmp_path, batching)
    runner = StepRunner()
    env.services.runner = runner
    convs = [env.connect("mx", ip=f"192.0.2.{i + 1}") for i in range(3)]
    for i, conv in enumerate(convs):
        conv.cmd("EHLO c.example")
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u{i}@hopital.test>\r\nDATA\r\n")
        runner.drain()  # policy decisions
        conv.take()
    for i, conv in enumerate(convs):
        assert conv.send(f"Subject: {i}\r\n\r\nbody\r\n.\r\n".encode()) == b""  # not yet committed
    runner.drain()
    assert batching.batches == [1, 2]  # the first commit started alone; the others waited for it
    for i, conv in enumerate(convs):
        assert codes(conv.take()) == [f"{R.DELIVERED.code} {R.DELIVERED.status}"]
        assert len(inbox(store, f"u{i}@hopital.test")) == 1


def test_batched_failure_is_per_message(tmp_path: Path, store: Any) -> None:
    add_user(store, "u0@hopital.test")
    batching = BatchingStore(store)
    env = make_env(tmp_path, batching)
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u0@hopital.test>\r\nDATA\r\n")
    mb = store.get_mailbox("u0@hopital.test")
    store.set_quota(mb.id, 10)  # the next message cannot fit
    assert codes(conv.send(b"Subject: big\r\n\r\nbody\r\n.\r\n")) == [
        f"{R.QUOTA_EXCEEDED_TEMP.code} {R.QUOTA_EXCEEDED_TEMP.status}"]
    assert isinstance(env.factories["mx"].delivery, LocalDelivery)
    assert env.factories["mx"].delivery.batched


def test_received_header_never_lists_several_recipients() -> None:
    info = TraceInfo(hostname="mx.hopital.test", helo="c.example", peer_ip="192.0.2.1",
                     esmtp=True, tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
                     authenticated="dr.martin@hopital.test", auth_method="password",
                     cert_subject=None)
    one = received_header(info, ["a@hopital.test"]).decode()
    assert "with ESMTPSA" in one and "for <a@hopital.test>;" in one
    assert "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)" in one
    many = received_header(info, ["a@hopital.test", "secret-bcc@hopital.test"]).decode()
    assert "secret-bcc" not in many
    hostile = TraceInfo(hostname="mx", helo="x", peer_ip="1.2.3.4", esmtp=True, tls=None,
                        authenticated="evil)\r\nBcc: x", auth_method="password", cert_subject=None)
    text = received_header(hostile, ["a@b"]).decode()
    assert "\r\nBcc" not in text and text.count("\r\n") == 4


def test_header_values_unfold() -> None:
    msg = b"From: A\r\n <a@x.example>\r\nSubject: s\r\n\r\nFrom: body@x.example\r\n"
    assert header_values(msg, "from") == ["A <a@x.example>"]


def test_slow_store_does_not_time_the_client_out(tmp_path: Path, store: Any) -> None:
    add_user(store, "u0@hopital.test")
    env = make_env(tmp_path, store)
    runner = StepRunner()
    env.services.runner = runner
    conv = env.connect("mx")
    conv.cmd("EHLO c.example")
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u0@hopital.test>\r\nDATA\r\n")
    runner.drain()
    conv.take()
    conv.send(b"Subject: s\r\n\r\nbody\r\n.\r\n")
    env.clock.advance(env.settings.limits.smtp_idle_timeout * 3)  # the commit is slow
    assert not conv.closed
    runner.drain()
    assert codes(conv.take()) == [f"{R.DELIVERED.code} {R.DELIVERED.status}"]
    env.clock.advance(env.settings.limits.smtp_idle_timeout + 1)  # now the client is idle
    assert conv.closed
