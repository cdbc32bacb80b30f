"""SMTP compliance transcripts: RFC 5321 and its extensions, Postfix where the RFC leaves room.

Client sends / server answers on StringTransport against a real SQLite store
(the `smtp_transcript` helpers). Every test names the section it checks and
asserts the literal "code enhanced-code" pair, so a wrong catalogue entry fails
here too. Choices where the RFC leaves room (documented in the test):

- VRFY answers 252 2.5.0 (RFC 5321 3.5.3, 7.3: a server that will not reveal
  its users says "cannot verify, will attempt delivery"), never 250 nor 550.
- EXPN answers 502 5.5.1 (RFC 5321 3.5.2 / 7.3 allow disabling it).
- A malformed parameter value answers 501 5.5.4, an unknown parameter 555 5.5.4
  (RFC 5321 4.1.1.11 reserves 555 for "not recognised or not implemented";
  Postfix answers the same pair).
- DATA with no accepted RCPT: 503 5.5.1, whether or not RCPTs were refused
  (RFC 5321 3.3 allows 503 or 554; Postfix says 554 5.5.1 after refused ones).
- Command lines: 512 octets (RFC 5321 4.5.3.1.4), MAIL/RCPT up to 2048 because
  the SIZE/BODY/RET/ENVID/AUTH/SMTPUTF8 and NOTIFY/ORCPT extensions each raise
  the limit (RFC 1870 3, RFC 3461 4, RFC 4954 5; Postfix line_length_limit),
  AUTH and SASL responses up to 12288 (RFC 4954 4: 500 5.5.6 beyond).
- QUIT, RSET, DATA with an argument: 501 5.5.4 (RFC 5321 4.1.1.5/4.1.1.10
  grammar has none; Postfix is lenient on QUIT only).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import PASSWORD, Conversation, SmtpEnv, add_user, codes, inbox, make_env
from twisted.internet.testing import StringTransport

from conf.settings import LimitSettings
from mssmtpd.delivery import with_protocol
from mssmtpd.replies import R, Reply

DOMAIN = "hopital.test"
MARTIN = f"dr.martin@{DOMAIN}"
MSG = b"From: <a@remote.example>\r\nSubject: compliance\r\n\r\nhello\r\n"


def c(*replies: Reply) -> list[str]:
    return [f"{r.code} {r.status}" if r.status else str(r.code) for r in replies]


def plain(login: str, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, MARTIN)
    add_user(store, f"secretariat@{DOMAIN}")
    return make_env(tmp_path, store)


def mx(env: SmtpEnv) -> Conversation:
    conv = env.connect("mx")
    conv.ehlo()
    return conv


def submission(env: SmtpEnv) -> Conversation:
    conv = env.connect("submission")
    conv.ehlo()
    assert codes(conv.cmd("AUTH PLAIN " + plain(MARTIN))) == ["235 2.7.0"]
    return conv


# ---------------------------------------------------------------- greeting, EHLO, HELO


def test_greeting_is_220_with_the_domain_first(env: SmtpEnv) -> None:
    # RFC 5321 4.2 / 4.3.1: "220" SP domain [SP text]; RFC 2034 3: no enhanced
    # code on the greeting.
    conv = env.connect("mx")
    assert re.fullmatch(rb"220 mx\.hopital\.test [ -~]*\r\n", conv.greeting)


def test_ehlo_reply_is_a_well_formed_multiline_reply(env: SmtpEnv) -> None:
    # RFC 5321 4.2.1: every line but the last is "250-", the last "250 ";
    # 4.1.1.1: the first line carries the server's domain.
    conv = env.connect("mx")
    lines = conv.ehlo().decode().split("\r\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert lines[0].startswith("250-mx.hopital.test")
    assert all(x.startswith("250-") for x in lines[:-1]) and lines[-1].startswith("250 ")
    keywords = {x[4:].split(" ")[0] for x in lines[1:]}
    assert {"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8",
            "CHUNKING"} <= keywords
    # RFC 1870 4: SIZE carries the fixed maximum.
    assert "250-SIZE 10485760" in lines


@pytest.mark.parametrize("line", ["EHLO", "EHLO ", "HELO", "helo  "])
def test_ehlo_helo_without_argument_is_501(env: SmtpEnv, line: str) -> None:
    # RFC 5321 4.1.1.1: a domain or address literal is required.
    conv = env.connect("mx")
    assert codes(conv.cmd(line)) == ["501 5.5.4"]


def test_helo_gives_no_extensions(env: SmtpEnv) -> None:
    # RFC 5321 4.1.1.1 / 2.2.1: HELO is the single-line non-extended reply.
    conv = env.connect("mx")
    out = conv.cmd("HELO client.example")
    assert re.fullmatch(rb"250 mx\.hopital\.test[ -~]*\r\n", out)


@pytest.mark.parametrize("arg", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "client.example.",
                                 "WORKSTATION_12.chu.example", "localhost"])
def test_ehlo_accepts_literals_and_windows_names(env: SmtpEnv, arg: str) -> None:
    # RFC 5321 4.1.3 address literals; an underscore (Windows machine names)
    # is accepted like Postfix does, the name is only recorded in Received.
    conv = env.connect("mx")
    assert conv.cmd(f"EHLO {arg}").startswith(b"250-mx.hopital.test")


def test_second_ehlo_resets_the_transaction(env: SmtpEnv) -> None:
    # RFC 5321 4.1.4: EHLO in a transaction is like RSET.
    conv = mx(env)
    conv.cmd("MAIL FROM:<a@remote.example>")
    conv.ehlo()
    assert codes(conv.cmd(f"RCPT TO:<{MARTIN}>")) == ["503 5.5.1"]


# ---------------------------------------------------------------- simple commands


def test_vrfy_expn_help_noop(env: SmtpEnv) -> None:
    conv = mx(env)
    # RFC 5321 3.5.3 / 7.3: 252 for an address we will not confirm, existing or not.
    assert codes(conv.cmd(f"VRFY {MARTIN}")) == ["252 2.5.0"]
    assert codes(conv.cmd("VRFY nobody")) == ["252 2.5.0"]
    assert codes(conv.cmd("VRFY")) == ["501 5.5.4"]
    # RFC 5321 3.5.2 / 7.3: EXPN may be disabled: 502.
    assert codes(conv.cmd("EXPN staff")) == ["502 5.5.1"]
    # RFC 5321 4.1.1.8: HELP answers 211 or 214, with or without an argument.
    assert codes(conv.cmd("HELP")) == ["214 2.0.0"]
    assert codes(conv.cmd("HELP MAIL")) == ["214 2.0.0"]
    # RFC 5321 4.1.1.9: NOOP takes an optional string, ignored.
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]
    assert codes(conv.cmd("NOOP anything at all")) == ["250 2.0.0"]


@pytest.mark.parametrize("verb", ["TURN", "ETRN example.org", "SEND FROM:<a@b.example>",
                                  "SOML FROM:<a@b.example>", "SAML FROM:<a@b.example>"])
def test_known_but_unimplemented_commands_are_502(env: SmtpEnv, verb: str) -> None:
    # RFC 5321 4.2.4: 502 for a recognised command not implemented, 500 otherwise.
    conv = mx(env)
    assert codes(conv.cmd(verb)) == ["502 5.5.1"]
    assert codes(conv.cmd("XYZZY")) == ["500 5.5.2"]


def test_quit_says_goodbye_and_closes(env: SmtpEnv) -> None:
    # RFC 5321 4.1.1.10: 221 then close; 2034: 221 may carry 2.0.0. The
    # grammar is "QUIT" CRLF: an argument is a syntax error.
    conv = mx(env)
    assert codes(conv.cmd("QUIT now")) == ["501 5.5.4"] and not conv.closed
    assert codes(conv.cmd("QUIT")) == ["221 2.0.0"] and conv.closed


def test_lowercase_commands_and_trailing_spaces(env: SmtpEnv) -> None:
    # RFC 5321 2.4: verbs and the FROM:/TO: keywords are case-insensitive;
    # trailing spaces are tolerated as Postfix does.
    conv = env.connect("mx")
    assert conv.cmd("ehlo client.example ").startswith(b"250-")
    assert codes(conv.cmd("mail from:<a@remote.example> ")) == ["250 2.1.0"]
    assert codes(conv.cmd(f"rcpt to:<{MARTIN}>  ")) == ["250 2.1.5"]
    assert codes(conv.cmd("data ")) == ["354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert codes(conv.cmd("noop ")) == ["250 2.0.0"]
    assert codes(conv.cmd("rset ")) == ["250 2.0.0"]
    assert codes(conv.cmd("quit ")) == ["221 2.0.0"]
    assert len(inbox(env.store, MARTIN)) == 1


# ---------------------------------------------------------------- sequence


def test_mail_rcpt_data_out_of_sequence(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    # RFC 5321 4.1.4 / 3.3: MAIL before EHLO, RCPT before MAIL, DATA before RCPT.
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == ["503 5.5.1"]
    conv.ehlo()
    assert codes(conv.cmd(f"RCPT TO:<{MARTIN}>")) == ["503 5.5.1"]
    assert codes(conv.cmd("DATA")) == ["503 5.5.1"]
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == ["250 2.1.0"]
    assert codes(conv.cmd("DATA")) == ["503 5.5.1"]
    # RFC 5321 4.1.1.2: a second MAIL inside a transaction.
    assert codes(conv.cmd("MAIL FROM:<b@remote.example>")) == ["503 5.5.1"]


def test_data_after_every_rcpt_was_refused_is_503(env: SmtpEnv) -> None:
    # RFC 5321 3.3 (503 or 554 "no valid recipients"), RFC 2920 3.1: the pipelined
    # DATA is refused and the client's message never becomes commands.
    conv = mx(env)
    out = conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<nobody@hopital.test>\r\nDATA\r\n")
    assert codes(out) == ["250 2.1.0", "550 5.1.1", "503 5.5.1"]
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]


def test_rset_mid_transaction(env: SmtpEnv) -> None:
    # RFC 5321 4.1.1.5: RSET drops sender and recipients, keeps the EHLO.
    conv = mx(env)
    conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\n".encode())
    assert codes(conv.cmd("RSET")) == ["250 2.0.0"]
    assert codes(conv.cmd("DATA")) == ["503 5.5.1"]
    assert codes(conv.cmd("RSET extra")) == ["501 5.5.4"]
    out = conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]


# ---------------------------------------------------------------- paths


def test_null_reverse_path(env: SmtpEnv) -> None:
    # RFC 5321 4.5.5 / 3.6.3: bounces use MAIL FROM:<> and must be accepted.
    conv = mx(env)
    out = conv.send(f"MAIL FROM:<>\r\nRCPT TO:<{MARTIN}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    (stored,) = inbox(env.store, MARTIN)
    assert stored.startswith(b"Return-Path: <>\r\n")


def test_source_routes_are_accepted_and_ignored(env: SmtpEnv) -> None:
    # RFC 5321 4.1.1.3 / C: "<@a,@b:user@c>" MUST be accepted, the route ignored.
    conv = mx(env)
    out = conv.send(b"MAIL FROM:<@relay.example,@hop.example:a@remote.example>\r\n"
                    + f"RCPT TO:<@relay.example,@mx.hopital.test:{MARTIN}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    (stored,) = inbox(env.store, MARTIN)
    assert stored.startswith(b"Return-Path: <a@remote.example>\r\n")


@pytest.mark.parametrize("rcpt", ["<postmaster>", "<Postmaster>", "<POSTMASTER>",
                                  "<postmaster@hopital.test>", "<PostMaster@HOPITAL.TEST>"])
def test_postmaster_is_accepted(tmp_path: Path, store: Any, rcpt: str) -> None:
    # RFC 5321 4.5.1: "postmaster" is case-insensitive, and <Postmaster>
    # without a domain MUST be accepted.
    add_user(store, f"postmaster@{DOMAIN}")
    env = make_env(tmp_path, store)
    conv = mx(env)
    out = conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:{rcpt}\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert len(inbox(store, f"postmaster@{DOMAIN}")) == 1


def test_postmaster_of_every_domain_reaches_the_configured_box(tmp_path: Path, store: Any) -> None:
    # RFC 5321 4.5.1: postmaster@<any served domain> must be accepted even
    # where no mailbox of that exact name exists: policy.postmaster names one.
    store.add_domain("clinique.test")
    add_user(store, f"admin@{DOMAIN}")
    env = make_env(tmp_path, store, domains=[DOMAIN, "clinique.test"],
                   policy={"postmaster": f"admin@{DOMAIN}"})
    conv = mx(env)
    for rcpt in ("<postmaster>", "<Postmaster@clinique.test>", f"<postmaster@{DOMAIN}>"):
        conv.cmd("MAIL FROM:<a@remote.example>")
        assert codes(conv.cmd(f"RCPT TO:{rcpt}")) == ["250 2.1.5"], rcpt
        conv.cmd("DATA")
        assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert len(inbox(store, f"admin@{DOMAIN}")) == 3
    # Without the setting, an unprovisioned postmaster is unknown, like any address.
    env2 = make_env(tmp_path, store, domains=[DOMAIN, "clinique.test"])
    conv2 = mx(env2)
    conv2.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv2.cmd("RCPT TO:<postmaster@clinique.test>")) == ["550 5.1.1"]


def test_length_limits_of_local_part_domain_and_path(env: SmtpEnv) -> None:
    # RFC 5321 4.5.3.1.1 (local part 64), 4.5.3.1.2 (domain 255), 4.5.3.1.3 (path 256).
    conv = mx(env)
    conv.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv.cmd(f"RCPT TO:<{'x' * 64}@hopital.test>")) == ["550 5.1.1"]
    assert codes(conv.cmd(f"RCPT TO:<{'x' * 65}@hopital.test>")) == ["501 5.1.3"]
    long_domain = ".".join(["d" * 60] * 4) + ".test"  # 249 + labels > 255 in total
    assert codes(conv.cmd(f"RCPT TO:<a@{long_domain}x.example>")) == ["501 5.1.3"]
    conv.cmd("RSET")
    assert codes(conv.cmd(f"MAIL FROM:<{'y' * 65}@remote.example>")) == ["501 5.1.7"]


def test_quoted_local_parts(env: SmtpEnv) -> None:
    # RFC 5321 4.1.2: Quoted-string local parts are valid; one whose content
    # is a plain dot-string names the same mailbox as the unquoted form.
    conv = mx(env)
    out = conv.send(b'MAIL FROM:<"john smith"@remote.example>\r\n'
                    b'RCPT TO:<"dr.martin"@hopital.test>\r\n'
                    b'RCPT TO:<"no body"@hopital.test>\r\nDATA\r\n')
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "550 5.1.1", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    (stored,) = inbox(env.store, MARTIN)
    assert stored.startswith(b'Return-Path: <"john smith"@remote.example>\r\n')


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(("line", "want"), [
    ("MAIL FROM:<a@remote.example> SIZE=0", "250 2.1.0"),  # RFC 1870 6: 0 = no estimate
    ("MAIL FROM:<a@remote.example> SIZE=12", "250 2.1.0"),
    ("MAIL FROM:<a@remote.example> SIZE=abc", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example> SIZE=", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example> SIZE", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example> SIZE=99999999999", "552 5.3.4"),  # RFC 1870 6.1
    ("MAIL FROM:<a@remote.example> BODY=7BIT", "250 2.1.0"),  # RFC 6152 2
    ("MAIL FROM:<a@remote.example> body=8bitmime", "250 2.1.0"),
    ("MAIL FROM:<a@remote.example> BODY=BINARYMIME", "555 5.5.4"),  # not advertised
    ("MAIL FROM:<a@remote.example> FOO=bar", "555 5.5.4"),  # RFC 5321 4.1.1.11
    ("MAIL FROM:<a@remote.example> SIZE=1 SIZE=2", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example> RET=FULL ENVID=x+2By", "250 2.1.0"),  # RFC 3461 4.3/4.4
    ("MAIL FROM:<a@remote.example> RET=ALL", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example> ENVID=bad+zz", "501 5.5.4"),
    ("MAIL FROM:<a@remote.example>SIZE=1", "501 5.5.4"),
    ("MAIL FROM:a@remote.example", "501 5.1.7"),
])
def test_mail_parameters(env: SmtpEnv, line: str, want: str) -> None:
    conv = mx(env)
    assert codes(conv.cmd(line)) == [want]


@pytest.mark.parametrize(("params", "want"), [
    ("NOTIFY=SUCCESS,FAILURE,DELAY", "250 2.1.5"),  # RFC 3461 4.1
    ("NOTIFY=NEVER", "250 2.1.5"),
    ("NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
    ("NOTIFY=SOMETIMES", "501 5.5.4"),
    ("ORCPT=rfc822;dr.martin+40hopital.test", "250 2.1.5"),  # RFC 3461 4.2
    ("ORCPT=rfc822", "501 5.5.4"),
    ("XFOO", "555 5.5.4"),
])
def test_rcpt_parameters(env: SmtpEnv, params: str, want: str) -> None:
    conv = mx(env)
    conv.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv.cmd(f"RCPT TO:<{MARTIN}> {params}")) == [want]


def test_dsn_parameters_reach_the_queue_entry(env: SmtpEnv) -> None:
    # RFC 3461 4: ENVID, RET, NOTIFY and ORCPT are kept with the message.
    conv = submission(env)
    out = conv.send(
        b"MAIL FROM:<dr.martin@hopital.test> RET=FULL ENVID=QQ+2B+3D1\r\n"
        b"RCPT TO:<confrere@clinique.test> NOTIFY=NEVER ORCPT=rfc822;Confrere+40clinique.test\r\n"
        b"RCPT TO:<autre@clinique.test> NOTIFY=DELAY\r\nDATA\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
    assert codes(conv.send(b"From: <dr.martin@hopital.test>\r\n\r\nx\r\n.\r\n")) == ["250 2.0.0"]
    (entry,) = env.store.list_queue()
    assert entry.dsn.ret == "FULL" and entry.dsn.envid == "QQ+=1"
    assert entry.dsn.notify == {"confrere@clinique.test": "NEVER", "autre@clinique.test": "DELAY"}
    assert entry.dsn.orcpt == {"confrere@clinique.test": "rfc822;Confrere@clinique.test"}


# ---------------------------------------------------------------- DATA


def test_data_reply_is_354_and_size_is_enforced_after_reading_it_all(
        tmp_path: Path, store: Any) -> None:
    # RFC 5321 4.1.1.4 (354), RFC 1870 6.3: 552 5.3.4 once the whole message
    # was read, and the session goes on.
    add_user(store, MARTIN)
    env = make_env(tmp_path, store, limits=LimitSettings(message_size=2048))
    conv = mx(env)
    conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\n".encode())
    assert conv.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    out = conv.send(b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 60)
    assert out == b"" and not conv.closed
    assert codes(conv.send(b".\r\n")) == ["552 5.3.4"]
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]
    assert inbox(store, MARTIN) == []


def test_text_line_over_1000_octets_is_refused_not_split(env: SmtpEnv) -> None:
    # RFC 5321 4.5.3.1.6: 1000 octets with CRLF; 998 of text passes, 999 is refused.
    conv = mx(env)
    conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\nDATA\r\n".encode())
    assert codes(conv.send(b"Subject: ok\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n")) == ["250 2.0.0"]
    conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\nDATA\r\n".encode())
    out = conv.send(b"Subject: ko\r\n\r\n" + b"a" * 999 + b"\r\n.\r\n")
    assert [x.split(" ")[0] for x in codes(out)] == ["554"]
    assert codes(out) == c(R.MESSAGE_LINE_TOO_LONG)
    assert len(inbox(env.store, MARTIN)) == 1


# ---------------------------------------------------------------- command lines


def test_command_line_limit_is_512_octets(env: SmtpEnv) -> None:
    # RFC 5321 4.5.3.1.4: 512 octets including CRLF; 4.5.3.1.10: 500 on excess.
    conv = mx(env)
    ok = "NOOP " + "x" * (512 - 2 - 5)
    assert codes(conv.cmd(ok)) == ["250 2.0.0"]
    assert codes(conv.cmd(ok + "x")) == ["500 5.5.2"]
    assert codes(conv.cmd("HELP " + "y" * 600)) == ["500 5.5.2"]
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]  # still in sync


def test_mail_and_rcpt_get_the_extension_allowance(env: SmtpEnv) -> None:
    # RFC 3461 4 (ENVID up to 100, ORCPT up to 500), RFC 4954 5 (AUTH= up to
    # 500): MAIL and RCPT lines may exceed 512 octets.
    conv = mx(env)
    envid = "e" * 100
    line = f"MAIL FROM:<{'s' * 60}@remote.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID={envid} AUTH=<>"
    assert codes(conv.cmd(line + " " * (600 - len(line)))) == ["250 2.1.0"]
    orcpt = "rfc822;" + "o" * 60 + "+40" + "d" * 180 + ".example"
    rcpt = f"RCPT TO:<{MARTIN}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"
    assert len(rcpt) > 300
    assert codes(conv.cmd(rcpt + " " * (700 - len(rcpt)))) == ["250 2.1.5"]
    assert codes(conv.cmd("RCPT TO:<x@hopital.test> ORCPT=rfc822;" + "a" * 3000)) == ["500 5.5.2"]


@pytest.mark.parametrize("raw", [b"NOOP \xff\xfe", b"MAIL FROM:<\xe9@remote.example>"])
def test_invalid_8bit_bytes_in_commands(env: SmtpEnv, raw: bytes) -> None:
    # RFC 5321 2.4 / 4.1: commands are ASCII (UTF-8 only under SMTPUTF8, RFC 6531).
    conv = mx(env)
    assert codes(conv.send(raw + b"\r\n")) == ["500 5.5.2"]
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]


def test_utf8_address_without_smtputf8_is_553_5_6_7(env: SmtpEnv) -> None:
    # RFC 6531 3.4 / 3.5: a non-ASCII address needs the SMTPUTF8 parameter.
    conv = mx(env)
    assert codes(conv.cmd("MAIL FROM:<élodie@remote.example>")) == ["553 5.6.7"]
    assert codes(conv.cmd("MAIL FROM:<élodie@remote.example> SMTPUTF8")) == ["250 2.1.0"]


# ---------------------------------------------------------------- STARTTLS


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS: what was written before the
    upgrade, and the context the protocol asked for."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_context: Any = None
        self.before_tls = b""

    def startTLS(self, context: Any, normal: bool = True) -> None:  # noqa: N802, FBT001
        self.before_tls = self.value()
        self.tls_context = context


def test_pipelined_commands_after_starttls_are_discarded(tmp_path: Path, store: Any,
                                                         dev_pki: Any) -> None:
    # RFC 3207 4.2 (and 5: CVE-2011-0411): plaintext sent after STARTTLS in
    # the same group is never executed; the session restarts from zero.
    from pki import tls_settings
    from twisted.internet.address import IPv4Address

    from certs.tls import ServerTLS

    add_user(store, MARTIN)
    listeners = [{"name": "mx", "port": 0, "role": "mx", "tls": "starttls"}]
    env = make_env(tmp_path, store, listeners=listeners, tls=tls_settings(dev_pki))
    env = SmtpEnv(env.settings, store, tls=ServerTLS(env.settings.tls))
    conv = env.connect("mx")
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.10", 40000))
    conv.transport = transport
    conv.protocol.transport = transport
    ehlo = conv.ehlo().decode()
    assert "250-STARTTLS" in ehlo or "250 STARTTLS" in ehlo
    # RFC 3207 4: no mail before TLS on this listener.
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == ["530 5.7.0"]
    assert codes(conv.cmd("STARTTLS now")) == ["501 5.5.4"]
    out = conv.send(f"STARTTLS\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\n".encode())
    assert codes(transport.before_tls) == ["220 2.0.0"] and codes(out) == ["220 2.0.0"]
    assert transport.tls_context is not None
    # After the handshake: EHLO again, STARTTLS gone, the injected MAIL forgotten.
    assert codes(conv.cmd(f"RCPT TO:<{MARTIN}>")) == ["503 5.5.1"]
    ehlo = conv.ehlo().decode()
    assert "STARTTLS" not in ehlo
    assert codes(conv.cmd("STARTTLS")) == ["503 5.5.1"]
    assert codes(conv.cmd(f"RCPT TO:<{MARTIN}>")) == ["503 5.5.1"]
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == ["250 2.1.0"]


# ---------------------------------------------------------------- AUTH


def test_auth_sequence_and_syntax(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    # RFC 4954 4: bad base64 in the initial response or a continuation: 501 5.5.2.
    assert codes(conv.cmd("AUTH PLAIN !!!notbase64")) == ["501 5.5.2"]
    assert codes(conv.cmd("AUTH PLAIN")) == ["334"]
    assert codes(conv.cmd("%%%")) == ["501 5.5.2"]
    # RFC 4954 4: "*" cancels; the server MUST answer 501 (Postfix: 5.7.0).
    assert codes(conv.cmd("AUTH LOGIN")) == ["334"]
    assert codes(conv.cmd("*")) == ["501 5.7.0"]
    # RFC 4954 4: unknown mechanism 504.
    assert codes(conv.cmd("AUTH CRAM-MD5")) == ["504 5.5.4"]
    # RFC 4954 4: "=" is an empty initial response (invalid for PLAIN).
    assert codes(conv.cmd("AUTH PLAIN =")) == ["535 5.7.8"]
    assert codes(conv.cmd("AUTH PLAIN " + plain(MARTIN))) == ["235 2.7.0"]
    # RFC 4954 4: AUTH after a successful AUTH: 503.
    assert codes(conv.cmd("AUTH PLAIN " + plain(MARTIN))) == ["503 5.5.1"]


def test_auth_during_a_transaction_is_503(env: SmtpEnv) -> None:
    # RFC 4954 4: "AUTH command is not permitted during a mail transaction".
    conv = submission(env)
    conv.cmd(f"MAIL FROM:<{MARTIN}>")
    assert codes(conv.cmd("AUTH PLAIN " + plain(MARTIN))) == ["503 5.5.1"]


def test_external_without_a_certificate(env: SmtpEnv) -> None:
    # RFC 4422 appendix A: EXTERNAL needs an external identity; not advertised
    # without a client certificate, refused if tried (empty "=" authzid).
    conv = env.connect("submission")
    ehlo = conv.ehlo().decode()
    assert "EXTERNAL" not in ehlo
    assert codes(conv.cmd("AUTH EXTERNAL =")) == ["535 5.7.8"]
    assert codes(conv.cmd("AUTH EXTERNAL")) == ["334"]
    assert codes(conv.cmd("=")) == ["535 5.7.8"]


def test_long_sasl_responses_are_read_up_to_12288_octets(env: SmtpEnv) -> None:
    # RFC 4954 4: AUTH and its responses may be 12288 octets; beyond: 500 5.5.6.
    conv = env.connect("submission")
    conv.ehlo()
    long_password = plain(MARTIN, "p" * 2000)
    assert len(long_password) > 2048
    assert codes(conv.cmd("AUTH PLAIN " + long_password)) == ["535 5.7.8"]
    assert codes(conv.cmd("AUTH PLAIN")) == ["334"]
    assert codes(conv.cmd("QUFB" * 3100)) == ["500 5.5.6"]
    assert not conv.closed
    assert codes(conv.cmd("AUTH PLAIN " + plain(MARTIN))) == ["235 2.7.0"]


# ---------------------------------------------------------------- timeouts, enhanced codes


def test_idle_timeout_is_421_4_4_2(env: SmtpEnv) -> None:
    # RFC 5321 4.5.3.2.7 (server timeout), 3.8 (421 before closing).
    conv = mx(env)
    conv.cmd("MAIL FROM:<a@remote.example>")
    env.clock.advance(env.settings.limits.smtp_idle_timeout + 1)
    out = conv.take()
    assert codes(out) == ["421 4.4.2"] and conv.closed
    # RFC 5321 4.2.3: the closing 421 names the server.
    assert out.startswith(f"421 4.4.2 {env.settings.hostname} ".encode())


_ENHANCED = re.compile(r"^([245])\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3}) ")


def test_every_reply_carries_an_enhanced_code(env: SmtpEnv) -> None:
    # RFC 2034 3: every 2xx/4xx/5xx reply after the greeting and the EHLO/HELO
    # response carries one, and its class matches the reply's first digit.
    conv = env.connect("submission")
    conv.ehlo()
    script = [
        "NOOP", "HELP", "VRFY x", "EXPN x", "BOGUS", "MAIL FROM:<x>", "RCPT TO:<x@y.example>",
        "DATA", "AUTH FOO", "AUTH PLAIN " + plain(MARTIN, "wrong"), "AUTH PLAIN " + plain(MARTIN),
        f"MAIL FROM:<{MARTIN}> FOO=1", f"MAIL FROM:<{MARTIN}>", "RCPT TO:<nobody@hopital.test>",
        "RCPT TO:<x@nowhere.example>", "RCPT TO:<secretariat@hopital.test>", "BDAT x", "RSET",
        "STARTTLS", "DATA", "QUIT",
    ]
    lines: list[str] = []
    for line in script:
        lines += [x for x in conv.cmd(line).decode().split("\r\n") if x]
    assert len(lines) >= len(script)
    for line in lines:
        m = _ENHANCED.match(line)
        assert m is not None, line
        assert m.group(1) == m.group(2), line


@pytest.mark.parametrize("reply", [
    pytest.param(v, id=k)
    for k, v in vars(R).items() if isinstance(v, Reply)])
def test_catalogue_codes_are_consistent(reply: Reply) -> None:
    # RFC 3463 2: the class of the enhanced code is the reply's first digit;
    # 3xx intermediate replies and the greeting/EHLO carry none (RFC 2034 3).
    if reply.status is None:
        assert reply.code in (220, 250, 334, 354)
        return
    klass, subject, detail = reply.status.split(".")
    assert klass == str(reply.code)[0]
    assert 0 <= int(subject) <= 7 and 0 <= int(detail) <= 999
    # RFC 4954 6 registers X.5.6 for an over-long authentication exchange only.
    if (subject, detail) == ("5", "6"):
        assert "uth" in reply.text


# ---------------------------------------------------------------- trace


@pytest.mark.parametrize(("esmtp", "tls", "auth", "utf8", "want"), [
    (False, False, False, False, "SMTP"),
    (True, False, False, False, "ESMTP"),
    (True, True, False, False, "ESMTPS"),
    (True, False, True, False, "ESMTPA"),
    (True, True, True, False, "ESMTPSA"),
    (True, True, True, True, "UTF8SMTPSA"),  # RFC 6531 3.7.3
])
def test_received_with_protocol_types(esmtp: bool, tls: bool, auth: bool, utf8: bool,
                                      want: str) -> None:
    # RFC 3848 2 / RFC 5321 4.4.
    assert with_protocol(esmtp=esmtp, tls=tls, auth=auth, utf8=utf8) == want


def test_a_looping_message_is_refused(env: SmtpEnv) -> None:
    # RFC 5321 6.3: loop detection by counting Received fields, threshold >= 100;
    # RFC 3463 X.4.6 "routing loop detected".
    hop = b"Received: from a.example by b.example;\r\n\tFri, 27 Nov 2026 10:00:00 +0000\r\n"
    conv = mx(env)
    for hops, want in ((100, "250 2.0.0"), (101, "554 5.4.6")):
        conv.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{MARTIN}>\r\nDATA\r\n".encode())
        assert codes(conv.send(hop * hops + MSG + b".\r\n")) == [want]
    assert len(inbox(env.store, MARTIN)) == 1
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]
