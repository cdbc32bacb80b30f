"""IMAP over real sockets on 127.0.0.1 with real clients: Python imaplib
(IMAPS, STARTTLS, EXTERNAL with the demo card), curl, and a delivery made by
another process announced during IDLE within one second."""

from __future__ import annotations

import base64
import imaplib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import (
    CARDIO,
    DOCTOR,
    PASSWORD,
    SECRETARY,
    ServerProcess,
    client_ssl_context,
    make_world,
)

pytestmark = pytest.mark.e2e

RAW = (b"From: Dr Martin <dr.martin@hopital.test>\r\nTo: <secretaire@hopital.test>\r\n"
       b"Subject: compte rendu\r\nMessage-ID: <e2e-1@hopital.test>\r\n\r\nBonjour\r\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: Any, dev_pki: Any) -> Iterator[tuple[dict[str, Any], dict[str, int], Path]]:
    directory = tmp_path_factory.mktemp("imap-e2e")
    config = make_world(directory, dev_pki)
    server = ServerProcess(config, directory)
    ports = server.start()
    try:
        yield config, ports, directory
    finally:
        server.stop()


def _deliver(config: dict[str, Any], address: str, raw: bytes) -> None:
    from storage import open_store
    from storage.interface import Delivery

    store = open_store(config["url"], Path(config["key_file"]))
    try:
        mb = store.get_mailbox(address)
        store.deliver(Delivery(raw=raw, mailbox_ids=(mb.id,)))
    finally:
        store.close()


def test_imaps_with_imaplib(world: Any, dev_pki: Any) -> None:
    config, ports, _ = world
    _deliver(config, SECRETARY, RAW)
    with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"],
                           ssl_context=client_ssl_context(dev_pki)) as m:
        assert "AUTH=PLAIN" in m.capabilities
        typ, _ = m.login(SECRETARY, PASSWORD)
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1
        typ, data = m.uid("FETCH", "1", "(UID RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == RAW
        typ, data = m.list()
        assert any(b'"Shared/cardiologie@hopital.test/INBOX"' in d for d in data)
        typ, _ = m.append("Drafts", r"(\Draft)", None, RAW)
        assert typ == "OK"


def test_starttls_with_imaplib(world: Any, dev_pki: Any) -> None:
    _, ports, _ = world
    m = imaplib.IMAP4("127.0.0.1", ports["imap"])
    try:
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        m.starttls(ssl_context=client_ssl_context(dev_pki))
        assert "LOGINDISABLED" not in m.capabilities
        typ, _ = m.login(SECRETARY, PASSWORD)
        assert typ == "OK"
        typ, data = m.namespace()
        assert typ == "OK" and b"Shared/" in data[0]
    finally:
        m.logout()


def test_starttls_discards_injected_plaintext(world: Any, dev_pki: Any) -> None:
    _, ports, _ = world
    with socket.create_connection(("127.0.0.1", ports["imap"]), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        # A man in the middle appends a command after STARTTLS, in plaintext.
        s.sendall(b"a1 STARTTLS\r\na2 LOGIN injected x\r\n")
        assert f.readline() == b"a1 OK Begin TLS negotiation now\r\n"
        tls = client_ssl_context(dev_pki).wrap_socket(s, server_hostname="127.0.0.1")
        tf = tls.makefile("rb")
        tls.sendall(b"a3 NOOP\r\n")
        # Nothing about a2: it was dropped with the plaintext buffer.
        assert tf.readline() == b"a3 OK NOOP completed\r\n"
        tls.close()


def _raw_tls(ports: dict[str, int], pki: Any, cert: Any) -> tuple[ssl.SSLSocket, Any]:
    s = socket.create_connection(("127.0.0.1", ports["imaps"]), timeout=10)
    tls = client_ssl_context(pki, cert).wrap_socket(s, server_hostname="127.0.0.1")
    f = tls.makefile("rb")
    greeting = f.readline()
    assert b"AUTH=EXTERNAL" in greeting, greeting
    return tls, f


@pytest.mark.parametrize("initial", [base64.b64encode(DOCTOR.encode()).decode(), "="])
def test_external_with_demo_card(world: Any, dev_pki: Any, initial: str) -> None:
    _, ports, _ = world
    tls, f = _raw_tls(ports, dev_pki, dev_pki.practitioner)
    try:
        tls.sendall(f"a1 AUTHENTICATE EXTERNAL {initial}\r\n".encode())
        line = f.readline()
        assert line.startswith(b"a1 OK [CAPABILITY IMAP4rev1"), line
        tls.sendall(b"a2 SELECT INBOX\r\n")
        while not (line := f.readline()).startswith(b"a2 "):
            pass
        assert line.startswith(b"a2 OK [READ-WRITE]")
    finally:
        tls.close()


def test_external_for_another_account_is_refused(world: Any, dev_pki: Any) -> None:
    _, ports, _ = world
    tls, f = _raw_tls(ports, dev_pki, dev_pki.practitioner)
    try:
        tls.sendall(b"a1 AUTHENTICATE EXTERNAL " + base64.b64encode(SECRETARY.encode()) + b"\r\n")
        assert f.readline().startswith(b"a1 NO [AUTHORIZATIONFAILED]")
    finally:
        tls.close()


def test_idle_announces_delivery_by_another_process_within_one_second(
    world: Any, dev_pki: Any
) -> None:
    config, ports, _ = world
    with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"],
                           ssl_context=client_ssl_context(dev_pki)) as m:
        m.login(SECRETARY, PASSWORD)
        typ, data = m.select(f'"Shared/{CARDIO}/INBOX"')
        exists = int(data[0])
        sock = m.socket()
        sock.sendall(b"i1 IDLE\r\n")
        f = m.file
        assert f.readline().startswith(b"+ ")
        # The test process is "another process": it writes to the same database.
        start = time.monotonic()
        _deliver(config, CARDIO, RAW)
        delivered = time.monotonic()
        sock.settimeout(5)
        line = f.readline()
        elapsed = time.monotonic() - delivered
        assert line == b"* %d EXISTS\r\n" % (exists + 1), line
        assert elapsed < 1.0, elapsed
        sock.sendall(b"DONE\r\n")
        while not (line := f.readline()).startswith(b"i1 "):
            pass
        assert line == b"i1 OK IDLE terminated\r\n"
        assert start <= delivered


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_fetches_over_imaps(world: Any, dev_pki: Any) -> None:
    config, ports, _ = world
    _deliver(config, SECRETARY, RAW)
    base = f"imaps://127.0.0.1:{ports['imaps']}"
    common = ["curl", "-sS", "--cacert", str(dev_pki.ca_bundle), "--max-time", "20",
              "-u", f"{SECRETARY}:{PASSWORD}"]
    out = subprocess.run(common + [base + "/"], capture_output=True, check=True).stdout
    assert b'"INBOX"' in out or b" INBOX" in out
    assert b"Archive" in out
    out = subprocess.run(common + [base + "/INBOX;UID=1"], capture_output=True, check=True).stdout
    assert out == RAW


def _login_mechanism(user: str, password: str) -> Any:
    """imaplib's authobject for SASL LOGIN: answers each decoded prompt."""
    def answer(challenge: bytes) -> bytes:
        replies = {b"Username:": user.encode(), b"Password:": password.encode()}
        assert challenge in replies, challenge  # the prompts every client expects
        return replies[challenge]
    return answer


def test_authenticate_login_with_imaplib(world: Any, dev_pki: Any) -> None:
    """Thunderbird's fallback after a NO to PLAIN: SASL LOGIN, over TLS."""
    _, ports, _ = world
    with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"],
                           ssl_context=client_ssl_context(dev_pki)) as m:
        assert "AUTH=LOGIN" in m.capabilities and "AUTH=EXTERNAL" not in m.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.authenticate("PLAIN", lambda _: f"\0{SECRETARY}\0wrong".encode())
        typ, data = m.authenticate("LOGIN", _login_mechanism(SECRETARY, PASSWORD))
        assert typ == "OK", data
        typ, data = m.select("INBOX")
        assert typ == "OK"


def test_authenticate_login_needs_tls(world: Any, dev_pki: Any) -> None:
    _, ports, _ = world
    m = imaplib.IMAP4("127.0.0.1", ports["imap"])
    try:
        assert "AUTH=LOGIN" not in m.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            m.authenticate("LOGIN", _login_mechanism(SECRETARY, PASSWORD))
        m.starttls(ssl_context=client_ssl_context(dev_pki))
        assert "AUTH=LOGIN" in m.capabilities
        typ, _ = m.authenticate("LOGIN", _login_mechanism(SECRETARY, PASSWORD))
        assert typ == "OK"
    finally:
        m.logout()
