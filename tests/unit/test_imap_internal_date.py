"""imapd.responses.internal_date: INTERNALDATE never depends on the process locale."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from imapd.parser.dates import parse_date_time_text
from imapd.responses import internal_date

ENGLISH = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FRENCH = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
          "nov.", "déc.")


@pytest.fixture
def french_strftime(monkeypatch: pytest.MonkeyPatch) -> None:
    """What strftime("%b") gives under LC_TIME=fr_FR (no such locale needs to
    be installed: datetime.strftime goes through time.strftime)."""
    real = time.strftime

    def fake(fmt: str, t: object = None) -> str:
        assert isinstance(t, tuple | time.struct_time)
        return real(fmt.replace("%b", FRENCH[t[1] - 1]), t)

    monkeypatch.setattr(time, "strftime", fake)
    assert datetime(2026, 2, 1).strftime("%b") == "févr."  # the fake is in effect


@pytest.mark.parametrize("month", range(1, 13))
def test_internal_date_month_is_english_whatever_the_locale(french_strftime: None,
                                                            month: int) -> None:
    moment = datetime(2026, month, 7, 9, 5, 3, tzinfo=UTC)
    assert internal_date(moment) == f'"07-{ENGLISH[month - 1]}-2026 09:05:03 +0000"'


@pytest.mark.parametrize(("moment", "text"), [
    (datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))),
     '"07-Feb-1994 21:52:25 -0800"'),
    (datetime(2026, 11, 27, 14, 0, 0), '"27-Nov-2026 14:00:00 +0000"'),  # naive = UTC
    (datetime(2026, 6, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
     '"01-Jun-2026 00:00:00 +0530"'),
])
def test_internal_date_format_and_round_trip(moment: datetime, text: str) -> None:
    assert internal_date(moment) == text
    parsed = parse_date_time_text(text.strip('"').encode())
    assert parsed == (moment if moment.tzinfo else moment.replace(tzinfo=UTC))
