"""Hypothesis strategies for SMTP sessions, from the grammar and from real clients.

Units are command lines (one reply each), DATA with its body (the body is
sent only after 354), BDAT with its chunk (always read by the server: one
reply), and AUTH with its responses (each sent only after 334, then "*" if
the server still asks). Every verb `mssmtpd.parser` knows is generated, with
valid arguments (addresses, domains, ESMTP parameters of RFC 1870, 3461,
4954, 6152, 6531) or noisy ones (NULs, 8-bit, tabs, long lines, bad
parameters, odd line ends); real client lines (Thunderbird, Outlook, swaks,
Postfix, smtplib) are replayed as they are or mutated. Framing is kept:
a line never holds a line feed but its last octet.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from fuzz_support import NUMBERS, Unit, mutated
from hypothesis import strategies as st

from mssmtpd import parser as p

PASSWORD = "correct horse battery staple"  # smtp_transcript.PASSWORD
SUBMITTER = "secretariat@hopital.test"
LOCAL = ["dr.martin@hopital.test", SUBMITTER, "cardiologie@hopital.test"]
PLAIN_TOKEN = base64.b64encode(f"\0{SUBMITTER}\0{PASSWORD}".encode())

S = st.SearchStrategy

# Verbs the parser knows (mssmtpd/parser.py parse_command), and the ones it
# recognises as not implemented.
VERBS = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
         "HELP", "STARTTLS", "AUTH"]
UNIMPLEMENTED = ["TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"]

DOMAINS = [b"client.example", b"[192.0.2.1]", b"[IPv6:2001:db8::1]", b"mx.hopital.test",
           b"WIN_PC", b"localhost.localdomain", b"clinique.test", b"\xc3\xa9cole.test"]
ODD_DOMAINS = [b"-bad", b"a..b", b"", b"x" * 300, b"[999.1.1.1]", b"[IPv6:zz]", b"a b", b"\xff",
               b"[", b"a.-b.test"]
ADDRESSES = [a.encode() for a in LOCAL] + [
    b"nobody@hopital.test", b"postmaster@hopital.test", b"Postmaster", b"postmaster",
    b"a@remote.example", b"x@clinique.test", b'"dr martin"@hopital.test',
    b'"dr.martin"@hopital.test', b"@a.example,@b.example:dr.martin@hopital.test",
    b"user@[192.0.2.1]", b"DR.MARTIN@HOPITAL.TEST", b"j\xc3\xa9r\xc3\xb4me@hopital.test",
    b"a@\xc3\xa9.test",
]
ODD_ADDRESSES = [b"a@", b"@b", b"a b@c.test", b"a" * 65 + b"@hopital.test",
                 b"b@" + b"x" * 260 + b".test", b'"a\\"b"@x.test', b'"unterminated@x.test',
                 b"a@@b.test", b"<", b">", b"\x00@x.test", b"a@[1.2.3]", b"a@b.test>"]
MAIL_PARAMS = [b"SIZE=1000", b"SIZE=0", b"BODY=8BITMIME", b"BODY=7BIT", b"SMTPUTF8", b"RET=FULL",
               b"RET=HDRS", b"ENVID=QQ314159", b"ENVID=a+2Bb", b"AUTH=<>",
               b"AUTH=secretariat@hopital.test", b"size=20000000", b"body=8bitmime"]
ODD_MAIL_PARAMS = [b"SIZE=-1", b"SIZE=99999999999999999999999", b"SIZE", b"BODY=BINARYMIME",
                   b"RET=X", b"ENVID=+ZZ", b"ENVID=" + b"a" * 200, b"SMTPUTF8=yes", b"X-FOO=1",
                   b"=", b"SIZE=1 SIZE=2", b"AUTH=+", b"\xff=1", b"SIZE=\t1"]
RCPT_PARAMS = [b"NOTIFY=NEVER", b"NOTIFY=SUCCESS,FAILURE", b"NOTIFY=DELAY", b"notify=success",
               b"ORCPT=rfc822;dr.martin@hopital.test", b"ORCPT=rfc822;a+2Bb@x.test"]
ODD_RCPT_PARAMS = [b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=X", b"NOTIFY=", b"NOTIFY=SUCCESS,SUCCESS",
                   b"ORCPT=x", b"ORCPT=;a", b"ORCPT=rfc822;" + b"a" * 600, b"FOO=bar"]

MESSAGE = (b"From: Sender <sender@remote.example>\r\nTo: dr.martin@hopital.test\r\n"
           b"Subject: hello\r\nMessage-ID: <m1@remote.example>\r\n\r\nBody line 1\r\n"
           b".leading dot\r\nlast\r\n")
# What a submission client sends (its own From:), and what may arrive by MX.
OWN_BODIES = [
    b"From: Secretariat <secretariat@hopital.test>\r\nTo: dr.martin@hopital.test\r\n"
    b"Subject: rdv\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nRendez-vous \xc3\xa0 9h\r\n..point\r\n",
    b"", b"\r\n", b"Subject: x\r\n\r\n", b"no header, no line end",
]
BODIES = OWN_BODIES + [
    MESSAGE,
    b"From: secretariat@hopital.test\r\nFrom: cardiologie@hopital.test\r\n\r\nhi\r\n",
    b"From: someone@else.test\r\nSubject: spoof\r\n\r\nx\r\n",
    b"Subject: =?utf-8?b?w6k=?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
    b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\xc3\xa9\r\n--b--\r\n',
    b"Received: from a\r\n" * 101 + b"\r\nloop\r\n",
]
ODD_BODIES = [
    b"bare\nline feed\n.\nand dot\n", b"bare\rcarriage\r.\r", b"x" * 1100 + b"\r\n", b"x" * 5000,
    b"\x00\x01\xff\r\n", b"..\r\n...\r\n.x\r\n", b"a\r\n.\n.\r\n", b"a" * 998 + b"\r\n",
    b"." + b"a" * 998 + b"\r\n", (b"line\r\n" * 3000),
]
SASL = [PLAIN_TOKEN, base64.b64encode(f"\0{SUBMITTER}\0wrong".encode()),
        base64.b64encode(SUBMITTER.encode()), base64.b64encode(PASSWORD.encode()), b"=", b"*"]
ODD_SASL = [b"!!notbase64", b"A" * 13000, base64.b64encode(b"a\0b"), b"====", b"\xff"]


def _pick(valid: list[bytes], odd: list[bytes], noisy: bool) -> S[bytes]:
    return st.sampled_from(valid + odd if noisy else valid)


def data_body(body: bytes) -> bytes:
    """`body` sent after 354: it must end where the client says (CRLF "."
    CRLF) and nowhere before; dot-stuffing is left as the body has it."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    while b"\r\n.\r\n" in body:
        body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    if body.startswith(b".\r\n"):
        body = b"." + body
    return body + b".\r\n"


def stuff(body: bytes) -> bytes:
    """RFC 5321 4.5.2 dot-stuffing, as a well-behaved client does it."""
    body = re.sub(rb"(?<=\r\n)\.", b"..", body)
    return b"." + body if body.startswith(b".") else body


_LINE_END = [b"\r\n"] * 8 + [b"\n", b"\r\r\n"]


MAX_CHUNK = 65536


def line_unit(line: bytes, terminator: bytes = b"\r\n", label: str = "") -> Unit:
    """One command line, one reply. A line that asks the server for more
    gets it: a BDAT line its chunk; DATA or AUTH, if the server does ask,
    ".\\r\\n" (an empty message) or "*" (cancel)."""
    line = line.replace(b"\n", b" ")
    command = p.parse_command(line)
    if isinstance(command, p.Bdat):
        # The server reads exactly that many octets, whatever they are. A
        # chunk too big to send ends the session: the server waits for it.
        if command.size > MAX_CHUNK:
            return Unit((line + b"\r\n",), replies=(0,), label="BDAT huge", complete=False)
        chunk = (b"chunk\r\n" * (command.size // 7 + 1))[: command.size]
        return Unit((line + b"\r\n" + chunk,), replies=(1,), label="BDAT line")
    upper = line.upper()
    finish = b".\r\n" if b"DATA" in upper else b"*\r\n" if b"AUTH" in upper else b""
    return Unit((line + terminator,), replies=(1,), finish=finish, label=label)


@st.composite
def _path(draw: Any, noisy: bool) -> bytes:
    address = draw(_pick(ADDRESSES, ODD_ADDRESSES, noisy))
    form = draw(st.sampled_from(["<>", "plain", "plain", "plain"] + (["bare", "space"] if noisy
                                                                     else [])))
    if form == "<>":
        return b"<>"
    if form == "bare":
        return address
    return (b" " if form == "space" else b"") + b"<" + address + b">"


@st.composite
def command_line(draw: Any, noisy: bool) -> tuple[str, bytes]:
    verb = draw(st.sampled_from(VERBS + (UNIMPLEMENTED + ["?"] if noisy else [])))
    word = verb.encode()
    if noisy and draw(st.booleans()):
        word = draw(st.sampled_from([word.lower(), word.capitalize(), word + b" ", b" " + word]))
    if verb in ("EHLO", "HELO"):
        return verb, word + b" " + draw(_pick(DOMAINS, ODD_DOMAINS, noisy))
    if verb in ("MAIL", "RCPT"):
        key = b"FROM:" if verb == "MAIL" else b"TO:"
        params = draw(st.lists(_pick(MAIL_PARAMS if verb == "MAIL" else RCPT_PARAMS,
                                     ODD_MAIL_PARAMS if verb == "MAIL" else ODD_RCPT_PARAMS,
                                     noisy), max_size=3, unique=True))
        line = word + b" " + key + draw(_path(noisy))
        return verb, b" ".join([line] + params)
    if verb in ("VRFY", "EXPN", "HELP", "NOOP"):
        arg = draw(st.one_of(st.just(b""), _pick(ADDRESSES[:3] + [b"postmaster", b"MAIL"],
                                                 ODD_ADDRESSES, noisy)))
        return verb, word + (b" " + arg if arg else b"")
    if verb == "?":
        return verb, draw(st.one_of(st.binary(max_size=30), st.sampled_from(
            [b"", b" ", b"GET / HTTP/1.1", b"\x16\x03\x01", b"MAIL", b"X" * 600, b"RCPT TO"])))
    # DATA, BDAT, RSET, QUIT, STARTTLS, AUTH and the unimplemented verbs:
    # arguments only when noisy (the grammar refuses them, or ignores them).
    if noisy and draw(st.integers(0, 3)) == 0:
        return verb, word + b" " + draw(st.sampled_from([b"x", b"LAST", b"1", b"\x00"] + NUMBERS))
    return verb, word


RECIPIENTS = [b"<dr.martin@hopital.test>", b"<secretariat@hopital.test>",
              b"<cardiologie@hopital.test>", b"<DR.MARTIN@hopital.test>", b"<dr.martin@hopital.test>",
              b"<Postmaster>", b"<postmaster@hopital.test>", b"<nobody@hopital.test>",
              b"<a@remote.example>", b"<x@clinique.test>"]
SENDERS = {"mx": [b"<a@remote.example>", b"<x@clinique.test>", b"<>"],
           "submission": [b"<secretariat@hopital.test>", b"<SECRETARIAT@hopital.test>"]}


@st.composite
def data_unit(draw: Any, noisy: bool, role: str = "mx") -> Unit:
    body = draw(_pick(OWN_BODIES if role == "submission" else BODIES, ODD_BODIES, noisy))
    if noisy and draw(st.booleans()):
        body = draw(mutated(body, framing=True))
    elif not noisy or draw(st.booleans()):
        body = stuff(body)
    return Unit((b"DATA\r\n", data_body(body)), replies=(1, 1), label="DATA+body")


@st.composite
def bdat_units(draw: Any, noisy: bool, role: str = "mx") -> list[Unit]:
    """A message in BDAT chunks (the last with LAST, unless noisy)."""
    body = draw(_pick(OWN_BODIES if role == "submission" else BODIES, ODD_BODIES, noisy))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)], strict=True)]
    units = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1 and (not noisy or draw(st.integers(0, 4)) > 0)
        word = draw(st.sampled_from([b"BDAT", b"bdat"])) if noisy else b"BDAT"
        line = word + b" %d" % len(chunk) + (b" LAST" if last else b"")
        units.append(Unit((line + b"\r\n" + chunk,), replies=(1,), label="BDAT"))
    return units


@st.composite
def auth_unit(draw: Any, noisy: bool) -> Unit:
    mech = draw(_pick([b"PLAIN", b"LOGIN", b"EXTERNAL", b"plain"],
                      [b"CRAM-MD5", b"X_Y", b"", b"PLAIN EXTRA ARG"], noisy))
    initial = draw(st.one_of(st.just(b""), _pick(SASL, ODD_SASL, noisy).map(lambda t: b" " + t)))
    responses = tuple(draw(_pick(SASL, ODD_SASL, noisy)) + b"\r\n"
                      for _ in range(draw(st.integers(0, 2))))
    first = b"AUTH " + mech + initial + b"\r\n"
    return Unit((first,) + responses, replies=(1,) * (1 + len(responses)), finish=b"*\r\n",
                label="AUTH")


CLIENT_LINES = [
    # Thunderbird
    b"EHLO [127.0.0.1]", b"AUTH PLAIN " + PLAIN_TOKEN,
    b"MAIL FROM:<secretariat@hopital.test> BODY=8BITMIME SIZE=1432",
    b"RCPT TO:<dr.martin@hopital.test>", b"QUIT",
    # Outlook
    b"EHLO DESKTOP-1ABC234", b"AUTH LOGIN", b"MAIL FROM:<secretariat@hopital.test> SIZE=2048",
    # swaks
    b"EHLO swaks.example", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<secretariat@hopital.test>",
    b"AUTH LOGIN " + base64.b64encode(SUBMITTER.encode()),
    # Postfix (smtp-source, relaying)
    b"EHLO mx.clinique.test", b"MAIL FROM:<> RET=HDRS ENVID=QQ314159",
    b"MAIL FROM:<x@clinique.test> SIZE=4096 BODY=8BITMIME SMTPUTF8",
    b"RCPT TO:<dr.martin@hopital.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;dr.martin@hopital.test",
    b"RCPT TO:<Postmaster>", b"BDAT 0 LAST", b"RSET", b"NOOP", b"VRFY postmaster", b"HELP",
    b"STARTTLS",
    # Python smtplib
    b"ehlo localhost.localdomain", b"mail FROM:<a@remote.example> size=12", b"rcpt TO:<x@y.test>",
    b"data", b"quit", b"HELO client.example", b"MAIL FROM: <a@remote.example>",
]


@st.composite
def smtp_units(draw: Any, role: str = "mx", max_units: int = 14) -> list[Unit]:
    """A session: transactions (MAIL, RCPTs, DATA or BDAT) among other
    commands, valid or noisy, and real client lines as sent or mutated.
    `role`: whose senders and messages the transactions use."""
    units: list[Unit] = []
    size = draw(st.integers(1, max_units))
    while len(units) < size and all(u.complete for u in units):
        source = draw(st.sampled_from(["valid"] * 4 + ["noisy"] * 2 + ["client", "mutated"]
                                      + ["transaction"] * 3))
        noisy = source in ("noisy", "mutated") or (source == "transaction" and draw(st.booleans()))
        terminator = draw(st.sampled_from(_LINE_END)) if noisy else b"\r\n"
        if source in ("client", "mutated"):
            line = draw(st.sampled_from(CLIENT_LINES))
            if noisy:
                line = draw(mutated(line, framing=False))
            units.append(line_unit(line, terminator, source))
        elif source == "transaction":
            sender = draw(_path(True) if noisy else st.sampled_from(SENDERS[role]))
            params = draw(st.sampled_from([b"", b" BODY=8BITMIME", b" SIZE=300", b" SMTPUTF8"]))
            units.append(line_unit(b"MAIL FROM:" + sender + params, label="MAIL"))
            for _ in range(draw(st.integers(1, 4))):
                rcpt = draw(_path(True) if noisy else st.sampled_from(RECIPIENTS))
                params = draw(st.sampled_from([b"", b"", b" NOTIFY=SUCCESS,FAILURE",
                                               b" ORCPT=rfc822;dr.martin@hopital.test"]))
                units.append(line_unit(b"RCPT TO:" + rcpt + params, label="RCPT"))
            end = draw(st.sampled_from(["data", "data", "bdat", "none"]))
            if end == "data":
                units.append(draw(data_unit(noisy, role)))
            elif end == "bdat":
                units.extend(draw(bdat_units(noisy, role)))
        else:
            verb, line = draw(command_line(noisy))
            if verb == "AUTH":
                units.append(draw(auth_unit(noisy)))
            elif verb == "DATA" and line == b"DATA":
                units.append(draw(data_unit(noisy, role)))
            elif verb == "BDAT" and line == b"BDAT":
                units.extend(draw(bdat_units(noisy, role)))
            else:
                units.append(line_unit(line, terminator, verb))
    return units

