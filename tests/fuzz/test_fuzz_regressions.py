"""Defects the fuzz tier found, each as its minimal reproducer.

Each was marked xfail(strict=True) until its fix; their inputs are back in
the generators (`imap_grammar.FIXED_*_CHARSETS`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import ImapEnv, make_env, populate

pytestmark = pytest.mark.fuzz


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


@pytest.mark.parametrize("charset", ["ZLIB", "BZ2", "ROT13"])
def test_search_charset_naming_a_non_text_codec_is_answered(env: ImapEnv, charset: str) -> None:
    """imapd/parser/items.py search_decoder: codecs.lookup() accepts Python's
    bytes-to-bytes and str-to-str codecs; their decode raises zlib.error,
    OSError or TypeError, which escape CommandReader.next_event and
    dataReceived: the command gets no reply (Twisted drops the connection)."""
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.cmd(f"a1 SEARCH CHARSET {charset} TEXT x")
    assert out.startswith((b"a1 NO ", b"a1 BAD ")), out


@pytest.mark.parametrize("charset", ["rot13", "zlib", "hex", "base64", "uu", "bz2", "idna",
                                     "punycode"])
def test_search_a_message_declaring_a_non_text_charset(
        env: ImapEnv, charset: str, caplog: pytest.LogCaptureFixture) -> None:
    """imapd/search.py _decode_text: codecs.lookup() accepts the charset a
    message declares, then bytes.decode(charset, "replace") raises LookupError
    (not a text encoding), UnicodeError (idna) or UnicodeDecodeError (punycode
    on 8-bit octets): every SEARCH TEXT/BODY of the folder answers
    NO [SERVERBUG]. Anyone can plant such a message by SMTP."""
    message = (f"Subject: x\r\nContent-Type: text/plain; charset={charset}\r\n\r\n"
               "hello r\xe9sultat\r\n").encode("latin-1")
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n" % len(message) + message)
    assert b"a1 OK" in out, out
    with caplog.at_level(logging.ERROR):
        out = c.cmd("a2 SEARCH TEXT hello")
    assert out == b"* SEARCH 1\r\na2 OK SEARCH completed\r\n", out
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
