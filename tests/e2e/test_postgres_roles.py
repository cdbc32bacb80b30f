"""The PostgreSQL set-up of the README's "Production" chapter: one role owns
the schema and runs `mssctl db upgrade`, the server's role only reads and
writes rows (default privileges). `serve` runs on the second: an SMTP
submission is delivered and read over IMAP, and that role cannot change the
schema."""

from __future__ import annotations

import os
from typing import Any

import pytest
from integration_support import DURAND, MssInstance, make_message, run_cli, submit

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

# The README's statements, with the role names of this test.
GRANTS = """
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO "{app}";
"""


def test_serve_with_a_role_that_only_reads_and_writes_rows(
        tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any) -> None:
    import psycopg2

    n = f"{os.getpid()}_{id(pg_cluster) % 10000}"
    owner, app, db = f"mss_owner_{n}", f"mss_{n}", f"mss_roles_{n}"
    pg_cluster.admin(f'CREATE ROLE "{owner}" LOGIN')
    pg_cluster.admin(f'CREATE ROLE "{app}" LOGIN')
    pg_cluster.admin(f'CREATE DATABASE "{db}" OWNER "{owner}"')
    pg_cluster.admin_db(db, GRANTS.format(owner=owner, app=app))

    def url(role: str) -> str:
        return f"postgresql+psycopg2://{role}@{pg_cluster.host}:{pg_cluster.port}/{db}"

    inst = MssInstance.demo(tmp_path_factory, "pgroles")
    config = inst.directory / "mss.yaml"
    text = config.read_text(encoding="utf-8")
    assert "url: sqlite:///mss.db" in text
    admin = inst.directory / "admin.yaml"
    admin.write_text(text.replace("url: sqlite:///mss.db", f"url: {url(owner)}"), encoding="utf-8")
    config.write_text(text.replace("url: sqlite:///mss.db", f"url: {url(app)}"), encoding="utf-8")

    code, out = run_cli("db", "upgrade", "--config", str(admin))
    assert code == 0, out
    from storage import open_store

    store = open_store(url(app), inst.directory / "keys")
    try:
        store.add_domain("hopital.test")
    finally:
        store.close()
    password = inst.password(DURAND)
    for args in (("account", "add", DURAND, "--class", "staff", "--password", password),
                 ("mailbox", "add", DURAND, "--type", "PER", "--owner", DURAND)):
        code, out = run_cli(*args, "--config", str(config))
        assert code == 0, out

    inst.start()
    try:
        submit(inst, DURAND, [DURAND], make_message("roles", "bonjour", sender=DURAND,
                                                    to=[DURAND]), password_of=DURAND)
        from integration_support import ImapConn

        with ImapConn(inst.port("imaps"), inst.client_context()) as imap:
            imap.login(DURAND, password)
            imap.ok("SELECT INBOX")
            found = imap.ok("SEARCH SUBJECT roles")
            assert any(r.text.startswith(b"* SEARCH ") and len(r.text.split()) > 2
                       for r in found), found
        code, out = run_cli("doctor", "--config", str(config))
        assert "OK    database" in out and "schema at the latest revision" in out, out
    finally:
        inst.stop()

    conn = psycopg2.connect(host=pg_cluster.host, port=pg_cluster.port, user=app, dbname=db)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("CREATE TABLE intruder (x int)")
    finally:
        conn.close()
