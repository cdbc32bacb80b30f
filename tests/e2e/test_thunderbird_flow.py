"""What Thunderbird sends (REFERENCE.md, "What a real client sends"), byte
for byte, against `mssctl serve` of a demo instance, with the answers a
client relies on: tagged OK, CAPABILITY in the greeting and after login,
exact partial slices under the right label, \\Seen set by BODY[], and IDLE
announcing an SMTP delivery within one second on the second connection.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from integration_support import (
    LABO,
    MARTIN,
    ImapConn,
    MssInstance,
    Response,
    make_message,
    strip_trace,
    submit,
    untagged_of,
)

pytestmark = pytest.mark.e2e

HEADER_FIELDS = (
    "From To Cc Bcc Subject Date Message-ID Priority X-Priority References "
    "Newsgroups In-Reply-To Content-Type Reply-To Received"
)
CHUNK = 65536
IDLE_DEADLINE = 1.0  # seconds, issue 4


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "tbird")
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


def big_message(token: str) -> bytes:
    """A report with a base64 attachment, well over 64 KiB (Thunderbird
    fetches such messages in 64 KiB slices)."""
    payload = base64.encodebytes(secrets.token_bytes(150_000)).replace(b"\n", b"\r\n")
    head = make_message(f"Dossier complet {token}", "Voir piece jointe.", sender=LABO,
                        to=[MARTIN], msgid=f"big-{token}")
    headers, _, _ = head.partition(b"\r\n\r\n")
    headers = headers.replace(b"Content-Type: text/plain; charset=utf-8",
                              b'Content-Type: multipart/mixed; boundary="b1"')
    return (
        headers + b"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nVoir piece jointe.\r\n"
        b"--b1\r\nContent-Type: application/zip; name=IHE_XDM.ZIP\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--b1--\r\n"
    )


def authenticate_plain(conn: ImapConn, login: str, password: str) -> Response:
    """AUTHENTICATE PLAIN without initial response: wait for "+", then send."""
    conn.send(b"A1 AUTHENTICATE PLAIN\r\n")
    cont = conn.read()
    assert cont.text.startswith(b"+"), cont.text
    conn.send(base64.b64encode(f"\0{login}\0{password}".encode()) + b"\r\n")
    untagged, tagged = conn.until_tagged(b"A1")
    assert tagged.text.startswith(b"A1 OK"), tagged.text
    return tagged


@dataclass
class FetchItems:
    uid: int
    size: int  # RFC822.SIZE, -1 when not asked for


def fetch_items(r: Response) -> FetchItems:
    """UID and RFC822.SIZE of one FETCH response (UID is always there: UID FETCH)."""
    uid = re.search(rb"\bUID (\d+)", r.text)
    size = re.search(rb"\bRFC822\.SIZE (\d+)", r.text)
    assert uid, r.text[:200]
    return FetchItems(int(uid.group(1)), int(size.group(1)) if size else -1)


def uid_fetch(conn: ImapConn, uid: int, items: str) -> Response:
    fetched = untagged_of(conn.ok(f"UID FETCH {uid} {items}"), b"FETCH")
    assert len(fetched) == 1, fetched
    return fetched[0]


def test_thunderbird_session(mss: MssInstance) -> None:
    token = secrets.token_hex(4)
    small = make_message(f"Consultation {token}", "RAS.", sender=LABO, to=[MARTIN],
                         msgid=f"small-{token}")
    big = big_message(token)
    submit(mss, LABO, [MARTIN], small, cert_of=LABO)
    submit(mss, LABO, [MARTIN], big, cert_of=LABO)

    conn = ImapConn(mss.port("imaps"), mss.client_context())
    assert re.match(rb"^\* OK \[CAPABILITY [^]]*\bIMAP4rev1\b[^]]*\bAUTH=PLAIN\b",
                    conn.greeting.text), conn.greeting.text
    tagged = authenticate_plain(conn, MARTIN, mss.password(MARTIN))
    caps = re.match(rb"^A1 OK \[CAPABILITY ([^]]*)\]", tagged.text)
    assert caps, tagged.text
    for cap in (b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"LIST-EXTENDED",
                b"CONDSTORE", b"ID"):
        assert cap in caps.group(1).split(), cap

    ns = untagged_of(conn.ok("NAMESPACE"), b"NAMESPACE")
    assert len(ns) == 1 and ns[0].text.startswith(b'* NAMESPACE (("" "/"))'), ns

    ident = untagged_of(conn.ok('ID ("name" "Thunderbird" "version" "153.0")'), b"ID")
    assert len(ident) == 1, ident

    subscribed = untagged_of(conn.ok('LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)'), b"LIST")
    by_name = {r.text.rsplit(b" ", 1)[1].strip(b'"'): r.text for r in subscribed}
    assert b"INBOX" in by_name, subscribed
    assert all(b"\\Subscribed" in text for text in by_name.values()), subscribed
    # Thunderbird finds its special folders here (else it creates Trash itself)
    uses = b" ".join(by_name.values())
    for use in (b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"\\Archive"):
        assert use in uses, use

    inbox = untagged_of(conn.ok('LIST "" "INBOX"'), b"LIST")
    assert [r.text for r in inbox] == [b'* LIST (\\HasNoChildren) "/" "INBOX"']
    trash = untagged_of(conn.ok('LIST "" "Trash"'), b"LIST")
    assert len(trash) == 1 and b"\\Trash" in trash[0].text

    selected = conn.ok('SELECT "INBOX"')
    exists = untagged_of(selected, b"EXISTS")
    assert len(exists) == 1
    count = int(exists[0].text.split()[1])
    assert count >= 2
    texts = b"\n".join(r.text for r in selected)
    for code in (rb"\[UIDVALIDITY \d+\]", rb"\[UIDNEXT \d+\]", rb"\[PERMANENTFLAGS \(",
                 rb"^\* FLAGS \("):
        assert re.search(code, texts, re.M), code

    flags = untagged_of(conn.ok("UID FETCH 1:* (FLAGS)"), b"FETCH")
    assert len(flags) == count
    uids = [fetch_items(r).uid for r in flags]
    assert uids == sorted(uids)

    headers = untagged_of(
        conn.ok(f"UID FETCH {uids[0]}:{uids[-1]} (UID RFC822.SIZE FLAGS "
                f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"),
        b"FETCH")
    assert len(headers) == count
    by_subject: dict[bytes, Response] = {}
    for r in headers:
        assert f"BODY[HEADER.FIELDS ({HEADER_FIELDS})] {{".encode() in r.text, r.text[:300]
        assert len(r.literals) == 1 and r.literals[0].endswith(b"\r\n\r\n")
        m = re.search(rb"^Subject: (.*)$", r.literals[0], re.M)
        assert m, r.literals[0]
        by_subject[m.group(1).rstrip(b"\r")] = r
        assert b"\\Seen" not in r.text  # PEEK
    small_r = by_subject[f"Consultation {token}".encode()]
    big_r = by_subject[f"Dossier complet {token}".encode()]
    big_uid = fetch_items(big_r).uid
    big_size = fetch_items(big_r).size
    small_uid = fetch_items(small_r).uid
    assert big_size > 2 * CHUNK

    untagged, tagged = conn.command("NOOP")
    assert tagged.text.startswith(b"A") and b" OK " in tagged.text

    # Opening the big message: 64 KiB slices of BODY[] (not PEEK).
    parts = []
    offset = 0
    while offset < big_size:
        r = uid_fetch(conn, big_uid, f"(UID RFC822.SIZE BODY[]<{offset}.{CHUNK}>)")
        label = f"BODY[]<{offset}> {{".encode()
        assert label in r.text, r.text[:200]
        assert len(r.literals) == 1
        assert len(r.literals[0]) == min(CHUNK, big_size - offset)
        parts.append(r.literals[0])
        offset += CHUNK
    whole = b"".join(parts)
    assert len(whole) == big_size
    assert strip_trace(whole) == big
    full = uid_fetch(conn, big_uid, "(BODY.PEEK[])").literals[0]
    assert whole == full
    # BODY[] (not PEEK) set \Seen, and the server says so
    seen = uid_fetch(conn, big_uid, "(FLAGS)")
    assert b"\\Seen" in seen.text

    # Opening the small message in one fetch.
    r = uid_fetch(conn, small_uid, "(UID RFC822.SIZE BODY[])")
    assert strip_trace(r.literals[0]) == small
    assert len(r.literals[0]) == fetch_items(r).size
    assert b"\\Seen" in uid_fetch(conn, small_uid, "(FLAGS)").text

    # Second connection (Thunderbird opens two): IDLE on INBOX.
    idler = ImapConn(mss.port("imaps"), mss.client_context())
    authenticate_plain(idler, MARTIN, mss.password(MARTIN))
    idler.ok('SELECT "INBOX"')
    idler.send(b"I1 IDLE\r\n")
    assert idler.read().text.startswith(b"+")

    news = make_message(f"Alerte {token}", "Nouveau resultat.", sender=LABO, to=[MARTIN],
                        msgid=f"idle-{token}")
    stamps: list[float] = []
    submit(mss, LABO, [MARTIN], news, cert_of=LABO, accepted_at=stamps)
    # A generous socket timeout bounds the wait; the assertion measures.
    idler.sock.settimeout(IDLE_DEADLINE + 2)
    r = idler.read()
    elapsed = time.monotonic() - stamps[0]
    assert re.fullmatch(rb"\* \d+ EXISTS", r.text), r.text
    assert int(r.text.split()[1]) == count + 1
    assert elapsed <= IDLE_DEADLINE, f"EXISTS came {elapsed:.2f}s after the SMTP 250"
    idler.send(b"DONE\r\n")
    _, done = idler.until_tagged(b"I1")
    assert done.text.startswith(b"I1 OK"), done.text
    idler.ok("NOOP")
    idler.close()

    # The first connection learns of it at its next command, then syncs it.
    assert untagged_of(conn.ok("NOOP"), b"EXISTS")
    new = untagged_of(conn.ok(f"UID FETCH {big_uid + 1}:* (FLAGS)"), b"FETCH")
    assert len(new) == 1 and b"\\Seen" not in new[0].text
    conn.close()


def test_thunderbird_offline_sync_fetches_every_body_without_marking_seen(
    mss: MssInstance,
) -> None:
    token = secrets.token_hex(4)
    sent = [make_message(f"Synchro {token} {i}", f"Corps {i} " * (i * 50 + 1), sender=LABO,
                         to=[MARTIN], msgid=f"sync-{token}-{i}") for i in range(3)]
    for message in sent:
        submit(mss, LABO, [MARTIN], message, cert_of=LABO)
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        authenticate_plain(conn, MARTIN, mss.password(MARTIN))
        conn.ok('SELECT "INBOX"')
        uids = [int(x) for x in untagged_of(
            conn.ok(f'UID SEARCH SUBJECT "Synchro {token}"'), b"SEARCH")[0].text.split()[2:]]
        assert len(uids) == 3
        fetched = untagged_of(
            conn.ok(f"UID FETCH {uids[0]}:{uids[-1]} (UID RFC822.SIZE BODY.PEEK[])"), b"FETCH")
        bodies = {}
        for r in fetched:
            items = fetch_items(r)
            assert len(r.literals) == 1 and len(r.literals[0]) == items.size
            bodies[items.uid] = r.literals[0]
        assert [strip_trace(bodies[u]) for u in uids] == sent
        flags = untagged_of(conn.ok(f"UID FETCH {uids[0]}:{uids[-1]} (FLAGS)"), b"FETCH")
        assert not any(b"\\Seen" in r.text for r in flags), flags


def test_thunderbird_sends_then_files_a_copy_in_sent(mss: MssInstance) -> None:
    """Sending: SMTP submission with the password (AUTH PLAIN after STARTTLS),
    then APPEND of the same bytes to Sent with a synchronising literal."""
    token = secrets.token_hex(4)
    message = make_message(f"Avis cardiologique {token}", "Pas de contre-indication.",
                           sender=MARTIN, to=[LABO], msgid=f"sent-{token}")
    submit(mss, MARTIN, [LABO], message, password_of=MARTIN)

    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        authenticate_plain(conn, MARTIN, mss.password(MARTIN))
        conn.send(b'S1 APPEND "Sent" (\\Seen) "27-Nov-2026 10:00:00 +0100" {%d}\r\n'
                  % len(message))
        assert conn.read().text.startswith(b"+")
        conn.send(message + b"\r\n")
        _, tagged = conn.until_tagged(b"S1")
        appended = re.match(rb"S1 OK \[APPENDUID (\d+) (\d+)\]", tagged.text)
        assert appended, tagged.text
        conn.ok('SELECT "Sent"')
        r = uid_fetch(conn, int(appended.group(2)), "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert r.literals == [message]  # no trace fields on an APPEND
        assert b"\\Seen" in r.text
        date = re.search(rb'INTERNALDATE "([^"]+)"', r.text)
        assert date, r.text
        # the same instant (a server may render it in another zone)
        assert (datetime.strptime(date.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
                == datetime(2026, 11, 27, 9, 0, tzinfo=UTC))

    # and the lab box received it over SMTP
    with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(LABO))) as conn:
        conn.ok("AUTHENTICATE EXTERNAL =")
        conn.ok('SELECT "INBOX"')
        found = untagged_of(conn.ok(f'UID SEARCH HEADER Message-ID "<sent-{token}@labo.hopital.test>"'),
                            b"SEARCH")
        assert len(found[0].text.split()) == 3, found


@pytest.mark.parametrize("login", ["password", "card"])
def test_thunderbird_starttls_on_1143(mss: MssInstance, login: str) -> None:
    """Port 143 with STARTTLS, Thunderbird's default for a new account: it
    asks CAPABILITY again after the handshake and logs in with what it sees."""
    cert = mss.cert_pair(MARTIN) if login == "card" else None
    with ImapConn(mss.port("imap")) as conn:
        assert b"STARTTLS" in conn.greeting.text
        conn.ok("STARTTLS")
        conn.sock = mss.client_context(cert).wrap_socket(conn.sock, server_hostname="127.0.0.1")
        caps = untagged_of(conn.ok("CAPABILITY"), b"CAPABILITY")[0].text.split()
        assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
        assert b"AUTH=PLAIN" in caps
        if login == "card":
            assert b"AUTH=EXTERNAL" in caps
            _, tagged = conn.command(
                "AUTHENTICATE EXTERNAL " + base64.b64encode(MARTIN.encode()).decode())
            assert re.match(rb"A\d+ OK \[CAPABILITY ", tagged.text), tagged.text
        else:
            conn.counter = 1
            authenticate_plain(conn, MARTIN, mss.password(MARTIN))
        conn.ok('SELECT "INBOX"')
