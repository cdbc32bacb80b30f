"""The primary dies, the standby is promoted, the node goes on (README:
"Several nodes behind HAProxy, PostgreSQL with a standby").

A throwaway primary (durable settings, so that `synchronous_commit` holds)
with a synchronous streaming standby made by `pg_basebackup -R`, both on
loopback; one `mssctl serve` node whose `database.url` lists both hosts with
`target_session_attrs=read-write`. Messages are submitted; the primary is
stopped at once (`pg_ctl -m immediate`: a crash), the standby promoted
(`pg_ctl promote`); submissions are retried until one is accepted (meanwhile
the node may only answer 4xx, never 5xx); then every acknowledged message,
before and after, is read over IMAP from the promoted standby, and the node's
listening connection is back.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    DURAND,
    IO_TIMEOUT,
    ImapConn,
    MssInstance,
    make_message,
    untagged_of,
)
from nodes_support import copy_sqlite_to_postgres, use_database
from pg_support import pg_binaries, running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_standby(bindir: Path, primary: Any) -> Iterator[tuple[int, Path]]:
    """A streaming standby of `primary` (port, data directory), stopped and
    deleted on exit."""
    base = Path(tempfile.mkdtemp(prefix="mss-pg-standby-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    os.chmod(base, 0o700)
    data, port = base / "data", _free_port()
    subprocess.run([*_as_postgres(), str(bindir / "pg_basebackup"), "-h", primary.host,
                    "-p", str(primary.port), "-U", "postgres", "-D", str(data), "-X", "stream",
                    "-R", "--no-sync", "--checkpoint=fast"], check=True, capture_output=True)
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}"
            # max_connections as the primary's (a standby refuses fewer);
            # cluster_name: the walreceiver's application_name
            " -c max_connections=200 -c cluster_name=standby1")
    try:
        started = subprocess.run([*_as_postgres(), str(bindir / "pg_ctl"), "-D", str(data),
                                  "-o", opts, "-l", str(base / "log"), "-w", "start"],
                                 check=False, capture_output=True)
        if started.returncode != 0:
            log = (base / "log").read_text(errors="replace") if (base / "log").exists() else ""
            raise RuntimeError(f"standby did not start: {started.stdout!r}\n{log}")
        yield port, data
    finally:
        subprocess.run([*_as_postgres(), str(bindir / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _pg_ctl(bindir: Path, data: Path, *args: str) -> None:
    subprocess.run([*_as_postgres(), str(bindir / "pg_ctl"), "-D", str(data), *args],
                   check=True, capture_output=True)


def _sync_state(primary: Any) -> str | None:
    import psycopg2

    conn = psycopg2.connect(host=primary.host, port=primary.port, user="postgres",
                            dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT sync_state FROM pg_stat_replication "
                        "WHERE application_name = 'standby1'")
            row = cur.fetchone()
            return str(row[0]) if row else None
    finally:
        conn.close()


def _submit_once(node: MssInstance, subject: str) -> tuple[int, bytes]:
    """(code, text) of the reply to the end of DATA, or of the first refusal."""
    try:
        with smtplib.SMTP("127.0.0.1", node.port("submission"), timeout=IO_TIMEOUT) as s:
            s.starttls(context=node.client_context())
            s.login(DURAND, node.password(DURAND))
            code, resp = s.mail(DURAND)
            if code == 250:
                code, resp = s.rcpt(DURAND)
            if code == 250:
                code, resp = s.data(make_message(subject, "x", sender=DURAND, to=[DURAND]))
            return code, resp
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error


def test_the_node_follows_a_promoted_standby_and_keeps_every_acknowledged_message(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bindir = pg_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (initdb)")
    node = MssInstance.demo(tmp_path_factory, "failover")
    with running_cluster(bindir, durable=True) as primary:
        dbname = primary.new_database()
        copy_sqlite_to_postgres(node.directory / "mss.db", primary.url(dbname))
        with running_standby(bindir, primary) as (standby_port, standby_data):
            primary.admin("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
            primary.admin("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while _sync_state(primary) != "sync":  # commits now wait for the standby
                assert time.monotonic() < deadline, _sync_state(primary)
                time.sleep(0.1)  # the reload and the walreceiver's report; bounded
            use_database(node, f"postgresql+psycopg2://postgres@/{dbname}"
                               f"?host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby_port}"
                               "&target_session_attrs=read-write&connect_timeout=5")
            acked: list[str] = []
            try:
                node.start()
                mark = node.log_mark()
                for n in range(3):
                    subject = f"Avant la bascule {n}"
                    code, resp = _submit_once(node, subject)
                    assert code == 250, (code, resp)
                    acked.append(subject)

                assert primary.data is not None
                _pg_ctl(bindir, primary.data, "-m", "immediate", "stop")  # a crash
                _pg_ctl(bindir, standby_data, "-w", "promote")

                deadline = time.monotonic() + 60
                refusals = []
                while True:
                    subject = f"Apres la bascule {len(refusals)}"
                    code, resp = _submit_once(node, subject)
                    if code == 250:
                        acked.append(subject)
                        break
                    refusals.append((code, resp))
                    assert 400 <= code < 500, refusals  # never a bounce
                    assert time.monotonic() < deadline, refusals
                    time.sleep(0.5)  # the node reconnects on its own; bounded retries
                code, resp = _submit_once(node, "Apres la bascule, encore")
                assert code == 250, (code, resp)
                acked.append("Apres la bascule, encore")

                with ImapConn(node.port("imaps"), node.client_context()) as conn:
                    conn.login(DURAND, node.password(DURAND))
                    conn.ok("SELECT INBOX")
                    fetched = b"".join(r.text for r in conn.ok(
                        "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
                    missing = [s for s in acked if s.encode() not in fetched]
                    assert not missing, missing
                    # The listening connection found the new primary too.
                    deadline = time.monotonic() + 30
                    while "listening for folder and access changes" not in node.log_since(mark):
                        assert time.monotonic() < deadline, node.log_since(mark)[-3000:]
                        time.sleep(0.2)  # the feed reconnects with backoff; bounded
                    untagged_of(conn.ok("NOOP"), b"OK")
                assert node.stop() == 0, node.log_tail()
            finally:
                node.kill()
