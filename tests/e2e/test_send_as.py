"""Send-as end to end (`mssctl init --demo`, `mssctl serve`, smtplib over
STARTTLS, IMAPS): a secretary sends as the cardiology box; the practitioner
reads it with Sender: naming her, and the audit says so; sending as the
practitioner is refused 550 5.7.1."""

from __future__ import annotations

import json
import secrets
import smtplib
from collections.abc import Iterator

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    MARTIN,
    ImapConn,
    MssInstance,
    make_message,
    submit,
    untagged_of,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "sendas")
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def test_secretary_sends_as_the_functional_box(mss: MssInstance) -> None:
    token = secrets.token_hex(4)
    message = make_message(f"Compte rendu {token}", "Veuillez trouver ci-joint.",
                           sender=CARDIO, to=[MARTIN], msgid=f"sa-{token}")
    assert submit(mss, CARDIO, [MARTIN], message, password_of=DURAND).startswith("2.0.0")
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
        conn.login(MARTIN, mss.password(MARTIN))
        conn.ok("SELECT INBOX")
        found = untagged_of(conn.ok(f'UID SEARCH HEADER Message-ID "sa-{token}"'), b"SEARCH")
        uid = found[0].text.split()[-1].decode()
        fetched = untagged_of(conn.ok(f"UID FETCH {uid} (BODY.PEEK[HEADER])"), b"FETCH")
        header = fetched[0].literals[0]
    assert f"Sender: <{DURAND}>\r\n".encode() in header
    assert f"From: {CARDIO}\r\n".encode() in header
    events = [json.loads(line) for line in mss.audit_text().splitlines() if line.strip()]
    send_as = [e for e in events if e["action"] == "send-as"]
    assert any(e["actor"] == DURAND and e["target"] == CARDIO and token in e["message_id"]
               for e in send_as), send_as


def test_secretary_cannot_send_as_the_practitioner(mss: MssInstance) -> None:
    message = make_message("Ordonnance", "...", sender=MARTIN, to=[CARDIO])
    with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=10) as s:
        s.starttls(context=mss.client_context())
        s.login(DURAND, mss.password(DURAND))
        code, text = s.mail(MARTIN)
        # 553 5.7.1 at MAIL, as Postfix's reject_sender_login_mismatch answers
        assert (code, text[:5]) == (553, b"5.7.1")
        s.rset()
        # Her own envelope, the practitioner in From:: refused at the end of DATA.
        assert s.mail(DURAND)[0] == 250 and s.rcpt(CARDIO)[0] == 250
        code, text = s.data(message)
        assert (code, text[:5]) == (550, b"5.7.1")
