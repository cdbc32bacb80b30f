"""BINARY (RFC 3516): FETCH BINARY[part]<partial>, BINARY.PEEK and
BINARY.SIZE with the transfer encoding removed (base64, quoted-printable),
literal8 in the answer when the content holds NUL, NO [UNKNOWN-CTE] for an
encoding the server does not know; APPEND of literal8 (NUL allowed only
there, the same size limits as other literals; parts declared binary are
stored in base64 and BINARY gives them back)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import SECRETARY, ImapEnv, deliver, make_env, populate

from conf.settings import LimitSettings
from imapd.binary import encode_binary_parts
from storage.mime import parse_message

PAYLOAD = bytes(range(256))  # every octet, NUL included
MULTI = (
    b"From: <dr.martin@hopital.test>\r\n"
    b"To: <secretaire@hopital.test>\r\n"
    b"Subject: Examens\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"R=C3=A9sultats normaux.=\r\n"
    b" Fin.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n") +
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n`\r\nend\r\n"
    b"--b1--\r\n"
)
QP_TEXT = "R\u00e9sultats normaux. Fin.".encode()


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    deliver(store, SECRETARY, MULTI)
    return make_env(tmp_path, store)


def test_binary_fetch_decodes_parts(env: ImapEnv) -> None:
    c = env.login()
    assert b" BINARY" in c.ok("CAPABILITY")
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.PEEK[1])")
    assert out == b"* 1 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[2] 256 BINARY[1] {%d}\r\n%s)\r\n" % (
        len(QP_TEXT), len(QP_TEXT), QP_TEXT)
    # Content with NUL comes as literal8 (RFC 3516 4.3).
    out = c.ok("FETCH 1 BINARY.PEEK[2]")
    assert out == b"* 1 FETCH (BINARY[2] ~{256}\r\n" + PAYLOAD + b")\r\n"
    out = c.ok("FETCH 1 BINARY.PEEK[2]<250.10>")
    # No NUL in these six octets: a plain literal.
    assert out == b"* 1 FETCH (BINARY[2]<250> {6}\r\n" + PAYLOAD[250:] + b")\r\n"
    out = c.ok("FETCH 1 BINARY.PEEK[2]<0.4>")
    assert out == b"* 1 FETCH (BINARY[2]<0> ~{4}\r\n" + PAYLOAD[:4] + b")\r\n"
    assert b"\\Seen" not in c.ok("FETCH 1 FLAGS")


def test_binary_sets_seen_and_peek_does_not(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok("FETCH 1 BINARY.PEEK[1]")
    assert b"\\Seen" not in c.ok("FETCH 1 FLAGS")
    out = c.ok("FETCH 1 BINARY[1]")
    assert b"FLAGS (\\Seen" in out or b"\\Seen" in c.ok("FETCH 1 FLAGS")


def test_unknown_transfer_encoding(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    untagged, done = c.tagged("FETCH 1 (BINARY.PEEK[3] BINARY.SIZE[2])")
    assert re.match(rb"t\d+ NO \[UNKNOWN-CTE\] ", done), done
    assert untagged == b"* 1 FETCH (BINARY.SIZE[2] 256)\r\n"
    _, done = c.tagged("FETCH 1 BINARY.SIZE[3]")
    assert b"NO [UNKNOWN-CTE]" in done


def test_binary_syntax_limits(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    for bad in ("BINARY[1.MIME]", "BINARY[HEADER]", "BINARY.SIZE[1]<0.1>", "BINARY.SIZE"):
        _, done = c.tagged(f"FETCH 1 {bad}")
        assert b" BAD " in done, bad


def test_append_literal8_binary_part_round_trip(env: ImapEnv) -> None:
    raw = (b"Subject: scan\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
           b"--zz\r\nContent-Type: text/plain\r\n\r\nVoir PJ\r\n"
           b"--zz\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           + PAYLOAD + b"\r\n--zz--\r\n")
    c = env.login()
    # NUL is refused in a plain literal (RFC 3501 CHAR8) ...
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s" % (len(raw), raw))
    assert out == b"a1 BAD NUL in a literal (binary data goes in a literal8 ~{n})\r\n"
    # ... and taken in a literal8.
    out = c.cmd(b"a2 APPEND INBOX ~{%d+}\r\n%s" % (len(raw), raw))
    m = re.fullmatch(rb"a2 OK \[APPENDUID \d+ (\d+)\] APPEND completed\r\n", out)
    assert m, out
    uid = int(m.group(1))
    c.ok("SELECT INBOX")
    out = c.ok(f"UID FETCH {uid} (BINARY.PEEK[2] BINARY.SIZE[2] BODY.PEEK[2] BODYSTRUCTURE)")
    assert b"BINARY[2] ~{256}\r\n" + PAYLOAD + b" " in out
    assert b"BINARY.SIZE[2] 256" in out
    # Stored in base64: BODY[] and every non-BINARY client see no NUL.
    body = re.search(rb"BODY\[2\] \{(\d+)\}\r\n", out)
    assert body
    encoded = out[body.end() : body.end() + int(body.group(1))]
    assert base64.b64decode(encoded) == PAYLOAD and b"\x00" not in encoded
    assert b'("image" "png" NIL NIL NIL "base64"' in out.replace(b"IMAGE", b"image").replace(
        b"PNG", b"png").replace(b"BASE64", b"base64")
    whole = c.ok(f"UID FETCH {uid} BODY.PEEK[]")
    assert b"\x00" not in whole


def test_literal8_has_the_limits_of_literals(tmp_path: Path, store: Any) -> None:
    populate(store)
    env = make_env(tmp_path, store, limits=LimitSettings(message_size=1024))
    c = env.login()
    big = b"Subject: x\r\n\r\n" + b"\x00" * 2000
    out = c.cmd(b"a1 APPEND INBOX ~{%d}" % len(big))
    assert out == b"a1 NO [TOOBIG] Message too big\r\n"
    out = c.cmd(b"a2 APPEND INBOX ~{%d+}\r\n%s" % (len(big), big))
    assert out == b"a2 NO [TOOBIG] Message too big\r\n"
    # literal8 carries message data only.
    out = c.cmd(b"a3 SELECT ~{5+}\r\nINBOX")
    assert out == b"a3 BAD literal8 not allowed here\r\n"
    # Before login no literal8 either (nor any APPEND).
    d = env.connect()
    assert d.cmd(b"a4 APPEND INBOX ~{5}") == b"a4 BAD APPEND not allowed now\r\n"


# ------------------------------------------------------------ the converter


def test_encode_binary_parts_keeps_everything_else() -> None:
    plain = b"Subject: a\r\n\r\nhello\r\n"
    assert encode_binary_parts(plain) is plain
    top = b"Subject: a\r\nContent-Transfer-Encoding: Binary\r\nX-A: b\r\n\r\n\x00\x01\xff"
    out = encode_binary_parts(top)
    assert out == (b"Subject: a\r\nContent-Transfer-Encoding: base64\r\nX-A: b\r\n\r\n"
                   + base64.b64encode(b"\x00\x01\xff"))
    nested = (b'Content-Type: multipart/mixed; boundary="q"\r\n\r\npreamble\r\n'
              b"--q\r\nContent-Type: message/rfc822\r\n\r\n"
              b"Subject: inner\r\nContent-Transfer-Encoding: binary\r\n\r\n"
              + b"\x00" * 100 + b"\r\n--q--\r\nepilogue\r\n")
    out = encode_binary_parts(nested)
    assert out.startswith(b'Content-Type: multipart/mixed; boundary="q"\r\n\r\npreamble\r\n')
    assert out.endswith(b"\r\n--q--\r\nepilogue\r\n")
    assert b"\x00" not in out
    meta = parse_message(out)
    inner = meta["body"]["parts"][0]["message"]
    assert inner["encoding"].lower() == "base64"
    data = out[inner["body_start"] : inner["body_end"]]
    assert base64.b64decode(data) == b"\x00" * 100
    assert max(len(line) for line in data.split(b"\r\n")) <= 76


def test_encode_binary_parts_takes_a_binary_message_global_whole() -> None:
    """message/global may come in any encoding (RFC 6532 3.5): a binary one
    is encoded whole and stays a leaf, as before it was parsed as a message."""
    raw = (b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n'
           b"--q\r\nContent-Type: message/global\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           b"Subject: inner\r\n\r\n" + b"\x00" * 10 + b"\r\n--q--\r\n")
    out = encode_binary_parts(raw)
    part = parse_message(out)["body"]["parts"][0]
    assert part["encoding"] == "base64" and "message" not in part
    assert base64.b64decode(out[part["body_start"]:part["body_end"]]) == (
        b"Subject: inner\r\n\r\n" + b"\x00" * 10)
