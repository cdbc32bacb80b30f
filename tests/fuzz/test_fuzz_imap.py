"""IMAP fuzz properties (see conftest.py for the tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_support import fuzz_seed, fuzz_settings
from hypothesis import given
from imap_fuzz import (
    ImapCase,
    check_exact,
    check_loose,
    imap_cases,
    raw_imap_cases,
    run_case,
)
from imap_grammar import COMMAND_NAMES, EXCLUDED_COMMANDS, NOISY, VALID

from imapd.parser.grammar import KNOWN_COMMANDS

# A failure is shrunk to a minimal session before it is reported, which may
# take minutes (Hypothesis stops shrinking after five).
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]


def test_every_command_is_generated() -> None:
    expected = KNOWN_COMMANDS - {"UID"} - EXCLUDED_COMMANDS
    assert set(COMMAND_NAMES) == set(VALID.arguments) == set(NOISY.arguments) == expected


@fuzz_settings(100)
@fuzz_seed
@given(case=imap_cases())
def test_each_command_gets_one_tagged_reply(case: ImapCase, imap_template: Path,
                                            scratch: Path) -> None:
    check_exact(case, run_case(case, imap_template, scratch / "example"))


@fuzz_settings(60)
@fuzz_seed
@given(case=raw_imap_cases())
def test_mutated_streams_never_break_the_server(case: ImapCase, imap_template: Path,
                                                scratch: Path) -> None:
    check_loose(run_case(case, imap_template, scratch / "example"))
