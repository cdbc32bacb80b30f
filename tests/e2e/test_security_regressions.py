"""Security regressions of the product as deployed (`mssctl init --demo`,
`mssctl serve`), across both daemons. The SMTP protocol attacks (smuggling,
STARTTLS injection, open relay ...) live in test_smtp_security.py; here:
revoked cards and borrowed identities, mailbox privacy between agents,
cleartext login, password guessing, oversized literals, content at rest,
hostile bytes and port scans on every listener, durability of an accepted
message across SIGKILL and a clean SIGTERM with busy clients.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import smtplib
import socket
import ssl
import struct
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from integration_support import (
    CARDIO,
    DOMAIN,
    DURAND,
    IO_TIMEOUT,
    LABO,
    MARTIN,
    PETIT,
    ImapConn,
    MssInstance,
    Response,
    make_message,
    run_mssctl,
    submit,
    untagged_of,
)

from mssctl.init import DEFAULT_PORTS

pytestmark = pytest.mark.e2e

REVOKED = f"dr.revoque@{DOMAIN}"
REVOKED_IDNAT = "810000000999"  # certs.devpki.DEMO_REVOKED_IDNAT, listed in the persons CRL
PEER_DOMAIN = "operateur-pair.test"  # on the demo whitelist


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "secu")
    # An account for the revoked demo card, as an operator would have made
    # before the card was revoked: only the CRL stands between it and the box.
    run_mssctl(inst, "account", "add", REVOKED, "--class", "practitioner",
               "--idnat", REVOKED_IDNAT, "--no-password", "--name", "Dr Revoque")
    run_mssctl(inst, "mailbox", "add", REVOKED, "--type", "PER", "--owner", REVOKED)
    # The demo peer operator is routed to a loopback port where nobody
    # listens: its mail stays queued, and no test ever queries DNS.
    config = inst.directory / "mss.yaml"
    text = config.read_text()
    assert "  routes: {}\n" in text
    config.write_text(text.replace(
        "  routes: {}", f'  routes: {{{PEER_DOMAIN}: "127.0.0.1:{closed_port()}"}}', 1))
    inst.start()
    yield inst
    status = inst.stop()
    assert status == 0, f"serve exited {status} on SIGTERM:\n{inst.log_tail()}"


@pytest.fixture(autouse=True)
def no_server_errors(mss: MssInstance) -> Iterator[None]:
    """Whatever a test asserts, the server must not have logged a bug meanwhile."""
    mark = mss.log_mark()
    yield
    errors = mss.errors_since(mark)
    assert not errors, f"the server logged errors during the test:\n{errors}"


def revoked_pair(mss: MssInstance) -> tuple[Path, Path]:
    pki = mss.ca_file.parent
    return pki / "revoked.pem", pki / "revoked.key"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def smtp_greets(port: int, ctx: ssl.SSLContext | None) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    with sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        sock.sendall(b"QUIT\r\n")
        return data


def assert_all_listeners_healthy(mss: MssInstance, within: float = 5.0) -> None:
    """Every listener greets in its protocol and a login works on IMAP and
    SMTP, within `within` seconds: connections a client has just closed may
    still count against limits.connections_per_ip until the server has read
    their end, so a transient "421 too many connections" is retried."""
    deadline = time.monotonic() + within
    while True:
        busy = _listeners_healthy(mss)
        if not busy:
            return
        assert time.monotonic() < deadline, f"{busy} still refuses connections"
        time.sleep(0.05)  # polling with a deadline


def _listeners_healthy(mss: MssInstance) -> str | None:
    """None when healthy, the name of a listener answering 421 (busy); fails
    on anything else."""
    assert mss.running, mss.log_tail()
    ctx = mss.client_context()
    for name, _, role, tls in DEFAULT_PORTS:
        port = mss.port(name)
        if role == "imap":
            with ImapConn(port, ctx if tls == "implicit" else None) as conn:
                assert conn.greeting.text.startswith(b"* OK "), (name, conn.greeting.text)
        else:
            greeting = smtp_greets(port, ctx if tls == "implicit" else None)
            if greeting.startswith(b"421 4.7.0 ") and b"Too many connections" in greeting:
                return name
            assert greeting.startswith(b"220 "), (name, greeting)
    with ImapConn(mss.port("imaps"), ctx) as conn:
        conn.login(DURAND, mss.password(DURAND))
        conn.ok(f'SELECT "Shared/{CARDIO}/INBOX"')
    with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT) as s:
        s.starttls(context=ctx)
        s.login(PETIT, mss.password(PETIT))
        assert s.noop()[0] == 250
    return None


# ---------------------------------------------------------------- revoked card


def test_revoked_card_cannot_log_in_to_imap_or_smtp(mss: MssInstance) -> None:
    # Control: the valid card of the same PKI gets in, so a refusal below is
    # about revocation, not a broken EXTERNAL.
    with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(MARTIN))) as conn:
        _, tagged = conn.command("AUTHENTICATE EXTERNAL =")
        assert tagged.text.startswith(b"A001 OK"), tagged.text

    initial = base64.b64encode(REVOKED.encode()).decode()
    ctx = mss.client_context(revoked_pair(mss))
    for mode in ("imaps", "imap-starttls"):
        try:
            if mode == "imaps":
                conn = ImapConn(mss.port("imaps"), ctx)
            else:
                conn = ImapConn(mss.port("imap"))
                conn.ok("STARTTLS")
                conn.sock = ctx.wrap_socket(conn.sock, server_hostname="127.0.0.1")
            with conn:
                _, tagged = conn.command(f"AUTHENTICATE EXTERNAL {initial}")
        except ssl.SSLError as exc:  # refused in the handshake: the alert must say why
            assert "REVOKED" in str(exc).upper(), exc
            continue
        except ConnectionError:  # or the connection dropped right after it
            continue
        assert re.match(rb"A\d+ NO", tagged.text), (mode, tagged.text)

    assert not _smtp_external_gets_in(mss, revoked_pair(mss)), "a revoked card used SMTP"
    assert _smtp_external_gets_in(mss, mss.cert_pair(LABO))  # control

    allowed = [line for line in mss.audit_text().splitlines()
               if '"result": "allow"' in line and '"action": "login"' in line]
    assert not [line for line in allowed if REVOKED in line or REVOKED_IDNAT in line]


def _card_gets_in(mss: MssInstance, holder: str) -> bool:
    """True if `holder`'s certificate logs in with EXTERNAL on 993, False if
    the TLS layer or EXTERNAL refuses it."""
    try:
        with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(holder))) as conn:
            _, tagged = conn.command("AUTHENTICATE EXTERNAL =")
    except (ssl.SSLError, ConnectionError):
        return False
    return tagged.text.startswith(b"A001 OK")


def _smtp_external_gets_in(mss: MssInstance, pair: tuple[Path, Path]) -> bool:
    """True if this certificate logs in with EXTERNAL on the submission port."""
    try:
        with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT) as s:
            s.starttls(context=mss.client_context(pair))
            s.ehlo("poste.test")
            code, _ = s.docmd("AUTH", "EXTERNAL =")
    except (ssl.SSLError, ConnectionError, smtplib.SMTPException):
        return False
    return code == 235


def _reissue_persons_crl(mss: MssInstance, serials: list[int], age: float) -> None:
    """A new persons CRL dated `age` seconds ago (its CRL number is that
    time in seconds, so a later call with a smaller age supersedes it), put
    in the bundle serve reads."""
    from certs.devpki import make_crl

    pki = mss.ca_file.parent
    make_crl(pki / "persons-ca.pem", pki / "persons-ca.key", pki / "persons-ca.crl.pem",
             serials, last_update=datetime.now(UTC) - timedelta(seconds=age))
    (pki / "crl.pem").write_bytes(b"".join(
        (pki / f"{ca}.crl.pem").read_bytes()
        for ca in ("root-ca", "persons-ca", "organisations-ca")))


def _serial(pem: Path) -> int:
    return x509.load_pem_x509_certificates(pem.read_bytes())[0].serial_number


def test_a_card_revoked_while_serving_is_refused_after_sighup(mss: MssInstance) -> None:
    """The operator publishes a new CRL and sends SIGHUP: from then on the
    card is refused on IMAP and SMTP, without a restart; other certificates
    keep working. (Then the card is un-revoked, for the other tests.)"""
    assert mss.proc is not None
    card = mss.cert_pair(MARTIN)[0]
    already = [_serial(revoked_pair(mss)[0])]
    assert _card_gets_in(mss, MARTIN)
    try:
        _reissue_persons_crl(mss, [*already, _serial(card)], age=2)
        mss.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _card_gets_in(mss, MARTIN):  # polling with a deadline: reload is asynchronous
            assert time.monotonic() < deadline, "the card still logs in after SIGHUP"
            time.sleep(0.05)
        assert not _smtp_external_gets_in(mss, mss.cert_pair(MARTIN))
        assert _card_gets_in(mss, LABO)  # the organisation CA's CRL is untouched
        assert mss.running
    finally:
        _reissue_persons_crl(mss, already, age=1)  # numbered after the one above
        mss.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not _card_gets_in(mss, MARTIN):
            assert time.monotonic() < deadline, "the card is not accepted again"
            time.sleep(0.05)


def test_a_certificate_cannot_log_in_as_someone_else(mss: MssInstance) -> None:
    """EXTERNAL's authorisation identity must be the account the certificate
    maps to: a card cannot open the functional box or a colleague's account,
    the lab's certificate cannot become the practitioner."""
    attempts = [(MARTIN, DURAND), (MARTIN, CARDIO), (MARTIN, f"personne@{DOMAIN}"),
                (LABO, MARTIN)]
    for holder, wanted in attempts:
        with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(holder))) as conn:
            initial = base64.b64encode(wanted.encode()).decode()
            _, tagged = conn.command(f"AUTHENTICATE EXTERNAL {initial}")
            assert re.match(rb"A001 NO", tagged.text), (holder, wanted, tagged.text)
            _, tagged = conn.command('SELECT "INBOX"')
            assert re.match(rb"A002 BAD", tagged.text), tagged.text  # still not logged in
    with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT) as s:
        s.starttls(context=mss.client_context(mss.cert_pair(LABO)))
        s.ehlo("labo.test")
        code, _ = s.docmd("AUTH", "EXTERNAL " + base64.b64encode(MARTIN.encode()).decode())
        assert code == 535, code
    denied = [line for line in mss.audit_text().splitlines()
              if '"result": "deny"' in line and '"method": "external"' in line]
    for _, wanted in attempts:
        assert any(wanted in line for line in denied), wanted


def test_mx_peer_must_present_its_operator_certificate(mss: MssInstance) -> None:
    """`mssctl init` requires mutual TLS on the mx listener: a peer without a
    certificate is told one is required (530), a certificate whose DN is not
    listed for the sender's domain is not trusted (550), the listed operator
    delivers; the audit trail tells the refusals apart."""
    token = secrets.token_hex(4)
    sender = f"dr.dupont@{PEER_DOMAIN}"
    message = make_message(f"Entre operateurs {token}", "Compte rendu.", sender=sender,
                           to=[MARTIN])
    for cert, mail_from, expected in (
        (None, sender, (530, b"5.7.0 A client certificate is required")),
        (mss.cert_pair(LABO), f"labo@{PEER_DOMAIN}", (550, b"5.7.1 Operator not in")),
        (mss.peer_operator_pair, "someone@autre.test", (550, b"5.7.1 Operator not in")),
    ):
        with smtplib.SMTP("127.0.0.1", mss.port("smtp-mx"), timeout=IO_TIMEOUT) as s:
            s.starttls(context=mss.client_context(cert))
            s.ehlo("mx.operateur-pair.test")
            code, text = s.docmd("MAIL", f"FROM:<{mail_from}>")
            assert (code, text[:len(expected[1])]) == expected, (cert, code, text)
    with smtplib.SMTP("127.0.0.1", mss.port("smtp-mx"), timeout=IO_TIMEOUT) as s:
        s.starttls(context=mss.client_context(mss.peer_operator_pair))
        s.ehlo("mx.operateur-pair.test")
        assert s.sendmail(sender, [MARTIN], message) == {}
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(MARTIN, mss.password(MARTIN))
        conn.ok('SELECT "INBOX"')
        found = untagged_of(conn.ok(f'UID SEARCH SUBJECT "Entre operateurs {token}"'), b"SEARCH")
        assert len(found[0].text.split()) == 3, found
    peer_events = [line for line in mss.audit_text().splitlines() if '"action": "peer"' in line]
    assert any('"no-certificate"' in line for line in peer_events), peer_events
    assert any('"not-whitelisted"' in line for line in peer_events), peer_events
    assert any('"allow"' in line and PEER_DOMAIN in line for line in peer_events), peer_events


def test_password_guessing_is_cut_off_and_traced(mss: MssInstance) -> None:
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        for i in range(3):  # limits.failed_auth
            _, tagged = conn.command(f'LOGIN "{PETIT}" "devine-{i}"')
            assert re.match(rb"A\d+ NO \[AUTHENTICATIONFAILED\]", tagged.text), tagged.text
        assert conn.read().text.startswith(b"* BYE")
        conn.sock.settimeout(5)
        assert conn.sock.recv(100) == b""  # closed by the server
    s = smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT)
    try:
        s.starttls(context=mss.client_context())
        s.ehlo("x.test")
        codes = [s.docmd("AUTH", "PLAIN " + base64.b64encode(
            f"\0{PETIT}\0devine-{i}".encode()).decode())[0] for i in range(3)]
        assert codes == [535, 535, 535], codes
        assert s.docmd("NOOP")[0] == 421  # then the server hangs up
    finally:
        s.close()
    # the right password still works afterwards (no lock-out of the agent)
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(PETIT, mss.password(PETIT))
    denied = [line for line in mss.audit_text().splitlines()
              if f'"actor": "{PETIT}"' in line and '"result": "deny"' in line]
    assert len(denied) >= 5, denied
    assert "devine" not in mss.audit_text()  # never the attempted password


TRUST_SPACE_SUITES = ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
                      "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA256")


def test_every_tls_listener_speaks_the_trust_space_suites_and_nothing_older(
    mss: MssInstance,
) -> None:
    """REFERENCE.md: clients negotiate TLS 1.2 with four ECDHE-RSA suites;
    nothing below TLS 1.2. Checked on each listener as `serve` wires it."""
    for name, _, role, tls in DEFAULT_PORTS:
        upgrade = tls == "starttls"
        for suite in TRUST_SPACE_SUITES:
            ctx = mss.client_context()
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(suite)
            with _open(mss, name, role, tls, upgrade=upgrade, ctx=ctx) as sock:
                assert isinstance(sock, ssl.SSLSocket)
                cipher = sock.cipher()
                assert cipher is not None and (sock.version(), cipher[0]) == ("TLSv1.2", suite)
        refused = []
        for label, setup in (("TLS 1.1", "old"), ("RSA key exchange, SHA-1", "weak")):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(mss.ca_file))
            if setup == "old":
                with warnings.catch_warnings():  # deprecated: that is the point
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            else:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers("AES128-SHA:AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA")
            try:
                with _open(mss, name, role, tls, upgrade=upgrade, ctx=ctx):
                    pass
            except (ssl.SSLError, ConnectionError):
                refused.append(label)
        assert refused == ["TLS 1.1", "RSA key exchange, SHA-1"], (name, refused)


# ---------------------------------------------------------------- privacy


HIDDEN_PROBES = (
    'SELECT "{m}"',
    'EXAMINE "{m}"',
    'STATUS "{m}" (MESSAGES UIDNEXT UNSEEN)',
    'LIST "" "{m}"',
    'LIST "" "{m}/*"',
    'LIST (SUBSCRIBED) "" "{m}*" RETURN (SPECIAL-USE STATUS (MESSAGES))',
    'GETACL "{m}"',
    'MYRIGHTS "{m}"',
    'GETQUOTAROOT "{m}"',
    'SUBSCRIBE "{m}"',
    'DELETE "{m}"',
    'RENAME "{m}" "Vole"',
    'CREATE "{m}/Vole"',
    'APPEND "{m}" {{5+}}\r\nhello',
)


def _normalised(untagged: list[Response], tagged: Response, name: str) -> list[bytes]:
    """Responses with the tag and the probed name taken out."""
    lines = [r.text for r in untagged] + [tagged.text.split(b" ", 1)[1]]
    return [line.replace(name.encode(), b"<NAME>") for line in lines]


def test_secretary_cannot_tell_the_practitioners_box_exists(mss: MssInstance) -> None:
    # Something to hide: a message in dr.martin's INBOX.
    secret = f"Confidentiel-{secrets.token_hex(4)}"
    submit(mss, LABO, [MARTIN], make_message(secret, "Diagnostic.", sender=LABO, to=[MARTIN]),
           cert_of=LABO)

    with ImapConn(mss.port("imaps"), mss.client_context()) as durand, \
            ImapConn(mss.port("imaps"), mss.client_context()) as petit:
        durand.login(DURAND, mss.password(DURAND))
        petit.login(PETIT, mss.password(PETIT))
        # NAMESPACE is the same for both agents and names nobody.
        ns_d = untagged_of(durand.ok("NAMESPACE"), b"NAMESPACE")
        ns_p = untagged_of(petit.ok("NAMESPACE"), b"NAMESPACE")
        assert [r.text for r in ns_d] == [r.text for r in ns_p]
        assert b"martin" not in ns_d[0].text
        # The full listing never shows his box.
        for listing in ('LIST "" "*"', 'LIST "Shared/" "*"', 'LIST "" "%/%"',
                        'LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)'):
            assert b"martin" not in b"\n".join(r.text for r in durand.ok(listing)), listing

        for hidden in (f"Shared/{MARTIN}/INBOX", f"Shared/{MARTIN}", f"Shared/{MARTIN}/Sent"):
            ghost = hidden.replace(MARTIN, f"personne@{DOMAIN}")
            for probe in HIDDEN_PROBES:
                seen = _normalised(*durand.command(probe.format(m=hidden)), hidden)
                none = _normalised(*durand.command(probe.format(m=ghost)), ghost)
                assert seen == none, (probe, hidden, seen, none)
            # COPY and MOVE out of the shared box into his.
            durand.ok(f'SELECT "Shared/{CARDIO}/INBOX"')
            for verb in ("COPY", "MOVE", "UID COPY", "UID MOVE"):
                seen = _normalised(*durand.command(f'{verb} 1:* "{hidden}"'), hidden)
                none = _normalised(*durand.command(f'{verb} 1:* "{ghost}"'), ghost)
                assert seen == none, (verb, seen, none)
            durand.ok("UNSELECT")

    # And the message stayed where it was, unread by anyone else.
    with ImapConn(mss.port("imaps"), mss.client_context()) as martin:
        martin.login(MARTIN, mss.password(MARTIN))
        martin.ok('SELECT "INBOX"')
        found = untagged_of(martin.ok(f'UID SEARCH SUBJECT "{secret}" UNSEEN'), b"SEARCH")
        assert len(found[0].text.split()) == 3, found


# ---------------------------------------------------------------- cleartext


def test_login_before_starttls_is_disabled_on_1143(mss: MssInstance) -> None:
    conn = ImapConn(mss.port("imap"))
    with conn:
        caps = conn.greeting.text
        assert b"LOGINDISABLED" in caps and b"STARTTLS" in caps, caps
        assert b"AUTH=PLAIN" not in caps
        password = mss.password(DURAND)
        for attempt in (f'LOGIN "{DURAND}" "{password}"',
                        "AUTHENTICATE PLAIN "
                        + base64.b64encode(f"\0{DURAND}\0{password}".encode()).decode()):
            _, tagged = conn.command(attempt)
            assert re.match(rb"A\d+ (NO|BAD)", tagged.text), tagged.text
        # still not authenticated
        _, tagged = conn.command('SELECT "INBOX"')
        assert re.match(rb"A\d+ BAD", tagged.text), tagged.text
        # after STARTTLS the same login works and LOGINDISABLED is gone
        conn.ok("STARTTLS")
        conn.sock = mss.client_context().wrap_socket(conn.sock, server_hostname="127.0.0.1")
        caps_after = untagged_of(conn.ok("CAPABILITY"), b"CAPABILITY")[0].text
        assert b"LOGINDISABLED" not in caps_after and b"STARTTLS" not in caps_after
        conn.login(DURAND, password)
    # The refused attempts never reached the authenticator as a success.
    assert not re.search(r'"actor": "sec.durand@hopital.test", "action": "login", '
                         r'"target": "imap", "result": "allow"[^\n]*"tls": false',
                         mss.audit_text())


# ---------------------------------------------------------------- big literal


def test_huge_append_literal_is_refused_without_reading_it(mss: MssInstance) -> None:
    assert mss.proc is not None
    pid = mss.proc.pid
    limit = 10_485_760  # limits.message_size of the demo mss.yaml
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(DURAND, mss.password(DURAND))
        messages = untagged_of(conn.ok('STATUS "INBOX" (MESSAGES)'), b"STATUS")[0].text
        before = rss_kib(pid)
        # Synchronising literal: refused before the client sends a byte.
        for size in (limit + 1, 2**31, 10**15):
            conn.send(f"B{size} APPEND INBOX (\\Seen) {{{size}}}\r\n".encode())
            r = conn.read()
            assert r.text.startswith(f"B{size} NO [TOOBIG]".encode()), r.text
        conn.ok("NOOP")  # the session goes on
        # Non-synchronising literal (LITERAL+): the octets arrive anyway; the
        # server must drop them as they come, not buffer 20 MB, then refuse.
        size = 2 * limit
        conn.send(f"C1 APPEND INBOX {{{size}+}}\r\n".encode())
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            conn.send(part)
            sent += len(part)
        conn.send(b"\r\n")
        untagged, tagged = conn.until_tagged(b"C1")
        assert re.match(rb"C1 (NO|BAD) \[TOOBIG\]", tagged.text), tagged.text
        conn.ok("NOOP")
        grown = rss_kib(pid) - before
    assert grown < 8 * 1024, f"serve grew by {grown} KiB handling refused literals"
    # Nothing was appended.
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(DURAND, mss.password(DURAND))
        after = untagged_of(conn.ok('STATUS "INBOX" (MESSAGES)'), b"STATUS")[0].text
        assert after == messages


# ---------------------------------------------------------------- at rest


def test_message_content_is_nowhere_in_clear_on_disk(mss: MssInstance) -> None:
    """Neither a delivered message nor one waiting in the outbound queue
    shows its subject or body in the database files, the audit log or the
    server log."""
    token = secrets.token_hex(6)
    subject = f"Sujet-{token}"
    body = f"Corps-{token} insuffisance cardiaque"
    remote = f"dr.dupont@{PEER_DOMAIN}"
    message = make_message(subject, body, sender=MARTIN, to=[CARDIO, remote])
    submit(mss, MARTIN, [CARDIO, remote], message, password_of=MARTIN)

    queued = run_mssctl(mss, "queue", "list")
    assert remote in queued, queued
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(DURAND, mss.password(DURAND))
        conn.ok(f'SELECT "Shared/{CARDIO}/INBOX"')
        found = untagged_of(conn.ok(f'UID SEARCH BODY "Corps-{token}"'), b"SEARCH")
        assert len(found[0].text.split()) == 3, found  # it is there, readable by IMAP

    files = [*mss.directory.glob("mss.db*"), mss.directory / "audit.log", mss.log_file]
    for f in files:
        data = f.read_bytes()
        for phrase in (token.encode(), subject.encode(), body.encode()):
            assert phrase not in data, f"{phrase!r} in clear in {f.name}"


# ---------------------------------------------------------------- hostile bytes


GARBAGE = (
    bytes(range(256)) + b"\r\n"
    + b"\x00\x00\x00\x00\r\n"
    + b"\xff\xfe" + "é€".encode("utf-16-le") + b"\r\n"
    + b"%s%s%n%n{99999999999999999999}\r\n"
    + b"A" * 5000 + b"\r\n"
    + os.urandom(3000) + b"\r\n"
)


def _drain(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Reads until the server closes or `timeout` passes."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    return out


def _open(mss: MssInstance, name: str, role: str, tls: str, *, upgrade: bool,
          ctx: ssl.SSLContext | None = None) -> socket.socket:
    """A connection past the greeting (and past STARTTLS when `upgrade`)."""
    ctx = ctx or mss.client_context()
    raw = socket.create_connection(("127.0.0.1", mss.port(name)), timeout=IO_TIMEOUT)
    try:
        sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if tls == "implicit" else raw
        greeting = sock.recv(4096)
        assert greeting.startswith(b"* OK" if role == "imap" else b"220 "), (name, greeting)
        if upgrade:
            sock.sendall(b"S STARTTLS\r\n" if role == "imap" else b"EHLO scan.test\r\n")
            if role != "imap":
                while not re.search(rb"^250 ", _recv_some(sock), re.M):
                    pass
                sock.sendall(b"STARTTLS\r\n")
            assert re.search(rb"(^S OK|^220 )", _recv_some(sock), re.M)
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise
    return sock


def _recv_some(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    assert data, "closed"
    return data


def test_garbage_on_every_port_gets_a_protocol_error(mss: MssInstance) -> None:
    for name, _, role, tls in DEFAULT_PORTS:
        port = mss.port(name)
        if tls == "implicit":
            # Not even TLS: the handshake fails and the connection ends.
            with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
                raw.sendall(GARBAGE)
                reply = _drain(raw)
            assert not reply or reply[:1] == b"\x15", (name, reply[:50])  # a TLS alert
        for upgrade in ((False, True) if tls == "starttls" else (False,)):
            with _open(mss, name, role, tls, upgrade=upgrade) as sock:
                sock.sendall(GARBAGE)
                reply = _drain(sock)
            where = (name, "after STARTTLS" if upgrade else "", reply[:300])
            if role == "imap":
                assert re.search(rb"^(\*|\S+) BAD ", reply, re.M), where
            else:
                assert re.search(rb"^5\d\d 5\.5\.\d ", reply, re.M), where
            assert b"Traceback" not in reply and b"Error:" not in reply, where
    assert_all_listeners_healthy(mss)  # and no_server_errors checks the log


def test_port_scan_loop_leaves_the_daemons_healthy(mss: MssInstance) -> None:
    linger_rst = struct.pack("ii", 1, 0)  # close with RST, as scanners do
    # More connections than limits.connections_per_ip (50): a leaked
    # per-address counter would lock 127.0.0.1 out afterwards.
    for i in range(60):
        for name, _, _, tls in DEFAULT_PORTS:
            s = socket.create_connection(("127.0.0.1", mss.port(name)), timeout=IO_TIMEOUT)
            if i % 3 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
            elif i % 3 == 1 and tls == "implicit":
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
            s.close()
    assert_all_listeners_healthy(mss)
    # and many at once, held open, then dropped
    held = [socket.create_connection(("127.0.0.1", mss.port("imap")), timeout=IO_TIMEOUT)
            for _ in range(40)]
    for s in held:
        s.close()
    assert_all_listeners_healthy(mss)  # and no_server_errors checks the log


def test_connect_close_on_imaps_logs_no_unhandled_error(mss: MssInstance) -> None:
    """A scanner opening and closing 993 (no TLS handshake) is routine: it
    must not fill the log with CRITICAL errors that hide real ones."""
    mark = mss.log_mark()
    for _ in range(5):
        socket.create_connection(("127.0.0.1", mss.port("imaps")), timeout=IO_TIMEOUT).close()
    # The closes are processed before these later connections are served.
    assert_all_listeners_healthy(mss)
    new = mss.log_since(mark)
    assert "Unhandled error" not in new and "CRITICAL" not in new, new[-2000:]


# ---------------------------------------------------------------- durability


def test_message_accepted_before_sigkill_is_there_after_restart(mss: MssInstance) -> None:
    token = secrets.token_hex(4)
    message = make_message(f"Avant coupure {token}", "Resultat critique.", sender=LABO,
                           to=[CARDIO, MARTIN], msgid=f"kill-{token}")
    ctx = mss.client_context(mss.cert_pair(LABO))
    s = smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT)
    try:
        s.starttls(context=ctx)
        s.ehlo("labo.test")
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 235
        s.mail(LABO)
        s.rcpt(CARDIO)
        s.rcpt(MARTIN)
        code, _ = s.data(message)
        assert code == 250
        mss.kill()  # SIGKILL right after the 250, before QUIT
    finally:
        s.close()
    assert mss.proc is not None and mss.proc.returncode == -9

    mss.start()
    for login, folder in ((MARTIN, "INBOX"), (DURAND, f"Shared/{CARDIO}/INBOX")):
        with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
            conn.login(login, mss.password(login))
            conn.ok(f'SELECT "{folder}"')
            found = untagged_of(conn.ok(f'UID SEARCH SUBJECT "Avant coupure {token}"'),
                                b"SEARCH")
            assert len(found[0].text.split()) == 3, (login, found)
    assert_all_listeners_healthy(mss)


def test_sigterm_with_busy_clients_stops_cleanly_and_drops_the_half_message(
    mss: MssInstance,
) -> None:
    """Stopping while a client IDLEs and another is in the middle of DATA:
    serve exits 0 promptly, and the unfinished message is not delivered."""
    token = secrets.token_hex(4)
    idler = ImapConn(mss.port("imaps"), mss.client_context())
    idler.login(MARTIN, mss.password(MARTIN))
    idler.ok('SELECT "INBOX"')
    idler.send(b"I1 IDLE\r\n")
    assert idler.read().text.startswith(b"+")
    s = smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT)
    try:
        s.starttls(context=mss.client_context(mss.cert_pair(LABO)))
        s.ehlo("labo.test")
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 235
        s.mail(LABO)
        s.rcpt(MARTIN)
        assert s.docmd("DATA")[0] == 354
        s.send(make_message(f"Interrompu {token}", "debut du corps", sender=LABO, to=[MARTIN]))
        started = time.monotonic()
        status = mss.stop()  # SIGTERM, no final "."
        assert status == 0, mss.log_tail()
        assert time.monotonic() - started < 5.0
    finally:
        s.close()
        idler.sock.close()
    mss.start()
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(MARTIN, mss.password(MARTIN))
        conn.ok('SELECT "INBOX"')
        found = untagged_of(conn.ok(f'UID SEARCH SUBJECT "Interrompu {token}"'), b"SEARCH")
        assert found[0].text.strip() == b"* SEARCH", found
