"""Submission over real sockets with real clients (smtplib, swaks)."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smtp_fixtures import PASSWORD, Instance

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: Bob <bob@a.test>\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\n"
    b"Message-ID: <e2e-1@a.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Bonjour,\r\n.leading dot line\r\n\xc3\xa9t\xc3\xa9\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = Instance(tmp_path_factory.mktemp("smtp-a"), "a.test")
    inst.write_whitelist([])
    inst.start(relay=False)
    yield inst
    inst.stop()


def _payload_of(stored: bytes) -> bytes:
    """The message without the trace headers we added at the top."""
    lines = stored.split(b"\r\n")
    i = 0
    while lines[i].startswith((b"Return-Path:", b"Received:", b"\t", b" ")):
        i += 1
    return b"\r\n".join(lines[i:])


def test_smtplib_starttls_auth_plain(server: Instance) -> None:
    before = len(server.inbox("bob@a.test"))
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as s:
        s.ehlo("client.a.test")
        assert not s.has_extn("auth")  # never offered in plaintext
        s.starttls(context=server.client_context())
        s.ehlo("client.a.test")
        assert "PLAIN" in s.esmtp_features["auth"]
        s.login("alice@a.test", PASSWORD)
        refused = s.sendmail("alice@a.test", ["bob@a.test"], MESSAGE, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    stored = server.inbox("bob@a.test")
    assert len(stored) == before + 1
    assert _payload_of(stored[-1]) == MESSAGE
    head = stored[-1][: len(stored[-1]) - len(MESSAGE)].decode()
    assert head.startswith("Return-Path: <alice@a.test>\r\nReceived: from client.a.test ([127.0.0.1])")
    assert "with ESMTPSA id" in head and "authenticated as alice@a.test" in head
    assert "(using TLSv1." in head


def test_smtplib_implicit_tls_auth_plain(server: Instance) -> None:
    before = len(server.inbox("bob@a.test"))
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                          context=server.client_context()) as s:
        s.ehlo("client.a.test")
        s.login("alice@a.test", PASSWORD)
        s.sendmail("alice@a.test", ["bob@a.test"], MESSAGE)
    stored = server.inbox("bob@a.test")
    assert len(stored) == before + 1 and _payload_of(stored[-1]) == MESSAGE
    assert b"(using TLSv1." in stored[-1] and b"with ESMTPSA" in stored[-1]


@pytest.mark.parametrize("authzid", ["", "labo@a.test"])
def test_smtplib_external_with_organisation_certificate(server: Instance, authzid: str) -> None:
    msg = MESSAGE.replace(b"From: Alice <alice@a.test>", b"From: Labo <labo@a.test>")
    before = len(server.inbox("bob@a.test"))
    ctx = server.client_context(server.pki.organisation)
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10, context=ctx) as s:
        s.ehlo("lab-software.a.test")
        assert "EXTERNAL" in s.esmtp_features["auth"]
        code, _ = s.auth("EXTERNAL", lambda challenge=None: authzid)
        assert code == 235
        s.sendmail("labo@a.test", ["bob@a.test"], msg)
    stored = server.inbox("bob@a.test")
    assert len(stored) == before + 1 and _payload_of(stored[-1]) == msg
    assert b"authenticated as labo@a.test by external" in stored[-1]


def test_external_without_certificate_is_refused(server: Instance) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                          context=server.client_context()) as s:
        s.ehlo("x.a.test")
        assert "EXTERNAL" not in s.esmtp_features.get("auth", "")
        code, _ = s.docmd("AUTH", "EXTERNAL =")
        assert code == 535


def test_wrong_password_is_refused(server: Instance) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                          context=server.client_context()) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login("alice@a.test", "nope")
        assert err.value.smtp_code == 535


def _swaks(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--from", "alice@a.test", "--to", "bob@a.test",
         "--auth", "PLAIN", "--auth-user", "alice@a.test", "--auth-password", PASSWORD,
         "--data", str(data), "--helo", "swaks.a.test", "--timeout", "15", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_swaks_submission(server: Instance, tmp_path: Path, mode: str) -> None:
    data = tmp_path / "msg.eml"
    # swaks always appends CRLF "." CRLF itself: give it the message without
    # its final line ending so that the wire carries exactly MESSAGE.
    data.write_bytes(MESSAGE[:-2])
    before = len(server.inbox("bob@a.test"))
    if mode == "starttls":
        args = ["--port", str(server.ports["submission"]), "-tls"]
    else:
        args = ["--port", str(server.ports["submissions"]), "--tls-on-connect"]
    args += ["--tls-verify", "--tls-ca-path", str(server.pki.ca_bundle)]
    result = _swaks(*args, data=data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Message accepted" in result.stdout
    stored = server.inbox("bob@a.test")
    assert len(stored) == before + 1
    assert _payload_of(stored[-1]) == MESSAGE


def test_audit_names_the_actor(server: Instance) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                          context=server.client_context()) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("bob@a.test", "wrong")
        s.login("alice@a.test", PASSWORD)
        s.sendmail("alice@a.test", ["bob@a.test"], MESSAGE.replace(b"e2e-1", b"audit-1"))
    events: list[dict[str, Any]] = server.audit_lines()
    assert any(e["action"] == "login" and e["result"] == "deny" and e["actor"] == "bob@a.test"
               for e in events)
    delivers = [e for e in events if e["action"] == "deliver"]
    assert delivers and delivers[-1]["actor"] == "alice@a.test"
    assert delivers[-1]["target"] == "bob@a.test" and delivers[-1]["result"] == "ok"
    assert all("secret" not in str(e) and "Bonjour" not in str(e) for e in events)
