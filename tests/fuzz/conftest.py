"""The fuzz tier: property-based tests of both protocol engines.

Hypothesis generates command sessions, from the grammar (every command name
the IMAP and SMTP parsers know, with arguments made of atoms, quoted strings,
literals with right and wrong octet counts, sequence sets, parenthesised
lists, long tokens, NULs, 8-bit octets, CR/LF oddities, LIST wildcards) and
by mutating real client sessions (Thunderbird, Outlook, mbsync, curl,
imaplib, swaks, Postfix). Each session runs on a fresh copy of a small store
(a few messages, quotas), through the real Services with an InlineRunner and
a Clock, over `StringTransport`: after LOGIN and SELECT for IMAP, after EHLO
on the mx and submission listeners (with and without AUTH) for SMTP, and
before them too. Input arrives whole, one command per call, byte by byte or
in random chunks. Properties:

* no exception escapes: nothing logged as an error or with a traceback
  (`log.error` with a reference id, Twisted's unhandled Deferred errors), no
  SERVERBUG / "Local error (ref ...)" / traceback text in any reply;
* every command gets exactly one reply: IMAP, exactly one tagged OK/NO/BAD
  with its tag, in order, unless the connection ends with ``* BYE``; SMTP,
  one reply per command line, DATA body and BDAT chunk (pipelined or not),
  unless it ends with 221/421;
* the reactor is never blocked long: each dataReceived call takes at most
  `fuzz_support.CPU_BOUND` of CPU per command it completes;
* memory stays bounded: the protocol holds no more input than the command
  in progress, and writes no more than a bound relative to what it read;
* the session stays in step: a NOOP sent after it is answered at once, and
  the idle timer still ends it (also when left mid-line, mid-literal, in
  IDLE, DATA, BDAT or an AUTH exchange) with ``* BYE`` or 421.

Defects found here keep a minimal reproducer in test_fuzz_regressions.py;
their inputs are in the generators (`imap_grammar.FIXED_*_CHARSETS`).
COMPRESS is not generated: its flow control is tested in
tests/protocol/test_imap_hardening.py.

Seeds are fixed: the examples derive from each test's source (Hypothesis'
``derandomize``), no example database is used, so a CI failure reproduces
with the same command. ``pytest -m fuzz`` runs the tier alone (well under a
minute with ``-n 2``); ``MSS_FUZZ_EXAMPLES=5000`` runs more examples and
``MSS_FUZZ_SEED=n`` explores from another seed. `bench/fuzz_worst.py` runs
the same generators and prints the slowest single command.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The transcript helpers (ImapEnv, SmtpEnv) live beside the protocol tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "protocol"))


@pytest.fixture(scope="session")
def imap_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imap_fuzz import build_template

    return build_template(tmp_path_factory.mktemp("fuzz-imap") / "template")


@pytest.fixture(scope="session")
def smtp_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smtp_fuzz import build_template

    return build_template(tmp_path_factory.mktemp("fuzz-smtp") / "template")


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory for the store copy of the running example: in memory
    (/dev/shm) where there is one, since every example commits (fsync) a
    few times and the tier measures CPU, not the disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="mss-fuzz-", dir=shm))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fuzz-run")


# Helpers of the root conftest, re-exported: `from conftest import make_settings`
# (tests/protocol/imap_transcript.py) may find this module instead of
# tests/conftest.py (same module name).
from store_support import (  # noqa: E402, F401
    TEST_DOMAIN,
    copy_store_template,
    make_settings,
    store_paths,
)
