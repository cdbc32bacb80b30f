"""Cross-protocol, against the product as a user runs it (`mssctl init --demo`
then `mssctl serve`): a lab system submits a result over SMTP with its
organisation certificate; two secretaries read it in the shared functional
box and the practitioner in his own INBOX, over IMAPS; the audit log names
each agent and never holds message content.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    LABO,
    MARTIN,
    PETIT,
    ImapConn,
    MssInstance,
    Response,
    make_message,
    strip_trace,
    submit,
    untagged_of,
)

pytestmark = pytest.mark.e2e

SHARED_INBOX = f"Shared/{CARDIO}/INBOX"


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "cross")
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


def find_uid(conn: ImapConn, message_id: str) -> int:
    untagged = conn.ok(f'UID SEARCH HEADER Message-ID "{message_id}"')
    found = untagged_of(untagged, b"SEARCH")
    assert found, untagged
    uids = [int(x) for x in found[0].text.split()[2:]]
    assert len(uids) == 1, f"expected one copy of {message_id}, got UIDs {uids}"
    return uids[0]


def fetch_body(conn: ImapConn, uid: int) -> bytes:
    untagged = conn.ok(f"UID FETCH {uid} (BODY.PEEK[])")
    fetched = untagged_of(untagged, b"FETCH")
    assert len(fetched) == 1 and len(fetched[0].literals) == 1, untagged
    return fetched[0].literals[0]


def list_names(responses: list[Response]) -> list[str]:
    names = []
    for r in untagged_of(responses, b"LIST"):
        m = re.search(rb'"([^"]*)"$', r.text)
        assert m, r.text
        names.append(m.group(1).decode())
    return names


def audit_events(mss: MssInstance) -> list[dict[str, object]]:
    return [json.loads(line) for line in mss.audit_text().splitlines() if line.strip()]


def test_lab_result_reaches_shared_box_and_practitioner(mss: MssInstance) -> None:
    token = secrets.token_hex(4)
    subject = f"Resultat kaliemie patient-{token}"
    body_phrase = f"Kaliemie 6.8 mmol/L hyperkaliemie-{token}"
    msgid = f"res-{token}"
    message = make_message(subject, body_phrase, sender=LABO, to=[CARDIO, MARTIN], msgid=msgid)
    message_id = f"<{msgid}@labo.hopital.test>"

    # The lab software: STARTTLS on 2587, SASL EXTERNAL with its organisation certificate.
    reply = submit(mss, LABO, [CARDIO, MARTIN], message, cert_of=LABO)
    assert reply.startswith("2.0.0")

    # Each secretary, with her own password, over IMAPS.
    uids = {}
    for agent in (DURAND, PETIT):
        with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
            conn.login(agent, mss.password(agent))
            ns = untagged_of(conn.ok("NAMESPACE"), b"NAMESPACE")
            assert len(ns) == 1
            # personal, other users, shared: the functional boxes live in the shared one
            assert re.fullmatch(rb'\* NAMESPACE \(\("" "/"\)\) NIL \(\("Shared/" "/"\)\)',
                                ns[0].text), ns[0].text
            names = list_names(conn.ok('LIST "" "*"'))
            assert SHARED_INBOX in names and "INBOX" in names
            assert not any(MARTIN in n for n in names)
            assert list_names(conn.ok('LIST "Shared/" "%"')) == [f"Shared/{CARDIO}"]
            conn.ok(f'SELECT "{SHARED_INBOX}"')
            uid = find_uid(conn, message_id)
            uids[agent] = uid
            assert strip_trace(fetch_body(conn, uid)) == message
            # not in the agent's own box
            conn.ok('SELECT "INBOX"')
            untagged = conn.ok(f'UID SEARCH HEADER Message-ID "{message_id}"')
            assert untagged_of(untagged, b"SEARCH")[0].text.strip() == b"* SEARCH"
    # one shared copy: both agents see the same message
    assert uids[DURAND] == uids[PETIT]

    # The practitioner, with his card: EXTERNAL with Thunderbird's initial response.
    with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(MARTIN))) as conn:
        initial = base64.b64encode(MARTIN.encode()).decode()
        untagged, tagged = conn.command(f"AUTHENTICATE EXTERNAL {initial}")
        assert tagged.text.startswith(b"A001 OK"), tagged.text
        conn.ok('SELECT "INBOX"')
        raw = fetch_body(conn, find_uid(conn, message_id))
        assert strip_trace(raw) == message
        # the trace the server added names the authenticated submitter
        trace = raw[: len(raw) - len(message)]
        assert trace.startswith(b"Return-Path: <labo@hopital.test>\r\n")
        assert b"Received: " in trace and b"ESMTPSA" in trace

    # Audit: each agent by name, each access, never the content.
    events = audit_events(mss)

    def has(actor: str, action: str, target_part: str, **fields: object) -> bool:
        return any(
            e.get("actor") == actor and e.get("action") == action
            and target_part in str(e.get("target")) and e.get("result") in ("allow", "ok")
            and all(e.get(k) == v for k, v in fields.items())
            for e in events
        )

    for agent in (DURAND, PETIT):
        assert has(agent, "login", "imaps", method="password"), agent
        assert has(agent, "select", f"{CARDIO}/INBOX"), agent
    assert has(MARTIN, "login", "imaps", method="external")
    assert has(MARTIN, "select", f"{MARTIN}/INBOX")
    assert has(LABO, "login", "submission", method="external")
    assert has(LABO, "deliver", CARDIO)

    text = mss.audit_text()
    for phrase in (subject, body_phrase, token):
        assert phrase not in text, f"audit log holds message content {phrase!r}"
        assert phrase not in mss.log_tail(1_000_000), f"server log holds {phrase!r}"


@pytest.mark.skipif(not (shutil.which("swaks") and shutil.which("curl")),
                    reason="swaks and curl (Debian packages) are needed")
def test_swaks_implicit_tls_then_curl_imaps(mss: MssInstance, tmp_path: Path) -> None:
    """The same path with the Debian tools a sysadmin would reach for."""
    token = secrets.token_hex(4)
    subject = f"Compte-rendu swaks-{token}"
    body = f"Echographie normale corps-{token}"
    # swaks has no SASL EXTERNAL: a secretary writes to the practitioner with her password.
    swaks = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{mss.port('submissions')}", "--tls-on-connect",
         "--tls-ca-path", str(mss.ca_file), "--tls-verify",
         "--auth", "PLAIN", "--auth-user", DURAND, "--auth-password", mss.password(DURAND),
         "--from", DURAND, "--to", MARTIN, "--h-Subject", subject, "--body", body,
         "--helo", "labo.test", "--timeout", "10"],
        capture_output=True, text=True, timeout=30,
    )
    assert swaks.returncode == 0, swaks.stdout + swaks.stderr
    assert re.search(r"<~\s+250 2\.0\.0", swaks.stdout), swaks.stdout

    url = f"imaps://127.0.0.1:{mss.port('imaps')}/INBOX"
    common = ["curl", "--silent", "--show-error", "--cacert", str(mss.ca_file),
              "--user", f"{MARTIN}:{mss.password(MARTIN)}", "--max-time", "10"]
    deadline = time.monotonic() + 5
    while True:  # delivery is committed before the 250, so this normally passes at once
        search = subprocess.run([*common, url, "-X", f'UID SEARCH SUBJECT "swaks-{token}"'],
                                capture_output=True, text=True, timeout=15)
        assert search.returncode == 0, search.stderr
        uids = search.stdout.split()[2:]
        if uids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(uids) == 1, search.stdout
    fetched = subprocess.run([*common, f"{url};UID={uids[0]}"],
                             capture_output=True, timeout=15)
    assert fetched.returncode == 0, fetched.stderr
    assert f"Subject: {subject}".encode() in fetched.stdout
    assert body.encode() in fetched.stdout
    assert fetched.stdout.startswith(f"Return-Path: <{DURAND}>\r\n".encode())


def test_awkward_content_survives_smtp_to_imap_byte_for_byte(mss: MssInstance) -> None:
    """Dot-stuffing, 8-bit UTF-8, a 998-octet line, folded headers, empty
    lines and trailing blanks: what the lab sends is what IMAP returns, and
    the sections Thunderbird asks for are cut at the right octets."""
    token = secrets.token_hex(4)
    body = (
        "Ligne normale\r\n.\r\n..deux points\r\n.point initial\r\nFrom le debut\r\n"
        "Accents: é à ç œ € ñ 中文\r\n" + "x" * 998 + "\r\n\tTabulation et espaces   \r\n"
        "\r\n\r\nDerniere ligne\r\n"
    ).encode()
    head = make_message(f"Fidelite {token}", "-", sender=LABO, to=[MARTIN],
                        msgid=f"fid-{token}").split(b"\r\n\r\n")[0]
    head += (b"\r\nContent-Transfer-Encoding: 8bit\r\nX-MSS-INS: O\r\nX-Long: "
             + b"y" * 200 + b"\r\n\tfolded continuation")
    message = head + b"\r\n\r\n" + body
    submit(mss, LABO, [MARTIN], message, cert_of=LABO)

    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(MARTIN, mss.password(MARTIN))
        conn.ok('SELECT "INBOX"')
        uid = find_uid(conn, f"<fid-{token}@labo.hopital.test>")
        fetched = untagged_of(conn.ok(
            f"UID FETCH {uid} (RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT] "
            f"BODY.PEEK[HEADER.FIELDS (X-Long X-MSS-INS)])"), b"FETCH")
        assert len(fetched) == 1
        whole, text, fields = fetched[0].literals
        assert strip_trace(whole) == message
        assert f"RFC822.SIZE {len(whole)} ".encode() in fetched[0].text
        assert text == body
        assert fields == (b"X-MSS-INS: O\r\nX-Long: " + b"y" * 200
                          + b"\r\n\tfolded continuation\r\n\r\n")


def test_functional_box_teamwork_is_live_and_traced(mss: MssInstance) -> None:
    """Both secretaries keep the shared box open (IDLE); a lab result arrives
    by SMTP and both are told within a second; one files it into the box's
    Archive, the other learns it left INBOX; the audit says who did it."""
    token = secrets.token_hex(4)
    durand = ImapConn(mss.port("imaps"), mss.client_context())
    petit = ImapConn(mss.port("imaps"), mss.client_context())
    with durand, petit:
        counts = {}
        for conn, agent in ((durand, DURAND), (petit, PETIT)):
            conn.login(agent, mss.password(agent))
            exists = untagged_of(conn.ok(f'SELECT "{SHARED_INBOX}"'), b"EXISTS")
            counts[agent] = int(exists[0].text.split()[1])
            conn.send(b"I1 IDLE\r\n")
            assert conn.read().text.startswith(b"+")
        assert counts[DURAND] == counts[PETIT]
        n = counts[DURAND] + 1

        message = make_message(f"Urgent troponine {token}", "Troponine elevee.", sender=LABO,
                               to=[CARDIO], msgid=f"team-{token}")
        stamps: list[float] = []
        submit(mss, LABO, [CARDIO], message, cert_of=LABO, accepted_at=stamps)
        for conn in (durand, petit):
            conn.sock.settimeout(3)  # bounds the wait; the assertion measures
            r = conn.read()
            assert r.text == f"* {n} EXISTS".encode(), r.text
            elapsed = time.monotonic() - stamps[0]
            assert elapsed <= 1.0, f"EXISTS {elapsed:.2f}s after the SMTP 250"
            conn.sock.settimeout(10)
            conn.send(b"DONE\r\n")
            _, done = conn.until_tagged(b"I1")
            assert done.text.startswith(b"I1 OK"), done.text

        audit_before = len(mss.audit_text())
        uid = find_uid(durand, f"<team-{token}@labo.hopital.test>")
        moved = durand.ok(f'UID MOVE {uid} "Shared/{CARDIO}/Archive"')
        assert any(b"COPYUID" in r.text for r in moved), moved
        assert f"* {n} EXPUNGE".encode() in [r.text for r in moved]
        # petit is told at her next command, with her own sequence numbers
        told = [r.text for r in petit.ok("NOOP")]
        assert f"* {n} EXPUNGE".encode() in told, told
        petit.ok(f'SELECT "Shared/{CARDIO}/Archive"')
        archived = fetch_body(petit, find_uid(petit, f"<team-{token}@labo.hopital.test>"))
        assert strip_trace(archived) == message

    events = [json.loads(line) for line in mss.audit_text()[audit_before:].splitlines()]
    movers = {e["actor"] for e in events if e.get("action") == "move"}
    assert movers == {DURAND}, events


def test_updating_search_is_told_of_an_smtp_delivery(mss: MssInstance) -> None:
    """RFC 5267 CONTEXT=SEARCH over real sockets: a secretary keeps a search
    of the shared box up to date (UID SEARCH RETURN (UPDATE)) and idles; a
    lab result submitted by SMTP that matches it is told as ADDTO after its
    EXISTS; after CANCELUPDATE the next one is not."""
    token = secrets.token_hex(4)
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(DURAND, mss.password(DURAND))
        exists = untagged_of(conn.ok(f'SELECT "{SHARED_INBOX}"'), b"EXISTS")
        n = int(exists[0].text.split()[1]) + 1
        conn.send(f'C1 UID SEARCH RETURN (UPDATE COUNT) SUBJECT "kaliemie {token}"\r\n'.encode())
        untagged, done = conn.until_tagged(b"C1")
        assert [r.text for r in untagged] == [b'* ESEARCH (TAG "C1") UID COUNT 0'], untagged
        assert done.text.startswith(b"C1 OK"), done.text

        def deliver(subject: str, mid: str) -> None:
            submit(mss, LABO, [CARDIO], make_message(subject, "Resultat.", sender=LABO,
                                                     to=[CARDIO], msgid=mid), cert_of=LABO)

        conn.send(b"I1 IDLE\r\n")
        assert conn.read().text.startswith(b"+")
        deliver(f"Kaliemie {token}", f"ctx-{token}")
        conn.sock.settimeout(5)
        assert conn.read().text == f"* {n} EXISTS".encode()
        told = conn.read().text
        if told.endswith(b" RECENT"):  # this session may claim \\Recent
            told = conn.read().text
        m = re.fullmatch(rb'\* ESEARCH \(TAG "C1"\) UID ADDTO \(0 (\d+)\)', told)
        assert m, told
        conn.sock.settimeout(10)
        conn.send(b"DONE\r\n")
        _, done = conn.until_tagged(b"I1")
        assert done.text.startswith(b"I1 OK"), done.text
        assert find_uid(conn, f"<ctx-{token}@labo.hopital.test>") == int(m.group(1))

        conn.ok('CANCELUPDATE "C1"')
        deliver(f"Kaliemie {token} (controle)", f"ctx2-{token}")
        deadline = time.monotonic() + 5
        seen: list[bytes] = []
        while not any(t.endswith(b" EXISTS") for t in seen) and time.monotonic() < deadline:
            seen += [r.text for r in conn.ok("NOOP")]
        assert f"* {n + 1} EXISTS".encode() in seen, seen
        assert not any(t.startswith(b"* ESEARCH") for t in seen), seen


@pytest.mark.slow
def test_two_workers_share_the_load_without_losing_or_doubling(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`serve --workers 2`: eight lab clients submit 40 results at once to the
    functional box; whichever worker takes each SMTP session, the secretary
    IDLEing on the other sees every one, UIDs are unique and increasing, and
    SIGTERM stops both workers with status 0."""
    inst = MssInstance.demo(tmp_path_factory, "workers")
    inst.serve_args = ("--workers", "2")
    inst.start()
    try:
        with ImapConn(inst.port("imaps"), inst.client_context()) as conn:
            conn.login(PETIT, inst.password(PETIT))
            conn.ok(f'SELECT "{SHARED_INBOX}"')
            conn.send(b"I1 IDLE\r\n")
            assert conn.read().text.startswith(b"+")
            failures: list[BaseException] = []

            def client(k: int) -> None:
                try:
                    for j in range(5):
                        msg = make_message(f"Lot {k}-{j}", "x", sender=LABO, to=[CARDIO],
                                           msgid=f"lot-{k}-{j}")
                        submit(inst, LABO, [CARDIO], msg, cert_of=LABO)
                except BaseException as exc:  # reported below, in the test's thread
                    failures.append(exc)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not failures, failures
            done = time.monotonic()
            conn.sock.settimeout(3)  # bounds the wait; the assertion measures
            seen = 0
            while seen < 40:
                r = conn.read()
                if m := re.fullmatch(rb"\* (\d+) EXISTS", r.text):
                    seen = int(m.group(1))
            assert time.monotonic() - done <= 1.0
            conn.send(b"DONE\r\n")
            conn.until_tagged(b"I1")
            fetched = untagged_of(conn.ok("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS "
                                          "(Message-ID)])"), b"FETCH")
            uids = [int(m.group(1)) for r in fetched if (m := re.search(rb"UID (\d+)", r.text))]
            ids = {r.literals[0].strip() for r in fetched}
            assert len(fetched) == 40 and len(uids) == 40 and len(ids) == 40
            assert uids == sorted(set(uids))
    finally:
        status = inst.stop()
    assert status == 0, inst.log_tail()
    assert not inst.errors_since(0), inst.errors_since(0)


def test_imap_offers_external_only_with_a_certificate(mss: MssInstance) -> None:
    """The root of the mbsync failure below, as the client sees it: SMTP
    already offers EXTERNAL only to a client that presented a certificate."""
    plain = mss.client_context()
    card = mss.client_context(mss.cert_pair(MARTIN))
    with ImapConn(mss.port("imaps"), card) as conn:
        assert b"AUTH=EXTERNAL" in conn.greeting.text
    with ImapConn(mss.port("imaps"), plain) as conn:
        assert b"AUTH=EXTERNAL" not in conn.greeting.text, conn.greeting.text
        caps = untagged_of(conn.ok("CAPABILITY"), b"CAPABILITY")[0].text
        assert b"AUTH=EXTERNAL" not in caps, caps
    with ImapConn(mss.port("imap")) as conn:
        conn.ok("STARTTLS")
        conn.sock = plain.wrap_socket(conn.sock, server_hostname="127.0.0.1")
        caps = untagged_of(conn.ok("CAPABILITY"), b"CAPABILITY")[0].text
        assert b"AUTH=EXTERNAL" not in caps, caps


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is needed")
@pytest.mark.parametrize("auth_mechs", [
    "PLAIN",
    pytest.param(None, id="default-config"),
])
def test_mbsync_pulls_the_shared_box(mss: MssInstance, tmp_path: Path,
                                     auth_mechs: str | None) -> None:
    """A secretary's mbsync, configured as its manual says, mirrors the
    functional box; what lands in the Maildir is what the lab sent."""
    token = secrets.token_hex(4)
    message = make_message(f"Bilan mbsync-{token}", f"Ionogramme {token}", sender=LABO,
                           to=[CARDIO], msgid=f"mbsync-{token}")
    submit(mss, LABO, [CARDIO], message, cert_of=LABO)
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    # isync checks the certificate against a host *name*: the dev certificate
    # names localhost (which resolves to 127.0.0.1 only here).
    rc.write_text(f"""
IMAPAccount agent
Host localhost
Port {mss.port('imaps')}
User {DURAND}
Pass "{mss.password(DURAND)}"
SSLType IMAPS
CertificateFile {mss.ca_file}
{f'AuthMechs {auth_mechs}' if auth_mechs else ''}

IMAPStore remote
Account agent

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel cardio
Far :remote:"{SHARED_INBOX}"
Near :local:cardio
Create Near
Sync Pull
SyncState *
""")
    proc = subprocess.run(["mbsync", "-c", str(rc), "cardio"], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    files = [p for sub in ("cur", "new") for p in (local / "cardio" / sub).iterdir()]
    mirrored = [p.read_bytes() for p in files if token.encode() in p.read_bytes()]
    assert len(mirrored) == 1, [p.name for p in files]
    # mbsync stores Maildir files with Unix line ends and its own X-TUID field
    crlf = mirrored[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    crlf = re.sub(rb"(?m)^X-TUID: [^\r]*\r\n", b"", crlf)
    assert strip_trace(crlf) == message, crlf


def test_notify_tells_a_secretary_without_any_command(mss: MssInstance) -> None:
    """RFC 5465 over IMAPS: with NOTIFY, a lab result submitted by SMTP is
    announced in the selected functional box (EXISTS, then the FETCH asked
    for) while the client sends nothing; the other agent's MOVE to the
    Archive comes as EXPUNGE and as a STATUS of the watched Archive."""
    token = secrets.token_hex(4)
    archive = f"Shared/{CARDIO}/Archive"
    durand = ImapConn(mss.port("imaps"), mss.client_context())
    petit = ImapConn(mss.port("imaps"), mss.client_context())
    with durand, petit:
        durand.login(DURAND, mss.password(DURAND))
        petit.login(PETIT, mss.password(PETIT))
        caps = b" ".join(r.text for r in durand.ok("CAPABILITY"))
        assert b" NOTIFY" in caps
        exists = untagged_of(durand.ok(f'SELECT "{SHARED_INBOX}"'), b"EXISTS")
        n = int(exists[0].text.split()[1]) + 1
        told = durand.ok(
            'NOTIFY SET STATUS (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) '
            f'MessageExpunge)) (mailboxes "{archive}" (MessageNew MessageExpunge))')
        status = untagged_of(told, b"STATUS")
        assert len(status) == 1 and archive.encode() in status[0].text, told
        before = int(re.search(rb"MESSAGES (\d+)", status[0].text).group(1))  # type: ignore[union-attr]

        message = make_message(f"Kaliemie {token}", "K+ 6.1", sender=LABO, to=[CARDIO],
                               msgid=f"notify-{token}")
        submit(mss, LABO, [CARDIO], message, cert_of=LABO)
        durand.sock.settimeout(5)
        got = [durand.read()]
        while len(got) < 2:
            r = durand.read()
            if not r.text.endswith(b" RECENT"):  # \Recent goes to one session only
                got.append(r)
        assert got[0].text == b"* %d EXISTS" % n, got
        assert got[1].text.startswith(b"* %d FETCH (UID " % n), got
        assert got[1].literals == [f"Subject: Kaliemie {token}\r\n\r\n".encode()], got

        petit.ok(f'SELECT "{SHARED_INBOX}"')
        uid = find_uid(petit, f"<notify-{token}@labo.hopital.test>")
        petit.ok(f'UID MOVE {uid} "{archive}"')
        seen: list[bytes] = []
        while not (any(t == b"* %d EXPUNGE" % n for t in seen)
                   and any(t.startswith(b"* STATUS") for t in seen)):
            seen.append(durand.read().text)
        st = next(t for t in seen if t.startswith(b"* STATUS"))
        assert b"MESSAGES %d " % (before + 1) in st, seen
        durand.sock.settimeout(10)
        untagged, done = durand.command("NOTIFY NONE")
        assert done.text.endswith(b"OK NOTIFY completed"), (untagged, done)
