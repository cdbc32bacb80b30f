"""The SMTP hot path keeps its behaviour while doing less: MAIL/RCPT decided
on the reactor when the policy needs no store I/O, one write per pipelined
batch, one idle timer per connection however many commands arrive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtp_transcript import SmtpEnv, add_user, codes, inbox, make_env
from twisted.internet import defer

from mssmtpd.replies import R

BATCH = b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u0@hopital.test>\r\nDATA\r\n"


class CountingRunner:
    """Runs each call at once, counting which functions went off the reactor."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        self.names.append(getattr(fn, "__name__", repr(fn)))
        return defer.maybeDeferred(fn, *args, **kwargs)


def env_with_user(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, "u0@hopital.test")
    return make_env(tmp_path, store)


def test_rcpt_goes_to_the_store_once_then_is_decided_inline(tmp_path: Path, store: Any) -> None:
    env = env_with_user(tmp_path, store)
    runner = CountingRunner()
    env.services.runner = runner
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(BATCH)
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    # MX senders need no store; the first RCPT of this mailbox does.
    assert runner.names == ["check_rcpt"]
    conv.send(b"Subject: one\r\n\r\nbody\r\n.\r\n")
    runner.names.clear()
    assert codes(conv.send(BATCH)) == ["250 2.1.0", "250 2.1.5", "354"]
    assert "check_rcpt" not in runner.names  # now from the mailbox cache
    assert codes(conv.send(b"Subject: two\r\n\r\nbody\r\n.\r\n")) == [
        f"{R.DELIVERED.code} {R.DELIVERED.status}"]
    assert len(inbox(store, "u0@hopital.test")) == 2


def test_unknown_recipient_is_still_refused_after_inline_decisions(
        tmp_path: Path, store: Any) -> None:
    env = env_with_user(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u0@hopital.test>\r\n"
                    b"RCPT TO:<nobody@hopital.test>\r\nRCPT TO:<u0@hopital.test>\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5"]


def test_replies_to_a_pipelined_batch_leave_in_one_write(tmp_path: Path, store: Any) -> None:
    env = env_with_user(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    writes: list[bytes] = []
    real = conv.transport.write

    def write(data: bytes) -> None:
        writes.append(data)
        real(data)

    conv.transport.write = write  # type: ignore[method-assign]
    out = conv.send(BATCH + b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354",
                          f"{R.DELIVERED.code} {R.DELIVERED.status}", "250 2.0.0"]
    assert len(writes) == 1 and writes[0] == out


def test_quit_in_a_batch_flushes_before_closing(tmp_path: Path, store: Any) -> None:
    env = env_with_user(tmp_path, store)
    conv = env.connect("mx")
    out = conv.send(b"EHLO c.example\r\nNOOP\r\nQUIT\r\nNOOP\r\n")
    assert codes(out) == ["250", "250 2.0.0", "221 2.0.0"] and conv.closed


def test_one_idle_timer_however_many_commands(tmp_path: Path, store: Any) -> None:
    env = env_with_user(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    idle = env.settings.limits.smtp_idle_timeout
    for _ in range(25):  # MAIL resets the commands-before-MAIL count
        assert codes(conv.send(b"MAIL FROM:<a@remote.example>\r\nRSET\r\n")) == [
            "250 2.1.0", "250 2.0.0"]
    assert len(env.clock.getDelayedCalls()) == 1
    # Activity just before the deadline moves it: counted from the last line.
    for _ in range(3):
        env.clock.advance(idle - 1)
        assert codes(conv.send(b"NOOP\r\n")) == ["250 2.0.0"]
    env.clock.advance(idle - 1)
    assert not conv.closed
    env.clock.advance(1.5)
    assert codes(conv.take()) == [f"{R.IDLE_TIMEOUT.code} {R.IDLE_TIMEOUT.status}"]
    assert conv.closed
    conv.close()
    assert env.clock.getDelayedCalls() == []
