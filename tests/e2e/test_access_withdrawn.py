"""Access withdrawn while sessions are open (`mssctl serve` from `mssctl init
--demo`, IMAPS, the admin commands an operator types): a revoked grant stops
an open session's next FETCH of the shared box and the box then answers as
missing; a disabled account's idling session is ended."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    LABO,
    PETIT,
    ImapConn,
    MssInstance,
    make_message,
    run_mssctl,
    submit,
)

pytestmark = pytest.mark.e2e

SHARED_INBOX = f"Shared/{CARDIO}/INBOX"


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "withdrawn")
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def read_until_closed(conn: ImapConn) -> list[bytes]:
    lines = []
    conn.sock.settimeout(5)  # an upper bound; the server closes at once
    try:
        while True:
            lines.append(conn.read().text)
    except (ConnectionError, OSError):
        return lines


def test_revoked_grant_ends_the_shared_session_and_hides_the_box(mss: MssInstance) -> None:
    token = secrets.token_hex(4)
    submit(mss, LABO, [CARDIO], make_message(f"Bilan {token}", f"Natremie {token}",
                                             sender=LABO, to=[CARDIO], msgid=f"w-{token}"),
           cert_of=LABO)
    shared = ImapConn(mss.port("imaps"), mss.client_context())
    own = ImapConn(mss.port("imaps"), mss.client_context())
    with shared, own:
        for conn in (shared, own):
            conn.login(DURAND, mss.password(DURAND))
        shared.ok(f'SELECT "{SHARED_INBOX}"')
        own.ok("SELECT INBOX")
        body = b"".join(r.text for r in shared.ok("FETCH 1:* (BODY.PEEK[])"))
        assert b"Natremie" in body
        run_mssctl(mss, "mailbox", "revoke", CARDIO, DURAND)
        shared.send(b"F1 FETCH 1:* (BODY.PEEK[])\r\n")
        lines = read_until_closed(shared)
        assert lines == [b"* BYE Access to the selected mailbox was withdrawn"]
        _, tagged = own.command(f'SELECT "{SHARED_INBOX}"')
        assert tagged.text.endswith(b"NO [NONEXISTENT] No such mailbox")
        listed = b"".join(r.text for r in own.ok('LIST "" "*"'))
        assert CARDIO.encode() not in listed
        own.ok("NOOP")  # her own session goes on
    events = [e for e in mss.audit_text().splitlines() if '"session"' in e]
    assert any(DURAND in e and "mailbox-withdrawn" in e for e in events), events


def test_disabled_account_idling_session_is_ended(mss: MssInstance) -> None:
    conn = ImapConn(mss.port("imaps"), mss.client_context())
    with conn:
        conn.login(PETIT, mss.password(PETIT))
        conn.ok(f'SELECT "{SHARED_INBOX}"')
        conn.send(b"I1 IDLE\r\n")
        assert conn.read().text.startswith(b"+")
        run_mssctl(mss, "account", "disable", PETIT)
        assert read_until_closed(conn) == [b"* BYE Account disabled"]
    with ImapConn(mss.port("imaps"), mss.client_context()) as again:
        _, tagged = again.command(f'LOGIN "{PETIT}" "{mss.password(PETIT)}"')
    assert b"NO" in tagged.text
