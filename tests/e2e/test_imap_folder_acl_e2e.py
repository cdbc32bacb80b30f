"""A grant on one folder of a functional mailbox, end to end: `mssctl mailbox
grant … --folder INBOX` on a served demo instance, then Python's imaplib over
IMAPS sees that folder only; the change is audited naming the operator."""

from __future__ import annotations

import imaplib
import json
import re
from collections.abc import Iterator

import pytest
from integration_support import (
    CARDIO,
    LABO,
    PETIT,
    MssInstance,
    make_message,
    run_mssctl,
    submit,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "folder-acl")
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def test_a_folder_grant_shows_that_folder_only_to_imaplib(mss: MssInstance) -> None:
    submit(mss, LABO, [CARDIO], make_message("Bilan folder-acl", "Natremie 140",
                                             sender=LABO, to=[CARDIO], msgid="folder-acl"),
           cert_of=LABO)
    # The secretary keeps the functional INBOX only, read-only.
    run_mssctl(mss, "mailbox", "revoke", CARDIO, PETIT)
    out = run_mssctl(mss, "mailbox", "grant", CARDIO, PETIT, "--folder", "INBOX",
                     "--rights", "lr")
    assert f"{PETIT} may use {CARDIO} folder INBOX with rights lr" in out
    grants = run_mssctl(mss, "mailbox", "grants", CARDIO)
    assert re.search(rf"^{re.escape(PETIT)}\s+INBOX\s+lr\s+no\s", grants, re.M), grants
    events = [json.loads(line) for line in mss.audit_text().splitlines()]
    grant = [e for e in events if e["action"] == "mailbox-grant" and e["target"] == CARDIO]
    assert grant[-1]["actor"].startswith("admin:") and grant[-1]["result"] == "ok"
    assert (grant[-1]["folder"], grant[-1]["rights"], grant[-1]["login"]) == ("INBOX", "lr", PETIT)

    imap = imaplib.IMAP4_SSL("127.0.0.1", mss.port("imaps"), ssl_context=mss.client_context())
    try:
        imap.login(PETIT, mss.password(PETIT))
        typ, listed = imap.list('""', "*")
        assert typ == "OK"
        folders = [x.decode() for x in listed if x and f"Shared/{CARDIO}/".encode() in x]
        assert folders == [f'(\\HasNoChildren) "/" "Shared/{CARDIO}/INBOX"'], listed
        # SELECT succeeds read-only ("lr": no right to change anything),
        # which imaplib reports as an exception; EXAMINE it then.
        with pytest.raises(imaplib.IMAP4.readonly):
            imap.select(f'"Shared/{CARDIO}/INBOX"')
        typ, data = imap.select(f'"Shared/{CARDIO}/INBOX"', readonly=True)
        assert typ == "OK"
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Bilan folder-acl" in b"".join(
            x[1] for x in data if isinstance(x, tuple))
        typ, data = imap.myrights(f'"Shared/{CARDIO}/INBOX"')
        assert typ == "OK" and data[0].endswith(b" lr"), data
        # Another folder of the box: exactly like one that does not exist.
        for name in (f'"Shared/{CARDIO}/Sent"', f'"Shared/{CARDIO}/Nowhere"'):
            typ, data = imap.status(name, "(MESSAGES)")
            assert (typ, data) == ("NO", [b"[NONEXISTENT] No such mailbox"]), (name, data)
        typ, data = imap.getacl(f'"Shared/{CARDIO}/INBOX"')
        assert typ == "NO" and data[0].startswith(b"[NOPERM]")
        imap.logout()
    finally:
        imap.shutdown() if imap.state != "LOGOUT" else None
