"""RFC 3501 ``date`` (SEARCH) and ``date-time`` (APPEND) syntax."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from imapd.parser.tokens import Cursor, ParseError

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NUMBER = {m.encode(): i + 1 for i, m in enumerate(MONTHS)}


def _date_text(raw: bytes) -> date:
    # date-day "-" date-month "-" date-year; date-day = 1*2DIGIT (a leading space
    # is tolerated: the date-time form uses date-day-fixed).
    parts = raw.strip(b" ").split(b"-")
    if len(parts) != 3:
        raise ParseError("Invalid date")
    day, month, year = parts
    if not (day.isdigit() and 1 <= len(day) <= 2 and year.isdigit() and len(year) == 4):
        raise ParseError("Invalid date")
    m = _MONTH_NUMBER.get(month.upper())
    if m is None:
        raise ParseError("Invalid date")
    try:
        return date(int(year), m, int(day))
    except ValueError:
        raise ParseError("Invalid date") from None


def parse_date(cur: Cursor) -> date:
    """``date = date-text / DQUOTE date-text DQUOTE``."""
    if cur.peek() == 0x22:
        return _date_text(cur.quoted())
    raw = cur.take_while(
        frozenset(b"0123456789-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    )
    return _date_text(raw)


def parse_date_time_text(raw: bytes) -> datetime:
    """``dd-Mon-yyyy hh:mm:ss +zzzz`` (without the quotes) -> aware datetime."""
    # date-day-fixed may be " 7": keep the leading space out of the split.
    parts = raw.lstrip(b" ").split(b" ")
    if len(parts) != 3:
        raise ParseError("Invalid date-time")
    day = _date_text(parts[0])
    clock = parts[1].split(b":")
    zone = parts[2]
    if len(clock) != 3 or not all(len(c) == 2 and c.isdigit() for c in clock):
        raise ParseError("Invalid date-time")
    if len(zone) != 5 or zone[0:1] not in (b"+", b"-") or not zone[1:].isdigit():
        raise ParseError("Invalid date-time")
    hours, minutes, seconds = (int(c) for c in clock)
    zh, zm = int(zone[1:3]), int(zone[3:5])
    if hours > 23 or minutes > 59 or seconds > 60 or zm > 59:
        raise ParseError("Invalid date-time")
    offset = timedelta(hours=zh, minutes=zm)
    if zone[0:1] == b"-":
        offset = -offset
    try:
        return datetime(
            day.year, day.month, day.day, hours, minutes, min(seconds, 59), tzinfo=timezone(offset)
        )
    except ValueError:
        raise ParseError("Invalid date-time") from None


def parse_date_time(cur: Cursor) -> datetime:
    """``date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE``."""
    if cur.peek() != 0x22:
        raise ParseError("Invalid date-time")
    return parse_date_time_text(cur.quoted())
