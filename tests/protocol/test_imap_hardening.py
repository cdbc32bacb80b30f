"""Denial-of-service regressions: one client must never stall a worker.

Each test here failed (or ran for minutes) before its fix: LIST patterns that
made a regular expression backtrack, COMPRESS=DEFLATE input inflating without
bound, pipelined input buffered without limit while the client reads nothing.
"""

from __future__ import annotations

import time

import compliance_support
from compliance_support import ImapEnv

from imapd.commands.listing import MAX_PATTERNS
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
