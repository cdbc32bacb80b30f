"""IMAP before login: the per-address connection limit
(`limits.imap_connections_per_ip`) and the login deadline
(`limits.imap_login_timeout`), on StringTransport with a Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import PASSWORD, SECRETARY, ImapEnv, make_env, populate
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from conf.settings import LimitSettings

BUSY = b"* BYE Too many connections from your address\r\n"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store, limits=LimitSettings(imap_connections_per_ip=2,
                                                          imap_login_timeout=60.0))


def hang_up(c: Any) -> None:
    """The client's end of the TCP connection (StringTransport never calls it)."""
    c.proto.connectionLost(Failure(ConnectionDone()))


def test_one_address_gets_the_limit_then_bye(env: ImapEnv) -> None:
    first, second = env.connect(), env.connect()
    assert first.greeting.startswith(b"* OK") and second.greeting.startswith(b"* OK")
    third = env.connect()
    assert third.greeting == BUSY
    assert third.closed
    refusals = [e for e in env.audit.events if e.action == "connection"]
    assert [(e.actor, e.target, e.result, e.details["reason"]) for e in refusals] == [
        ("127.0.0.1", "imap", "deny", "too-many-connections")]
    # Another address has its own count; another listener too.
    assert env.connect(ip="192.0.2.7").greeting.startswith(b"* OK")
    assert env.connect("imap-starttls").greeting.startswith(b"* OK")


def test_a_closed_connection_frees_its_place(env: ImapEnv) -> None:
    first, _second = env.connect(), env.connect()
    refused = env.connect()
    assert refused.greeting == BUSY
    hang_up(refused)  # a refused connection counts until it is gone, then not
    again = env.connect()
    assert again.greeting == BUSY
    hang_up(again)
    hang_up(first)
    assert env.connect().greeting.startswith(b"* OK")
    factory = env.factories["imap"]
    assert factory.connections("127.0.0.1") == 2


def test_no_login_within_the_deadline_is_bye(env: ImapEnv) -> None:
    c = env.connect()
    env.clock.advance(30)
    c.ok("NOOP")  # activity does not move the deadline
    env.clock.advance(29)
    c.ok("CAPABILITY")
    assert not c.closed
    env.clock.advance(1)
    assert c.read() == b"* BYE Autologout; no login in time\r\n"
    assert c.closed


def test_a_login_in_time_is_not_ended_by_the_deadline(env: ImapEnv) -> None:
    c = env.connect()
    env.clock.advance(59)
    assert b"l1 OK" in c.cmd(f'l1 LOGIN {SECRETARY} "{PASSWORD}"')
    env.clock.advance(60)
    assert not c.closed and c.read() == b""
    # After login the idle timeout applies (RFC 3501: at least 30 minutes).
    env.clock.advance(env.settings.limits.imap_idle_timeout - 61)
    assert not c.closed
    env.clock.advance(1)
    assert c.read() == b"* BYE Autologout; idle for too long\r\n"


def test_a_failed_login_does_not_extend_the_deadline(env: ImapEnv) -> None:
    c = env.connect()
    env.clock.advance(50)
    assert b"l1 NO" in c.cmd(f'l1 LOGIN {SECRETARY} "wrong"')
    env.clock.advance(10)
    assert c.closed


def test_the_deadline_timer_goes_with_the_connection(env: ImapEnv) -> None:
    c = env.connect()
    pending = {call.func for call in env.clock.getDelayedCalls()}
    assert c.proto._login_expired in pending
    hang_up(c)
    assert c.proto._login_expired not in {call.func for call in env.clock.getDelayedCalls()}
