"""Denial-of-service regressions: one client must never stall a worker.

Each test here failed (or ran for minutes) before its fix: LIST patterns that
made a regular expression backtrack, COMPRESS=DEFLATE input inflating without
bound, pipelined input buffered without limit while the client reads nothing.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import compliance_support
from compliance_support import ImapEnv
from imap_transcript import SECRETARY2, ImapClient
from ticking_clock import TickingClock

from imapd.commands.listing import MAX_PATTERNS
from imapd.protocol import INFLATE_CHUNK, INPUT_HIGH_WATER
from storage.interface import MessageStore

env = compliance_support.env


def _folders(store: MessageStore, address: str, count: int) -> None:
    mailbox = store.get_mailbox(address)
    for i in range(count):
        store.create_folder(mailbox.id, f"Projets/P{i // 40}/dossier-{i}")


def test_list_with_many_percent_wildcards_answers_at_once(env: ImapEnv) -> None:
    c = env.login()
    start = time.process_time()
    out = c.ok('LIST "" "' + "%" * 40 + '"')
    out += c.ok('LIST "" "' + "*" * 11 + '"')
    assert time.process_time() - start < 1.0
    assert b'"INBOX"' in out or b" INBOX\r\n" in out


def test_thousand_wildcards_against_thousand_folders_well_under_a_second(env: ImapEnv) -> None:
    from imap_transcript import SECRETARY

    _folders(env.store, SECRETARY, 1000)
    c = env.login()
    for pattern in ("%" * 1000, "%*" * 500, "*a" * 500, "P%/%/%" * 100 + "*"):
        start = time.process_time()
        _, done = c.tagged(f'LIST "" "{pattern}"')
        assert done.split(b" ")[1] == b"OK", done
        assert time.process_time() - start < 0.5, pattern[:20]
    # The patterns still mean what they say.
    out = c.ok('LIST "Projets/" "P1/%"')
    assert out.count(b"* LIST") == 40


def test_list_bounds_the_number_of_patterns(env: ImapEnv) -> None:
    c = env.login()
    many = " ".join(f'"p{i}*"' for i in range(MAX_PATTERNS + 1))
    _, done = c.tagged(f'LIST "" ({many})')
    assert done.split(b" ")[1] == b"BAD", done
    few = " ".join(f'"p{i}*"' for i in range(MAX_PATTERNS - 1))
    out = c.ok(f'LIST "" ({few} "INBOX")')
    assert b"INBOX" in out


# ----------------------------------------------------------- flow control


def _ticking_env(tmp_path: Path, store: MessageStore) -> ImapEnv:
    from conftest import make_settings
    from imap_transcript import LISTENERS, populate

    populate(store)
    return ImapEnv(make_settings(tmp_path, listeners=LISTENERS), store, clock=TickingClock())


def _compress(c: ImapClient) -> Any:
    _, done = c.tagged("COMPRESS DEFLATE")
    assert b"OK" in done
    return zlib.compressobj(9, zlib.DEFLATED, -15)


def _inflater() -> Any:
    return zlib.decompressobj(-15)


def test_compressed_flood_is_inflated_as_needed_and_yields(tmp_path: Path, store: MessageStore) -> None:
    """15 KB of DEFLATE inflating to 10 MiB of pipelined NOOPs used to block a
    worker for ~24 s inside one dataReceived."""
    env = _ticking_env(tmp_path, store)
    c = env.login()
    deflate = _compress(c)
    inflate = _inflater()
    bomb = deflate.compress(b"n NOOP\r\n" * (10 * 1024 * 1024 // 8)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 64 * 1024
    start = time.process_time()
    c.proto.dataReceived(bomb)
    assert time.process_time() - start < 0.5
    assert c.proto.reader.buffered <= INFLATE_CHUNK + 64 * 1024
    answered = inflate.decompress(c.read()).count(b"n OK")
    assert 0 < answered < 10_000  # the rest waits for its next turns
    # Each later turn is short and makes progress; other connections run between them.
    other = env.login(SECRETARY2)
    for _ in range(5):
        start = time.process_time()
        env.clock.advance(0)
        assert time.process_time() - start < 0.5
        assert other.ok("NOOP") == b""
    more = inflate.decompress(c.read()).count(b"n OK")
    assert more > 0
    assert c.proto.reader.buffered <= INFLATE_CHUNK + 64 * 1024


def test_inflated_input_has_the_same_line_limit(tmp_path: Path, store: MessageStore) -> None:
    env = _ticking_env(tmp_path, store)
    c = env.login()
    deflate = _compress(c)
    inflate = _inflater()
    limit = env.settings.limits.command_line_length
    line = b"a1 NOOP " + b"x" * (limit * 4) + b"\r\na2 NOOP\r\n"
    c.proto.dataReceived(deflate.compress(line) + deflate.flush(zlib.Z_SYNC_FLUSH))
    out = inflate.decompress(c.read())
    assert b"a1 BAD" in out and b"a2 OK" in out
    assert c.proto.reader.buffered <= limit + INFLATE_CHUNK


def test_broken_compressed_input_ends_the_session(env: ImapEnv) -> None:
    c = env.login()
    _compress(c)
    c.proto.dataReceived(b"\xff" * 64)
    assert c.closed


def test_a_client_that_does_not_read_stops_being_read(tmp_path: Path, store: MessageStore) -> None:
    """Pipelined input used to be buffered without bound while commands
    waited (+231 MiB for 210 MB sent). Now the socket is not read while more
    than INPUT_HIGH_WATER octets wait, and is read again once they can be processed."""
    env = _ticking_env(tmp_path, store)
    c = env.login()
    c.proto.pauseProducing()  # the client reads none of our replies
    chunk = b"n NOOP\r\n" * 8192  # 64 KiB
    sent = 0
    while c.transport.producerState != "paused" and sent < 50 * 1024 * 1024:
        c.proto.dataReceived(chunk)
        sent += len(chunk)
    assert c.transport.producerState == "paused", "the socket is still read"
    assert sent <= INPUT_HIGH_WATER + 2 * len(chunk)
    assert c.proto.reader.buffered <= INPUT_HIGH_WATER + len(chunk)
    # The client reads again: the held commands run, in turns, and the socket is read again.
    c.proto.resumeProducing()
    for _ in range(10_000):
        if c.transport.producerState != "paused":
            break
        env.clock.advance(0)
    assert c.transport.producerState == "producing"
    assert c.read().count(b"n OK") == sent // 8
