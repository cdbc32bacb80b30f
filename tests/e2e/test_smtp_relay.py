"""Two instances relaying A -> B over mutual TLS, with the national whitelist."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smtp_fixtures import PASSWORD, Instance, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _msg(tag: str) -> bytes:
    return (f"From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@a.test>\r\n\r\nrelayed body {tag}\r\n").encode()


def _pair(tmp_path: Path, *, a_queue: dict[str, Any] | None = None,
          b_in_a_whitelist: bool = True, a_in_b_whitelist: bool = True) -> tuple[Instance, Instance]:
    a = Instance(tmp_path / "a", "a.test", queue=a_queue)
    assert a.pki.peer_operator is not None
    b = Instance(tmp_path / "b", "b.test", policy={"mx_require_client_cert": True},
                 pki=a.pki, server_cert=a.pki.peer_operator)
    a.write_whitelist([("b.test", b.server_cert.subject)] if b_in_a_whitelist else
                      [("other.test", b.server_cert.subject)])
    b.write_whitelist([("a.test", a.pki.server.subject)] if a_in_b_whitelist else [])
    return a, b


def _route(a: Instance, b: Instance) -> None:
    a.queue = {**a.queue, "routes": {"b.test": f"127.0.0.1:{b.ports['mx']}"}}


def _submit(a: Instance, tag: str, *, rcpt: str = "bob@b.test",
            mail_options: tuple[str, ...] = (), rcpt_options: tuple[str, ...] = ()) -> Any:
    with smtplib.SMTP_SSL("127.0.0.1", a.ports["submissions"], timeout=10,
                          context=a.client_context()) as s:
        s.login("alice@a.test", PASSWORD)
        return s.sendmail("alice@a.test", [rcpt], _msg(tag), mail_options=list(mail_options),
                          rcpt_options=list(rcpt_options))


@pytest.fixture
def stop_all() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for inst in started:
        inst.stop()


def _with_tag(inst: Instance, address: str, tag: str) -> list[bytes]:
    return [m for m in inst.inbox(address) if f"Subject: {tag}".encode() in m]


def test_relay_over_mutual_tls(tmp_path: Path, stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path)
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "hello-b")
    (got,) = wait_for(lambda: _with_tag(b, "bob@b.test", "hello-b"))
    text = got.decode()
    assert text.startswith("Return-Path: <alice@a.test>\r\nReceived: from mx.a.test ([127.0.0.1])")
    assert "with ESMTPS id" in text  # B saw TLS
    assert "(client certificate CN=mx.a.test" in text  # and A's operator certificate
    assert text.endswith(_msg("hello-b").decode())
    wait_for(lambda: a.queue_entries() == [])
    peer = [e for e in b.audit_lines() if e["action"] == "peer"]
    assert peer and peer[-1]["result"] == "allow"


def test_destination_not_in_whitelist_is_refused(tmp_path: Path, stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path, b_in_a_whitelist=False)
    stop_all += [a]
    a.start(relay=False)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        _submit(a, "nope")
    code, text = err.value.recipients["bob@b.test"]
    assert code == 550 and text.startswith(b"5.7.1")
    assert a.queue_entries() == []


def test_peer_refuses_operator_missing_from_its_whitelist(tmp_path: Path,
                                                          stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path, a_in_b_whitelist=False)
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "untrusted")
    # B answers 550 5.7.1 at MAIL: a permanent failure, so Alice gets a DSN.
    (dsn,) = wait_for(lambda: [m for m in a.inbox("alice@a.test") if b"Action: failed" in m])
    assert b"Status: 5.7.1" in dsn
    assert _with_tag(b, "bob@b.test", "untrusted") == []
    wait_for(lambda: a.queue_entries() == [])


def test_peer_down_then_back_delivers_once_across_a_restart(tmp_path: Path, stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path)
    stop_all += [b.start(), a]
    b.stop()  # B's port is known; it is down now
    _route(a, b)
    a.start()
    _submit(a, "while-down", rcpt_options=("NOTIFY=FAILURE",))
    entry = wait_for(lambda: [e for e in a.queue_entries() if e.attempts >= 2])[0]
    assert entry.last_error and "4.4.1" in entry.last_error
    a.stop()  # the queue is in the store: it survives a restart of A
    b.start()
    a.start()
    (got,) = wait_for(lambda: _with_tag(b, "bob@b.test", "while-down"), timeout=20)
    wait_for(lambda: a.queue_entries() == [])
    assert len(_with_tag(b, "bob@b.test", "while-down")) == 1
    assert not any(b"Delivery Status Notification" in m for m in a.inbox("alice@a.test"))


def test_peer_down_past_lifetime_bounces_a_dsn(tmp_path: Path, stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path, a_queue={"lifetime": 1.5})
    stop_all += [b.start(), a]
    b.stop()
    _route(a, b)
    a.start()
    _submit(a, "too-late", mail_options=("RET=HDRS", "ENVID=env-42"),
            rcpt_options=("ORCPT=rfc822;bob+40b.test",))
    (dsn,) = wait_for(lambda: [m for m in a.inbox("alice@a.test")
                               if b"Delivery Status Notification" in m], timeout=20)
    assert dsn.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: multipart/report; report-type=delivery-status" in dsn
    assert b"Action: failed" in dsn and b"Status: 4.4.7" in dsn
    assert b"Original-Envelope-Id: env-42" in dsn
    assert b"Original-Recipient: rfc822; bob@b.test" in dsn
    assert b"Content-Type: text/rfc822-headers" in dsn  # RET=HDRS
    assert b"relayed body too-late" not in dsn
    wait_for(lambda: a.queue_entries() == [])


# ------------------------------------------------ why a relay failed (issue 9)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_error(a: Instance) -> str:
    entry = wait_for(lambda: [e for e in a.queue_entries() if e.attempts >= 1])[0]
    assert entry.last_error
    return str(entry.last_error)


def test_closed_port_is_connection_refused(tmp_path: Path, stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path)
    stop_all += [a]
    port = _closed_port()
    a.queue = {"routes": {"b.test": f"127.0.0.1:{port}"}}
    a.start()
    _submit(a, "refused")
    assert _last_error(a) == f"451 4.4.1 connection refused by 127.0.0.1:{port}"
    deferred = wait_for(lambda: [e for e in a.audit_lines()
                                 if e["action"] == "relay" and e["result"] == "deferred"])
    assert "connection refused" in deferred[0]["error"]


def test_peer_certificate_from_an_unknown_ca(tmp_path: Path, stop_all: list[Instance]) -> None:
    a = Instance(tmp_path / "a", "a.test")
    b = Instance(tmp_path / "b", "b.test")  # its own PKI: A does not trust it
    a.write_whitelist([("b.test", b.server_cert.subject)])
    b.write_whitelist([("a.test", a.pki.server.subject)])
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "unknown-ca")
    error = _last_error(a)
    assert error.startswith("451 4.7.5 certificate of 127.0.0.1 not trusted: unknown CA: "
                            "issued by ")
    assert "AC IGC-SANTE DEV ORGANISATIONS b.test" in error  # whose CA it is
    assert _with_tag(b, "bob@b.test", "unknown-ca") == []


def test_peer_refuses_our_certificate_with_its_alert(tmp_path: Path,
                                                     stop_all: list[Instance]) -> None:
    a = Instance(tmp_path / "a", "a.test")
    b = Instance(tmp_path / "b", "b.test", policy={"mx_require_client_cert": True})
    a.extra_ca = [b.pki.ca_bundle]  # A trusts B, B does not trust A's CA
    a.extra_crl = list(b.pki.crl_files)
    a.write_whitelist([("b.test", b.server_cert.subject)])
    b.write_whitelist([("a.test", a.pki.server.subject)])
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "our-cert")
    error = _last_error(a)
    assert error.startswith("451 4.7.5 127.0.0.1 refused our certificate (TLS alert: "), error
    assert _with_tag(b, "bob@b.test", "our-cert") == []


def test_receiving_mta_dn_not_the_whitelisted_one(tmp_path: Path,
                                                  stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path)
    listed = "CN=mx.other.test,OU=123,O=Other,ST=75,C=FR"
    a.write_whitelist([("b.test", listed)])
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "wrong-dn")
    error = _last_error(a)
    assert error == (f"451 4.7.5 certificate DN of 127.0.0.1 ({b.server_cert.subject}) "
                     "is not one the whitelist lists for b.test")
    assert _with_tag(b, "bob@b.test", "wrong-dn") == []
    denied = [e for e in a.audit_lines() if e["action"] == "relay-peer"]
    assert denied and denied[0]["result"] == "deny" and denied[0]["reason"] == "dn-mismatch"


def test_dn_check_off_relays_on_chain_and_name(tmp_path: Path,
                                               stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path)
    a.policy = {"relay_dn_check": "off"}
    a.write_whitelist([("b.test", "CN=mx.other.test,OU=123,O=Other,ST=75,C=FR")])
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "dn-off")
    wait_for(lambda: _with_tag(b, "bob@b.test", "dn-off"))


def test_peer_550_is_recorded_with_code_and_text(tmp_path: Path,
                                                 stop_all: list[Instance]) -> None:
    a, b = _pair(tmp_path, a_in_b_whitelist=False)
    stop_all += [b.start(), a]
    _route(a, b)
    a.start()
    _submit(a, "answered-550")
    # A permanent answer ends the entry: its words go to the audit and the DSN.
    failed = wait_for(lambda: [e for e in a.audit_lines()
                               if e["action"] == "relay" and e["result"] == "fail"])
    assert failed[0]["error"].startswith("550 5.7.1 ")
    assert failed[0]["error"].endswith("(answer of 127.0.0.1 to MAIL FROM)")
    (dsn,) = wait_for(lambda: [m for m in a.inbox("alice@a.test") if b"Action: failed" in m])
    assert b"Diagnostic-Code: smtp; 550 5.7.1 " in dsn
