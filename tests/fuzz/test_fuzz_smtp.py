"""SMTP fuzz properties (see conftest.py for the tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_support import fuzz_seed, fuzz_settings
from hypothesis import given
from smtp_fuzz import SmtpCase, check_exact, check_loose, raw_smtp_cases, run_case, smtp_cases
from smtp_grammar import UNIMPLEMENTED, VERBS

from mssmtpd import parser as p

# A failure is shrunk to a minimal session before it is reported, which may
# take minutes (Hypothesis stops shrinking after five).
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]


def test_every_verb_is_generated() -> None:
    samples = {"EHLO": b"EHLO a.test", "HELO": b"HELO a.test", "MAIL": b"MAIL FROM:<>",
               "RCPT": b"RCPT TO:<a@b.test>", "BDAT": b"BDAT 0 LAST", "AUTH": b"AUTH PLAIN",
               "VRFY": b"VRFY x", "EXPN": b"EXPN x"}
    types = {type(p.parse_command(samples.get(verb, verb.encode()))) for verb in VERBS}
    assert types == set(p.COMMAND_TYPES)
    assert set(UNIMPLEMENTED) == p.UNIMPLEMENTED_VERBS


@fuzz_settings(150)
@fuzz_seed
@given(case=smtp_cases())
def test_each_command_gets_one_reply(case: SmtpCase, smtp_template: Path, scratch: Path) -> None:
    check_exact(case, run_case(case, smtp_template, scratch / "example"))


@fuzz_settings(100)
@fuzz_seed
@given(case=raw_smtp_cases())
def test_mutated_streams_never_break_the_server(case: SmtpCase, smtp_template: Path,
                                                scratch: Path) -> None:
    check_loose(case, run_case(case, smtp_template, scratch / "example"))
