"""Small response-formatting helpers for the server (strings, literals,
mailbox names, dates). The typed response catalogue is `imapd.responses`;
these are the few bits the handlers need to build data lines.
"""

from __future__ import annotations

from datetime import datetime

from imapd.parser import mutf7
from imapd.responses import format_date_time

_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 32)) | {127}


def quote(value: str | None) -> str:
    """A quoted string (or NIL) of 7-bit text; 8-bit data goes through `imapd.responses.string`."""
    if value is None:
        return "NIL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox(name: str, utf8: bool = False) -> str:
    """A mailbox name on the wire: modified UTF-7, quoted; UTF-8, quoted, to
    a session that enabled UTF8=ACCEPT (RFC 6855 3: no modified UTF-7 then).
    Names never hold control characters (the parser and the store refuse
    them), so a quoted string always fits."""
    if utf8:
        return quote(name)
    encoded = mutf7.encode(name).decode("ascii")
    return quote(encoded)


def internal_date(value: datetime) -> str:
    # Not strftime("%b"): month names follow LC_TIME, and a server started
    # under fr_FR would send "27-nov.-2026" that no client can parse.
    return '"' + format_date_time(value) + '"'

