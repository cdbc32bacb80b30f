"""Fast paths of the SMTP hot path give the same answers as the slow ones."""

from __future__ import annotations

import os

import pytest

from mssmtpd import parser as p
from mssmtpd.framing import DataReader, DataResult
from mssmtpd.protocol import _TransactionIds
from mssmtpd.replies import R

CLEAN = b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n"
BODIES: list[tuple[bytes, DataResult]] = [
    (CLEAN, DataResult(b"Subject: x\r\n\r\n.dot\r\nline\r\n", None)),
    (b".\r\n", DataResult(b"", None)),
    (b"a\nb\r\n.\r\n", DataResult(None, R.MESSAGE_BARE_LINE_ENDING)),
    (b"a\rb\r\n.\r\n", DataResult(None, R.MESSAGE_BARE_LINE_ENDING)),
    (b"ab\r\r\n.\r\n", DataResult(None, R.MESSAGE_BARE_LINE_ENDING)),
    (b"\nab\r\n.\r\n", DataResult(None, R.MESSAGE_BARE_LINE_ENDING)),
    (b"x" * 60 + b"\r\n.\r\n", DataResult(None, R.MESSAGE_LINE_TOO_LONG)),
    (b"short\r\n" * 20 + b".\r\n", DataResult(b"short\r\n" * 20, None)),
]


@pytest.mark.parametrize(("body", "expected"), BODIES)
def test_data_reader_same_result_at_every_split(body: bytes, expected: DataResult) -> None:
    for cut in range(len(body) + 1):
        reader = DataReader(max_size=10_000, max_line=50, normalise=False)
        rest = reader.feed(body[:cut])
        if rest is None:
            rest = reader.feed(body[cut:] + b"NEXT")
        else:
            rest += body[cut:] + b"NEXT"
        assert rest == b"NEXT", cut
        assert reader.result() == expected, cut


def test_data_reader_size_limit_on_the_fast_path() -> None:
    reader = DataReader(max_size=20, max_line=1000, normalise=False)
    assert reader.feed(b"y" * 30 + b"\r\n.\r\n") == b""
    assert reader.result().error == R.MESSAGE_TOO_BIG


def _has_ctl_reference(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def test_control_character_check_matches_the_definition() -> None:
    for code in range(0x300):
        text = f"MAIL FROM:<a{chr(code)}b@x>"
        assert p._has_ctl(text) == _has_ctl_reference(text), hex(code)


def test_transaction_ids_are_unique_and_reseeded() -> None:
    ids = _TransactionIds()
    first = [ids() for _ in range(1000)]
    assert len(set(first)) == 1000
    assert all(len(x) == 16 and int(x, 16) >= 0 for x in first)
    ids.reseed()
    assert ids()[:8] != first[0][:8]  # a fresh prefix (1 in 2**32 to collide)


def test_a_forked_worker_draws_its_own_prefix() -> None:
    from mssmtpd.protocol import _transaction_id

    parent = _transaction_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, _transaction_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child[:8] != parent[:8]
