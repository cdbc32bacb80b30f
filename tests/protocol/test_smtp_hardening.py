"""Denial-of-service regressions on the SMTP engine: a long message in many
BDAT chunks, and clients that pipeline without reading their replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import SmtpEnv, add_user, codes, inbox, make_env

from mssmtpd.replies import R

DOMAIN = "hopital.test"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, f"dr.martin@{DOMAIN}")
    return make_env(tmp_path, store)


def test_a_message_in_many_bdat_chunks_is_not_cut_off(env: SmtpEnv) -> None:
    """2 MB in 64 KiB chunks used to end at chunk 21 with "421 Too many
    commands without a transaction": chunks are the transaction itself."""
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"))[-1] == "250 2.1.5"
    body = b"Subject: chunks\r\n\r\n" + b"".join(b"line %06d %s\r\n" % (i, b"x" * 50)
                                                for i in range(32 * 1024))
    chunk = 64 * 1024
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    assert len(pieces) > 30
    out = b""
    for i, piece in enumerate(pieces):
        last = b" LAST" if i == len(pieces) - 1 else b""
        out += conv.send(b"BDAT %d%s\r\n" % (len(piece), last) + piece)
    replies = codes(out)
    assert replies[:-1] == [f"{R.BDAT_OK.code} {R.BDAT_OK.status}"] * (len(pieces) - 1), replies[-3:]
    assert replies[-1] == f"{R.DELIVERED.code} {R.DELIVERED.status}" and not conv.closed
    (stored,) = inbox(env.store, f"dr.martin@{DOMAIN}")
    assert stored.endswith(body)


def test_commands_outside_a_transaction_still_count(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(b"NOOP\r\n" * (env.settings.limits.commands_before_mail + 1))
    assert codes(out)[-1] == f"{R.TOO_MANY_COMMANDS.code} {R.TOO_MANY_COMMANDS.status}"
    assert conv.closed
