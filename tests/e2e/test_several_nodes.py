"""Several nodes on one PostgreSQL: two `mssctl serve` processes, each with
its own settings file and ports (tests/e2e/nodes_support.py), on one
database of the throwaway cluster, driven by real clients (smtplib, a
byte-exact IMAP client over TLS with the instance's CA).

- A delivery through node A reaches an IDLE client on node B within a
  second, pushed by PostgreSQL (LISTEN/NOTIFY), and still does while B's
  listening connection is cut (B polls until it is back, then listens again).
- Two secretaries on the shared box, one per node, see each other's flag
  changes while idling.
- A NOTIFY session on node B hears of folders made, renamed, subscribed and
  deleted on node A.
- A login lock made on node A holds on node B, and an unlock on B holds on A.
- Node A killed with SIGKILL under SMTP load loses no acknowledged message
  (every 250 has its message in the store) and node B keeps serving.
- A node whose `database.url` lists two hosts, the first one down (as after
  losing a primary), starts and serves, its listening connection included.
"""

from __future__ import annotations

import re
import secrets
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    IO_TIMEOUT,
    PETIT,
    ImapConn,
    MssInstance,
    make_message,
    run_mssctl,
    submit,
    untagged_of,
)
from nodes_support import copy_sqlite_to_postgres, feed_backends, pg_nodes, use_database

from conf.loader import load_settings
from storage import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SHARED_INBOX = f"Shared/{CARDIO}/INBOX"
PUSH_DEADLINE = 1.0  # seconds from the SMTP 250 on A to the EXISTS on B


def _wait(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)  # polling with a deadline, not synchronising


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          pg_cluster: Any) -> Iterator[tuple[MssInstance, MssInstance, str]]:
    settings = getattr(request, "param", None)
    a, b, url = pg_nodes(tmp_path_factory, pg_cluster, "nodes", settings=settings)
    marks = {}
    try:
        for node in (a, b):
            node.start()
            marks[node.directory] = node.log_mark()
        yield a, b, url
        for node in (a, b):
            if node.running:
                assert node.stop() == 0, node.log_tail()
    finally:
        a.kill()
        b.kill()
    for node in (a, b):
        text = node.log_since(marks[node.directory])
        assert "Traceback" not in text and "[cid=" not in text, text[-4000:]


def _idle(conn: ImapConn) -> None:
    conn.send(b"I1 IDLE\r\n")
    assert conn.read().text.startswith(b"+")


def _done(conn: ImapConn) -> list[bytes]:
    conn.send(b"DONE\r\n")
    untagged, tagged = conn.until_tagged(b"I1")
    assert tagged.text.startswith(b"I1 OK"), tagged.text
    return [r.text for r in untagged]


def _exists_after(conn: ImapConn, accepted_at: float, want: int) -> float:
    """Reads the IDLE stream until `* want EXISTS`; returns the delay since
    the SMTP 250 (an upper bound: the line may have waited in the socket)."""
    conn.sock.settimeout(5)  # bounds the wait; the caller asserts the delay
    try:
        while True:
            r = conn.read()
            if r.text == f"* {want} EXISTS".encode():
                return time.monotonic() - accepted_at
    finally:
        conn.sock.settimeout(IO_TIMEOUT)


def _deliver_via(node: MssInstance, n: int, token: str) -> float:
    stamps: list[float] = []
    message = make_message(f"Resultat {token}-{n}", "x", sender=DURAND, to=[DURAND],
                           msgid=f"push-{token}-{n}")
    submit(node, DURAND, [DURAND], message, password_of=DURAND, accepted_at=stamps)
    return stamps[0]


def test_idle_on_node_b_sees_a_delivery_through_node_a_at_once(
    nodes: tuple[MssInstance, MssInstance, str], pg_cluster: Any
) -> None:
    a, b, url = nodes
    token = secrets.token_hex(4)
    with ImapConn(b.port("imaps"), b.client_context()) as conn:
        conn.login(DURAND, b.password(DURAND))
        exists = int(untagged_of(conn.ok("SELECT INBOX"), b"EXISTS")[0].text.split()[1])
        # B's one listening connection (made at its first IMAP session).
        first = _wait(lambda: feed_backends(pg_cluster, url))
        assert len(first) == 1, first
        _idle(conn)
        for n in range(3):
            exists += 1
            delay = _exists_after(conn, _deliver_via(a, n, token), exists)
            assert delay < PUSH_DEADLINE, f"EXISTS {delay:.2f}s after the 250 on A"

        # The listening connection is cut (a restart, the network) and cannot
        # be made again for a while (new connections refused; the nodes'
        # pooled ones go on): B says so, polls meanwhile (no delivery missed),
        # and listens again once it can.
        mark = b.log_mark()
        dbname = url.rsplit("/", 1)[1]
        pg_cluster.admin(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
        try:
            pg_cluster.admin(f"SELECT pg_terminate_backend({first[0]})")
            assert _wait(lambda: "change feed: connection lost" in b.log_since(mark))
            exists += 1
            delay = _exists_after(conn, _deliver_via(a, 3, token), exists)
            assert delay < PUSH_DEADLINE, f"EXISTS {delay:.2f}s after the 250 (feed cut)"
            assert feed_backends(pg_cluster, url) == []  # told by polling, not by a feed
        finally:
            pg_cluster.admin(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        again = _wait(lambda: [p for p in feed_backends(pg_cluster, url) if p != first[0]])
        assert len(again) == 1, again
        assert _wait(lambda: "listening for folder and access changes" in b.log_since(mark))
        exists += 1
        delay = _exists_after(conn, _deliver_via(a, 4, token), exists)
        assert delay < PUSH_DEADLINE, f"EXISTS {delay:.2f}s after the 250 (feed back)"
        _done(conn)


def test_notify_on_node_b_hears_of_a_folder_made_on_node_a(
    nodes: tuple[MssInstance, MssInstance, str],
) -> None:
    """RFC 5465 MailboxName / SubscriptionChange across nodes: the name events
    recorded by node A's CREATE, RENAME, SUBSCRIBE, DELETE reach a NOTIFY
    session on node B (PostgreSQL NOTIFY on mss_names), as they reach one on A."""
    a, b, _ = nodes
    name = f"Projets-{secrets.token_hex(3)}"
    on_a = ImapConn(a.port("imaps"), a.client_context())
    on_b = ImapConn(b.port("imaps"), b.client_context())
    with on_a, on_b:
        on_a.login(DURAND, a.password(DURAND))
        on_b.login(DURAND, b.password(DURAND))
        on_b.ok("NOTIFY SET (personal (MailboxName SubscriptionChange))")
        _idle(on_b)
        on_a.ok(f'CREATE "{name}"')
        on_a.ok(f'RENAME "{name}" "{name}-2"')
        on_a.ok(f'SUBSCRIBE "{name}-2"')
        on_a.ok(f'DELETE "{name}-2"')
        want = [f'* LIST () "/" "{name}"'.encode(),
                f'* LIST () "/" "{name}-2" ("OLDNAME" ("{name}"))'.encode(),
                f'* LIST (\\Subscribed) "/" "{name}-2"'.encode(),
                f'* LIST (\\NonExistent) "/" "{name}-2"'.encode()]
        got: list[bytes] = []
        on_b.sock.settimeout(5)
        try:
            while len(got) < len(want):
                r = on_b.read()
                if r.text.startswith(b"* LIST"):
                    got.append(r.text)
        finally:
            on_b.sock.settimeout(IO_TIMEOUT)
        assert got == want
        _done(on_b)


def _uid_of(conn: ImapConn, msgid: str) -> int:
    found = untagged_of(conn.ok(f'UID SEARCH HEADER Message-ID "{msgid}"'), b"SEARCH")
    uids = [int(x) for x in found[0].text.split()[2:]]
    assert len(uids) == 1, found
    return uids[0]


def _flags_change(conn: ImapConn, flag: bytes) -> float:
    start = time.monotonic()
    conn.sock.settimeout(5)
    try:
        while True:
            r = conn.read()
            if b" FETCH " in r.text and flag in r.text:
                return time.monotonic() - start
    finally:
        conn.sock.settimeout(IO_TIMEOUT)


def test_secretaries_on_two_nodes_see_each_others_flag_changes(
    nodes: tuple[MssInstance, MssInstance, str],
) -> None:
    a, b, _ = nodes
    token = secrets.token_hex(4)
    msgid = f"<flags-{token}@labo.hopital.test>"
    submit(a, DURAND, [CARDIO], make_message(f"Bilan {token}", "x", sender=DURAND, to=[CARDIO],
                                             msgid=f"flags-{token}"), password_of=DURAND)
    durand = ImapConn(a.port("imaps"), a.client_context())
    petit = ImapConn(b.port("imaps"), b.client_context())
    with durand, petit:
        durand.login(DURAND, a.password(DURAND))
        petit.login(PETIT, b.password(PETIT))
        for conn in (durand, petit):
            conn.ok(f'SELECT "{SHARED_INBOX}"')
        uid = _uid_of(durand, msgid)
        assert _uid_of(petit, msgid) == uid

        _idle(petit)  # on B
        durand.ok(f"UID STORE {uid} +FLAGS (\\Flagged)")  # on A
        delay = _flags_change(petit, b"\\Flagged")
        assert delay < PUSH_DEADLINE, f"B saw A's flag after {delay:.2f}s"
        _done(petit)

        _idle(durand)  # on A
        petit.ok(f"UID STORE {uid} +FLAGS (\\Answered)")  # on B
        delay = _flags_change(durand, b"\\Answered")
        assert delay < PUSH_DEADLINE, f"A saw B's flag after {delay:.2f}s"
        _done(durand)
        fetched = untagged_of(petit.ok(f"UID FETCH {uid} (FLAGS)"), b"FETCH")
        assert b"\\Flagged" in fetched[0].text and b"\\Answered" in fetched[0].text


def _login(node: MssInstance, password: str) -> bytes:
    with ImapConn(node.port("imaps"), node.client_context()) as conn:
        _, tagged = conn.command(f'LOGIN "{DURAND}" "{password}"')
        return tagged.text


@pytest.mark.parametrize("nodes", [{"account_failures: 10": "account_failures: 3",
                                    "base_delay: 60": "base_delay: 900"}], indirect=True)
def test_a_lock_made_on_one_node_holds_on_the_other(
    nodes: tuple[MssInstance, MssInstance, str],
) -> None:
    a, b, _ = nodes
    right = a.password(DURAND)
    assert b" OK " in _login(b, right)
    for _ in range(3):
        assert b"NO [AUTHENTICATIONFAILED]" in _login(a, right + "-wrong")
    # Locked: on B too, the right password is refused like a wrong one.
    assert b"NO [AUTHENTICATIONFAILED]" in _login(b, right)
    shown = run_mssctl(b, "account", "show", DURAND)
    assert re.search(r"locked until", shown, re.I), shown
    # Lifted through B's settings: A lets her in at once.
    run_mssctl(b, "account", "unlock", DURAND)
    assert b" OK " in _login(a, right)
    denied = [line for line in b.audit_text().splitlines()
              if '"account-locked"' in line and DURAND in line]
    assert denied, "B's audit records the refusal while locked"


class _Sender(threading.Thread):
    """One SMTP submission session sending message after message; records
    the Message-IDs the server acknowledged (250 to DATA), and how it ended."""

    def __init__(self, node: MssInstance, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.node, self.label, self.stop_event = node, name, stop
        self.acked: list[str] = []
        self.acked_at: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        node = self.node
        try:
            with smtplib.SMTP("127.0.0.1", node.port("submission"), timeout=IO_TIMEOUT) as s:
                s.ehlo("load.test")
                s.starttls(context=node.client_context())
                s.ehlo("load.test")
                s.login(DURAND, node.password(DURAND))
                n = 0
                while not self.stop_event.is_set():
                    n += 1
                    mid = f"load-{self.label}-{n}"
                    s.mail(DURAND)
                    code, resp = s.rcpt(CARDIO)
                    assert code == 250, (code, resp)
                    body = "\r\n".join(["x" * 70] * 30)  # 2 KB in lines of 72 octets
                    code, resp = s.data(make_message(f"Charge {mid}", body, sender=DURAND,
                                                     to=[CARDIO], msgid=mid))
                    assert code == 250, (code, resp)
                    self.acked.append(f"<{mid}@labo.hopital.test>")
                    self.acked_at.append(time.monotonic())
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            self.error = exc


def test_a_node_killed_under_smtp_load_loses_no_acknowledged_message(
    nodes: tuple[MssInstance, MssInstance, str],
) -> None:
    a, b, url = nodes
    stop = threading.Event()
    on_a = [_Sender(a, f"a{i}", stop) for i in range(3)]
    on_b = [_Sender(b, "b0", stop)]
    for t in on_a + on_b:
        t.start()
    assert _wait(lambda: sum(len(t.acked) for t in on_a) >= 30, 60), \
        [t.error for t in on_a]
    killed_at = time.monotonic()
    a.kill()  # SIGKILL: no shutdown, connections cut mid-transaction
    for t in on_a:
        t.join(IO_TIMEOUT + 5)
        assert not t.is_alive()
        assert t.error is not None  # its session died with the node
    # B keeps serving: its session goes on, new sessions are accepted.
    assert _wait(lambda: any(at > killed_at + 0.5 for at in on_b[0].acked_at), 20)
    late = make_message("Apres la panne", "x", sender=DURAND, to=[CARDIO], msgid="after-kill")
    submit(b, DURAND, [CARDIO], late, password_of=DURAND)
    stop.set()
    on_b[0].join(IO_TIMEOUT + 5)
    assert on_b[0].error is None, on_b[0].error

    acked = [m for t in on_a + on_b for m in t.acked] + ["<after-kill@labo.hopital.test>"]
    settings = load_settings(b.directory / "mss.yaml")
    store = open_store(url, Path(settings.key_file))
    try:
        box = store.find_mailbox(CARDIO)
        inbox = store.get_folder(box.id, "INBOX")
        uids = [e.uid for e in store.index(inbox.id)]
        stored = list(store.message_ids(inbox.id, uids).values())
    finally:
        store.close()
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged message(s) lost: {sorted(missing)[:5]}"
    assert len(stored) == len(set(stored)), "a message stored twice"
    # And B's IMAP side serves them.
    with ImapConn(b.port("imaps"), b.client_context()) as conn:
        conn.login(PETIT, b.password(PETIT))
        exists = untagged_of(conn.ok(f'SELECT "{SHARED_INBOX}"'), b"EXISTS")
        assert int(exists[0].text.split()[1]) == len(stored)


def test_a_node_whose_database_url_lists_a_dead_host_first_starts_and_serves(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any
) -> None:
    """libpq (psycopg2) tries the hosts of a multi-host URL in order and, with
    `target_session_attrs=read-write`, keeps the first that accepts writes:
    the README's failover set-up. Here the first host refuses connections."""
    node = MssInstance.demo(tmp_path_factory, "multihost")
    dbname = pg_cluster.new_database()
    copy_sqlite_to_postgres(node.directory / "mss.db", pg_cluster.url(dbname))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nothing listens there
    use_database(node, f"postgresql+psycopg2://postgres@/{dbname}?host=127.0.0.1:{dead}"
                       f"&host={pg_cluster.host}:{pg_cluster.port}"
                       "&target_session_attrs=read-write&connect_timeout=5")
    token = secrets.token_hex(4)
    try:
        node.start()
        mark = node.log_mark()
        with ImapConn(node.port("imaps"), node.client_context()) as conn:
            conn.login(DURAND, node.password(DURAND))
            exists = int(untagged_of(conn.ok("SELECT INBOX"), b"EXISTS")[0].text.split()[1])
            # The listening connection went through the same list of hosts.
            assert _wait(lambda: feed_backends(pg_cluster, pg_cluster.url(dbname)))
            _idle(conn)
            delay = _exists_after(conn, _deliver_via(node, 0, token), exists + 1)
            assert delay < PUSH_DEADLINE, f"EXISTS {delay:.2f}s after the 250"
            _done(conn)
            fetched = conn.ok(f"FETCH {exists + 1} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert f"Resultat {token}-0".encode() in b"".join(r.text for r in fetched)
        assert node.stop() == 0, node.log_tail()
    finally:
        node.kill()
    text = node.log_since(mark)
    assert "Traceback" not in text and "[cid=" not in text, text[-4000:]
