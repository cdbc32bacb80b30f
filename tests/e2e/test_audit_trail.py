"""The audit trail of the product as deployed (`mssctl init --demo`, `mssctl
serve --workers 2`), over real sockets: refused cards say why, a secretary's
work on the functional box and the administrator's revocation come back from
`mssctl audit query`, and the audit file follows log rotation on SIGHUP.

Acceptance (issue 8): "`mssctl audit query --mailbox cardiologie@hopital.test
--since …` lists the secretaries' actions of that test, including the admin
revocation".
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    CARDIO,
    DOMAIN,
    DURAND,
    IO_TIMEOUT,
    LABO,
    PETIT,
    ImapConn,
    MssInstance,
    make_message,
    run_cli,
    run_mssctl,
    submit,
)

from certs.devpki import IssuedCert, issue_card, make_root_ca

pytestmark = pytest.mark.e2e

DEADLINE = 15.0  # seconds for the store mirror (batched every 0.5 s) to catch up
SHARED = f'"Shared/{CARDIO}/INBOX"'


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "audit")
    inst.serve_args = ("--workers", "2")
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


@pytest.fixture(autouse=True)
def no_server_errors(mss: MssInstance) -> Iterator[None]:
    mark = mss.log_mark()
    yield
    errors = mss.errors_since(mark)
    assert not errors, f"the server logged errors during the test:\n{errors}"


@pytest.fixture(scope="module")
def bad_cards(mss: MssInstance) -> dict[str, IssuedCert]:
    """An expired card of our persons CA, the demo's revoked card, and a card
    of a CA the server does not know."""
    pki = mss.ca_file.parent
    extra = mss.directory / "extra-cards"
    foreign_ca = make_root_ca(extra, "foreign-ca", "AC ETRANGERE DE TEST")
    now = datetime.now(UTC)
    return {
        "expired": issue_card(extra, "expired", ca_cert=pki / "persons-ca.pem",
                              ca_key=pki / "persons-ca.key", idnat="810000000111",
                              surname="PERIME", given_name="ANNE",
                              not_before=now - timedelta(days=60), days=30),
        "revoked": IssuedCert(pki / "revoked.pem", pki / "revoked.key"),
        "unknown-ca": issue_card(extra, "foreign", ca_cert=foreign_ca[0],
                                 ca_key=foreign_ca[1], idnat="810000000333",
                                 surname="ETRANGER", given_name="PAUL"),
    }


def audit_lines(mss: MssInstance, name: str = "audit.log") -> list[dict[str, Any]]:
    path = mss.directory / name
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Polls `check` until it returns something true (polling with a deadline:
    the store mirror and the workers' signal handling are asynchronous)."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < end, f"not within {deadline}s: {what}"
        time.sleep(0.1)


def _serial(pem: Path) -> str:
    from cryptography import x509

    return f"{x509.load_pem_x509_certificates(pem.read_bytes())[0].serial_number:X}"


def imaps_refuses(mss: MssInstance, card: IssuedCert) -> bool:
    try:
        with ImapConn(mss.port("imaps"), mss.client_context((card.cert, card.key))) as conn:
            _, tagged = conn.command("AUTHENTICATE EXTERNAL =")
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return not tagged.text.startswith(b"A001 OK")


def submission_refuses(mss: MssInstance, card: IssuedCert) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", mss.port("submission"), timeout=IO_TIMEOUT) as s:
            s.ehlo("poste.test")
            s.starttls(context=mss.client_context((card.cert, card.key)))
            s.ehlo("poste.test")
            code, _ = s.docmd("AUTH", "EXTERNAL =")
    except (ssl.SSLError, ConnectionError, OSError, smtplib.SMTPException):
        return True
    return code != 235


# ---------------------------------------------------------------- certificates


@pytest.mark.parametrize("reason", ["expired", "revoked", "unknown-ca"])
def test_a_refused_card_is_audited_with_the_reason(
    mss: MssInstance, bad_cards: dict[str, IssuedCert], reason: str
) -> None:
    card = bad_cards[reason]
    serial = _serial(card.cert)
    log_mark = mss.log_mark()
    assert imaps_refuses(mss, card)
    assert submission_refuses(mss, card)

    def refusals() -> list[dict[str, Any]]:
        return [e for e in audit_lines(mss)
                if e["action"] == "certificate" and e.get("serial") == serial]

    events = eventually(lambda: len(refusals()) >= 2 and refusals(), "two refusal events")
    assert {e["listener"] for e in events} == {"imaps", "submission"}
    for e in events:
        assert (e["result"], e["reason"], e["direction"]) == ("deny", reason, "inbound-client")
        assert e["target"] == e["listener"] and e["peer"] == "127.0.0.1"
        assert e["actor"] == e["subject"] and "CN=8100000" in e["subject"]  # the card itself
        assert e["issuer"] and e["depth"] == 0
    log = mss.log_since(log_mark)
    assert re.search(rf"WARNING .*refused inbound-client certificate \({reason}\).*{serial}", log)
    # Each refusal reaches the store too (what `audit query` reads).
    eventually(lambda: len([x for x in run_mssctl(
        mss, "audit", "query", "--action", "certificate", "--json").splitlines()
        if serial in x]) >= 2, "refusals in the store")


def test_a_good_card_is_not_reported(mss: MssInstance) -> None:
    before = len([e for e in audit_lines(mss) if e["action"] == "certificate"])
    with ImapConn(mss.port("imaps"), mss.client_context(mss.cert_pair(LABO))) as conn:
        _, tagged = conn.command("AUTHENTICATE EXTERNAL =")
        assert tagged.text.startswith(b"A001 OK"), tagged.text
    assert len([e for e in audit_lines(mss) if e["action"] == "certificate"]) == before


# ---------------------------------------------------------------- the acceptance


def test_audit_query_lists_the_secretaries_work_and_the_revocation(mss: MssInstance) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    for n in (1, 2, 3):
        submit(mss, LABO, [CARDIO], make_message(f"resultat {n}", f"Kaliemie {n}",
                                                 sender=LABO, to=[CARDIO],
                                                 msgid=f"audit-result-{n}"), cert_of=LABO)
    with ImapConn(mss.port("imaps"), mss.client_context()) as durand:
        durand.login(DURAND, mss.password(DURAND))
        durand.ok(f'CREATE "Shared/{CARDIO}/Traite"')
        durand.ok(f"SELECT {SHARED}")
        untagged = durand.ok("UID SEARCH ALL")
        uids = [int(x) for x in untagged[0].text.split()[2:]][-3:]
        first, second, third = uids
        durand.ok(f"UID FETCH {first} BODY.PEEK[]")
        durand.ok(f"UID STORE {first}:{second} +FLAGS (\\Seen \\Flagged)")
        durand.ok(f"UID COPY {first} INBOX")  # into her own box
        durand.ok(f'UID MOVE {second} "Shared/{CARDIO}/Traite"')
        durand.ok(f"UID STORE {third} +FLAGS (\\Deleted)")
        durand.ok(f"UID EXPUNGE {third}")
    with ImapConn(mss.port("imaps"), mss.client_context()) as petit:
        petit.login(PETIT, mss.password(PETIT))
        petit.ok(f"SELECT {SHARED}")
        petit.ok(f"UID FETCH {first} BODY.PEEK[HEADER]")
    # The administrator takes the box away from sec.durand ...
    run_mssctl(mss, "mailbox", "revoke", CARDIO, DURAND)
    # ... and from then on she cannot open it.
    with ImapConn(mss.port("imaps"), mss.client_context()) as durand:
        durand.login(DURAND, mss.password(DURAND))
        _, tagged = durand.command(f"SELECT {SHARED}")
        assert re.match(rb"A\d+ NO", tagged.text), tagged.text

    def listed() -> list[str]:
        code, out = run_cli("audit", "query", "--mailbox", CARDIO, "--since",
                            since.isoformat(), "--config", str(mss.directory / "mss.yaml"))
        assert code == 0, out
        lines = out.splitlines()
        # The workers' mirrors write every 0.5 s, each on its own (the two
        # secretaries may have been served by different workers): wait for
        # the last event of each writer.
        done = (any(" mailbox-revoke " in x for x in lines)
                and any(f" {PETIT} fetch " in x for x in lines)
                and any(f" {DURAND} expunge " in x for x in lines))
        return lines if done else []

    lines = eventually(listed, "the secretaries' actions and the revocation in the store")
    text = "\n".join(lines)

    def line(actor: str, action: str, result: str = "ok", *, having: str = "") -> str:
        pattern = rf"^\S+ {re.escape(actor)} {action} {re.escape(CARDIO)}/INBOX {result}( |$)"
        found = [x for x in lines if re.match(pattern, x) and having in x]
        assert len(found) == 1, f"{actor} {action} {result} {having}: {found} in:\n{text}"
        return found[0]

    def ids(*numbers: int) -> str:
        return ",".join(f'"{u}":"<audit-result-{n}@labo.{DOMAIN}>"'
                        for u, n in zip(uids, numbers, strict=False) if n)

    assert f"uids={first}" in line(DURAND, "fetch", having="uids=")
    store = line(DURAND, "store", having="Flagged")
    assert f"uids={first}:{second}" in store and "mode=add" in store
    assert f"message_ids={{{ids(1, 2)}}}" in store
    copy = line(DURAND, "copy")
    assert f"to={DURAND}/INBOX" in copy and f'"{first}":"<audit-result-1@' in copy
    move = line(DURAND, "move")
    assert f"to={CARDIO}/Traite" in move and f'"{second}":"<audit-result-2@' in move
    expunge = line(DURAND, "expunge")
    assert f"uids={third}" in expunge and "command=\"UID EXPUNGE\"" in expunge
    assert f'"{third}":"<audit-result-3@' in expunge
    line(PETIT, "select", "allow")
    line(PETIT, "fetch", having=f"uids={first}")
    revoke = [x for x in lines if re.match(
        rf"^\S+ admin:\S+ mailbox-revoke {re.escape(CARDIO)} ok .*login={re.escape(DURAND)}", x)]
    assert revoke, text
    assert "rights_before=lrswipkxtea" in revoke[0]
    assert lines.index(revoke[0]) == len(lines) - 1  # the last thing done to the box
    # The deliveries to the box are there too; never a subject or a body.
    assert "Kaliemie" not in text and "resultat" not in text
    # --actor narrows to one agent, --action to one kind.
    code, out = run_cli("audit", "query", "--mailbox", CARDIO, "--since", since.isoformat(),
                        "--actor", PETIT, "--config", str(mss.directory / "mss.yaml"))
    assert code == 0 and out and all(f" {PETIT} " in x for x in out.splitlines())


# ---------------------------------------------------------------- rotation


def test_sighup_reopens_the_audit_file_and_records_the_reload(mss: MssInstance) -> None:
    assert mss.proc is not None
    log = mss.directory / "audit.log"
    rotated = mss.directory / "audit.log.1"
    log.rename(rotated)
    with ImapConn(mss.port("imaps"), mss.client_context()) as conn:  # before the SIGHUP
        conn.login(PETIT, mss.password(PETIT))
    before = len(audit_lines(mss, "audit.log.1"))
    mss.proc.send_signal(1)  # SIGHUP: the supervisor forwards it to both workers

    def reloads() -> list[dict[str, Any]]:
        return [e for e in audit_lines(mss) if e["action"] == "reload"]

    events = eventually(lambda: len(reloads()) >= 2 and reloads(), "a reload event per worker")
    assert len({e["pid"] for e in events}) == 2
    for e in events:
        assert (e["actor"], e["result"], e["signal"]) == ("system", "ok", "SIGHUP")
        assert e["audit_log_reopened"] is True and e["problems"] == []
        assert e["crls"] == 3 and e["ca_certificates"] == 3 and e["whitelist_domains"] >= 1
    rotated_events = audit_lines(mss, "audit.log.1")
    assert len(rotated_events) >= before
    assert not [e for e in rotated_events if e["action"] == "reload"]
    # New events go to the new file only (whichever worker takes the connection).
    for _ in range(4):
        with ImapConn(mss.port("imaps"), mss.client_context()) as conn:
            conn.login(DURAND, mss.password(DURAND))
    logins = [e for e in audit_lines(mss) if e["action"] == "login" and e["actor"] == DURAND]
    assert len(logins) == 4
    assert len(audit_lines(mss, "audit.log.1")) == len(rotated_events)
    # The reload reaches the store too.
    eventually(lambda: run_mssctl(mss, "audit", "query", "--action", "reload",
                                  "--actor", "system").count(" reload ") >= 2,
               "reload events in the store")
