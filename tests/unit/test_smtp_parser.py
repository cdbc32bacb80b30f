"""SMTP grammar and framing tables (pure: no Twisted, no store)."""

from __future__ import annotations

import re

import pytest

from mssmtpd import parser as p
from mssmtpd.client import dot_stuff
from mssmtpd.framing import DataReader, Line, LineReader, LineTooLong
from mssmtpd.queue import next_delay, parse_route
from mssmtpd.replies import R, format_reply

OK_COMMANDS: list[tuple[bytes, object]] = [
    (b"EHLO client.example", p.Ehlo("client.example")),
    (b"ehlo [192.0.2.1]", p.Ehlo("[192.0.2.1]")),
    (b"EHLO [IPv6:2001:db8::1]", p.Ehlo("[IPv6:2001:db8::1]")),
    (b"HELO relay.example.", p.Helo("relay.example.")),
    (b"MAIL FROM:<>", p.MailFrom("")),
    (b"MAIL FROM:<a@B.Example>", p.MailFrom("a@b.example")),
    (b"mail from: <a@b.example>", p.MailFrom("a@b.example")),
    (b"MAIL FROM:<@relay.example:a@b.example>", p.MailFrom("a@b.example")),
    (b'MAIL FROM:<"odd >name"@b.example>', p.MailFrom('"odd >name"@b.example')),
    (b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME",
     p.MailFrom("a@b.example", p.MailParams(size=1000, body="8BITMIME"))),
    (b"MAIL FROM:<a@b.example> RET=hdrs ENVID=QQ+2BZ",
     p.MailFrom("a@b.example", p.MailParams(ret="HDRS", envid="QQ+Z"))),
    (b"MAIL FROM:<a@b.example> AUTH=<>", p.MailFrom("a@b.example", p.MailParams(auth="<>"))),
    ("MAIL FROM:<élodie@hôpital.test> SMTPUTF8".encode(),
     p.MailFrom("élodie@hôpital.test", p.MailParams(smtputf8=True))),
    (b"RCPT TO:<x@hopital.test>", p.RcptTo("x@hopital.test")),
    (b"RCPT TO:<Postmaster>", p.RcptTo("postmaster")),
    (b"RCPT TO:<x@hopital.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40hopital.test",
     p.RcptTo("x@hopital.test", p.RcptParams(notify=("SUCCESS", "FAILURE"),
                                              orcpt="rfc822;x@hopital.test"))),
    (b"RCPT TO:<x@hopital.test> NOTIFY=NEVER", p.RcptTo("x@hopital.test", p.RcptParams(("NEVER",)))),
    (b"DATA", p.Data()),
    (b"BDAT 100 LAST", p.Bdat(100, True)),
    (b"RSET", p.Rset()),
    (b"NOOP anything", p.Noop()),
    (b"QUIT", p.Quit()),
    (b"VRFY someone", p.Vrfy("someone")),
    (b"EXPN list", p.Expn("list")),
    (b"HELP", p.Help("")),
    (b"STARTTLS", p.StartTls()),
    (b"AUTH PLAIN", p.Auth("PLAIN", None)),
    (b"AUTH plain AGEAYg==", p.Auth("PLAIN", b"\0a\0b")),
    (b"AUTH EXTERNAL =", p.Auth("EXTERNAL", b"")),
]


@pytest.mark.parametrize(("line", "expected"), OK_COMMANDS)
def test_valid_commands(line: bytes, expected: object) -> None:
    assert p.parse_command(line) == expected


BAD_COMMANDS: list[tuple[bytes, object]] = [
    (b"", R.SYNTAX_ERROR),
    (b"FOO bar", R.SYNTAX_ERROR),
    (b"EHLO", R.HELO_SYNTAX),
    (b"EHLO two words", R.HELO_SYNTAX),
    (b"EHLO bad_name!", R.HELO_SYNTAX),
    (b"EHLO [999.1.1.1]", R.HELO_SYNTAX),
    (b"MAIL FROM:a@b.example", R.SENDER_SYNTAX),
    (b"MAIL TO:<a@b.example>", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example", R.SENDER_SYNTAX),
    (b"MAIL FROM:<a@>", R.SENDER_SYNTAX),
    (b"MAIL FROM:<@b.example>", R.SENDER_SYNTAX),
    (b"MAIL FROM:<a..b@b.example>", R.SENDER_SYNTAX),
    (b"MAIL FROM:<" + b"a" * 65 + b"@b.example>", R.SENDER_SYNTAX),
    (b"MAIL FROM:<a@b.example>SIZE=1", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example> SIZE=x", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", R.BODY_8BIT_NEEDS_8BITMIME),
    (b"MAIL FROM:<a@b.example> RET=ALL", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example> ENVID=a+zz", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example> XFOO=1", R.PARAM_NOT_IMPLEMENTED),
    (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", R.PARAM_SYNTAX),
    ("MAIL FROM:<élodie@hopital.test>".encode(), R.SMTPUTF8_REQUIRED),
    (b"RCPT TO:<x@hopital.test> NOTIFY=NEVER,SUCCESS", R.PARAM_SYNTAX),
    (b"RCPT TO:<x@hopital.test> NOTIFY=SOMETIMES", R.PARAM_SYNTAX),
    (b"RCPT TO:<x@hopital.test> ORCPT=x+40y", R.PARAM_SYNTAX),
    (b"RCPT TO:<x@hopital.test> SIZE=1", R.PARAM_NOT_IMPLEMENTED),
    (b"RCPT TO:x@hopital.test", R.ADDRESS_SYNTAX),
    (b"RCPT TO:<>", R.ADDRESS_SYNTAX),
    (b"RCPT TO:<x@hopital.test\r>", R.SYNTAX_ERROR),
    (b"DATA now", R.PARAM_SYNTAX),
    (b"QUIT now", R.PARAM_SYNTAX),
    (b"STARTTLS x", R.PARAM_SYNTAX),
    (b"AUTH PLAIN ###", R.AUTH_BAD_BASE64),
    (b"AUTH", R.PARAM_SYNTAX),
    (b"BDAT x", R.PARAM_SYNTAX),
    (b"MAIL FROM:<a@b.example>\x00", R.SYNTAX_ERROR),
    (b"EHLO \xff\xfe", R.SYNTAX_ERROR),
]


@pytest.mark.parametrize(("line", "reply"), BAD_COMMANDS)
def test_invalid_commands(line: bytes, reply: object) -> None:
    assert p.parse_command(line) == p.ParseError(reply)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["a+b=c d", "é", "plain", "+"])
def test_xtext_round_trip(text: str) -> None:
    assert p.decode_xtext(p.encode_xtext(text)) == text


def test_multiline_reply_format_and_no_crlf_injection() -> None:
    assert format_reply(250, None, ["a", "b"]) == b"250-a\r\n250 b\r\n"
    assert R.OK.with_text("x\r\n250 evil").to_bytes() == b"250 2.0.0 x  250 evil\r\n"


# ---------------------------------------------------------------- framing


def _lines_byte_at_a_time(data: bytes, max_length: int = 100) -> list[object]:
    reader = LineReader(max_length)
    out: list[object] = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        while (item := reader.next_line()) is not None:
            out.append(item)
    return out


def test_line_reader_fed_one_byte_at_a_time() -> None:
    items = _lines_byte_at_a_time(b"EHLO a\r\nNOOP\nRSET\r\n")
    assert items == [Line(b"EHLO a", False), Line(b"NOOP", True), Line(b"RSET", False)]


def test_line_reader_refuses_long_lines_once_and_resynchronises() -> None:
    items = _lines_byte_at_a_time(b"X" * 250 + b"\r\nNOOP\r\n")
    assert items == [LineTooLong(), Line(b"NOOP", False)]


def _data(chunks: list[bytes], *, normalise: bool = False, max_size: int = 10_000,
          max_line: int = 100) -> tuple[object, bytes | None]:
    reader = DataReader(max_size=max_size, max_line=max_line, normalise=normalise)
    rest = None
    for chunk in chunks:
        if rest is not None:
            break  # the server hands what follows back to command mode
        rest = reader.feed(chunk)
    result = reader.result() if rest is not None else None
    return result, rest


def _bytes(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


@pytest.mark.parametrize("split", [False, True])
def test_data_reader_unstuffs_and_stops_at_crlf_dot_crlf(split: bool) -> None:
    wire = b"Subject: a\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
    result, rest = _data(_bytes(wire) if split else [wire])
    if split:
        # One byte at a time: the rest is handed back as it comes.
        assert rest == b""
    else:
        assert rest == b"QUIT\r\n"
    assert result.content == b"Subject: a\r\n\r\n.dot\r\n"  # type: ignore[attr-defined]


SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r"]


@pytest.mark.parametrize("variant", SMUGGLING)
@pytest.mark.parametrize("normalise", [False, True])
def test_smuggling_variants_never_end_data(variant: bytes, normalise: bool) -> None:
    body = b"Subject: a\r\n\r\nx" + variant + b"MAIL FROM:<evil@x.example>\r\n"
    reader = DataReader(max_size=10_000, max_line=100, normalise=normalise)
    for b in _bytes(body):
        assert reader.feed(b) is None, variant
    assert reader.feed(b".\r\n") == b""
    result = reader.result()
    if normalise:
        assert result.content is not None and b"MAIL FROM:<evil@x.example>\r\n" in result.content
        assert b"\r\n.\r\n" in result.content or b"\r\n.\r\n" not in body
    else:
        assert result.error == R.MESSAGE_BARE_LINE_ENDING


def test_data_reader_long_line_is_swallowed_not_split() -> None:
    wire = b"a" * 150 + b"\r\n.\r\n" + b"RSET\r\n"
    # 150 > 100: the whole line is discarded, its tail is not a fresh line start.
    result, rest = _data([wire[:120], wire[120:]])
    assert rest == b"RSET\r\n"
    assert result.error == R.MESSAGE_LINE_TOO_LONG  # type: ignore[attr-defined]


def test_data_reader_long_line_tail_starting_with_dot_is_not_the_end() -> None:
    reader = DataReader(max_size=10_000, max_line=100, normalise=False)
    assert reader.feed(b"a" * 101) is None
    assert reader.feed(b".\r\nQUIT\r\n") is None  # "." here continues the long line
    assert reader.feed(b".\r\n") == b""
    assert reader.result().error == R.MESSAGE_LINE_TOO_LONG


def test_data_reader_size_limit() -> None:
    result, _ = _data([b"x" * 50 + b"\r\n"] * 5 + [b".\r\n"], max_size=200)
    assert result.error == R.MESSAGE_TOO_BIG  # type: ignore[attr-defined]


def test_data_reader_stuffed_line_of_max_length_with_bare_cr_byte_by_byte() -> None:
    """The stuffing dot is not part of the line: a line of max_line - 2
    bytes after it, ended by a bare CR (normalised), is accepted whether the
    bytes come at once or one by one (found by the property below)."""
    stream = b"." + b"y" * 58 + b"\r\r\n.\r\n"
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        result, rest = _data(chunks, normalise=True, max_line=60)
        assert rest == b"" and result.content == b"y" * 58 + b"\r\n\r\n"  # type: ignore[attr-defined]


def test_empty_message() -> None:
    result, rest = _data([b".\r\n"])
    assert rest == b"" and result.content == b""  # type: ignore[attr-defined]


# ---------------------------------------------------------------- queue helpers


def test_backoff_doubles_and_caps() -> None:
    assert [next_delay(n, 60, 600) for n in (1, 2, 3, 4, 5, 100)] == [60, 120, 240, 480, 600, 600]


@pytest.mark.parametrize(("route", "expected"), [
    ("127.0.0.1:2525", ("127.0.0.1", 2525)),
    ("mx.example", ("mx.example", 25)),
    ("[::1]:26", ("::1", 26)),
])
def test_parse_route(route: str, expected: tuple[str, int]) -> None:
    assert parse_route(route) == expected


# ---------------------------------------------------------------- property: chunking never matters

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = [b"a", b"bc", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n",
           b"MAIL FROM:<x@y>", b"x" * 40]


def _run(chunks: list[bytes], normalise: bool) -> tuple[object, bytes | None]:
    reader = DataReader(max_size=300, max_line=60, normalise=normalise)
    rest: bytes | None = None
    for i, chunk in enumerate(chunks):
        rest = reader.feed(chunk)
        if rest is not None:
            rest += b"".join(chunks[i + 1:])
            return reader.result(), rest
    return None, None


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=40),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
       normalise=st.booleans())
def test_data_reader_result_does_not_depend_on_chunking(
        pieces: list[bytes], cuts: list[int], normalise: bool) -> None:
    stream = b"".join(pieces) + b"\r\n.\r\nTAIL"
    whole = _run([stream], normalise)
    bytewise = _run([stream[i:i + 1] for i in range(len(stream))], normalise)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    pieces_cut = [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    # Same message accepted (byte for byte) or refused, same bytes handed back
    # to command mode. (Which refusal is reported first may differ: a line can
    # be too long before its bare CR arrives.)
    outcomes = [(r.content, r.error is None, rest)  # type: ignore[union-attr]
                for r, rest in (whole, bytewise, _run(pieces_cut, normalise))]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    result, rest = whole
    assert rest is not None and rest.endswith(b"TAIL")
    content = result.content  # type: ignore[union-attr]
    if content is not None:
        # Whatever was accepted is clean CRLF text, and relaying it (dot-stuffed)
        # to a reader like ours gives back exactly the same message.
        assert not re.search(rb"\r(?!\n)|(?<!\r)\n", content)
        if content:
            again = DataReader(max_size=10_000, max_line=100, normalise=False)
            assert again.feed(dot_stuff(content)) == b""
            assert again.result().content == content
