"""Mail client autoconfiguration: an `autoconfig` listener (HTTPS) of a
running demo instance, asked over real HTTPS on loopback the way Thunderbird
(GET config-v1.1.xml?emailaddress=) and Outlook (POST of an Autodiscover POX
request) ask; the documents are parsed and checked against what those
clients read (Thunderbird's config-v1.1 format, Autodiscover's
outlook/responseschema/2006a)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from integration_support import CARDIO, DURAND, LABO, MARTIN, MssInstance

from mssctl.autoconfig.documents import (
    AUTODISCOVER_NS,
    AUTODISCOVER_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOST = "mx.hopital.test"  # the demo's hostname: what clients are told to connect to


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MssInstance, int]]:
    inst = MssInstance.demo(tmp_path_factory, "autoconfig")
    port = free_port()
    config = inst.directory / "mss.yaml"
    text = config.read_text(encoding="utf-8")
    marker = "\ndatabase:"
    text = text.replace(marker, f"  - {{name: autoconfig, address: 127.0.0.1, port: {port}, "
                                f"role: autoconfig, tls: implicit}}\n{marker}", 1)
    config.write_text(text, encoding="utf-8")
    inst.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, inst.log_tail()
            time.sleep(0.05)  # polling with a deadline
    try:
        yield inst, port
    finally:
        inst.stop()


def request(inst: MssInstance, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    # A client that checks the certificate against the CA it trusts, by name.
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=inst.client_context(),
                                       timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- Thunderbird


def servers(doc: ET.Element, tag: str) -> list[dict[str, object]]:
    out = []
    for el in doc.findall(f"./emailProvider/{tag}"):
        out.append({
            "type": el.get("type"),
            "hostname": el.findtext("hostname"),
            "port": int(el.findtext("port") or 0),
            "socketType": el.findtext("socketType"),
            "authentication": [a.text for a in el.findall("authentication")],
            "username": el.findtext("username"),
        })
    return out


def thunderbird(inst: MssInstance, port: int, path: str) -> ET.Element:
    status, headers, body = request(inst, port, "GET", path)
    assert status == 200, (status, body)
    assert headers["content-type"].startswith("application/xml")
    assert headers["server"] == "MSS autoconfig"
    doc = ET.fromstring(body)  # noqa: S314 - our own server's answer
    # What Thunderbird's readFromXML requires (config-v1.1).
    assert doc.tag == "clientConfig" and doc.get("version") == "1.1"
    provider = doc.find("emailProvider")
    assert provider is not None and provider.get("id") == "hopital.test"
    assert [d.text for d in provider.findall("domain")] == ["hopital.test"]
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    return doc


class Unreadable(Exception):
    pass


# What Thunderbird's readFromXML maps (accountcreation, comm-central); in the
# versions read while writing this, TLS-client-cert is not among them, and
# OAuth2 only for the providers Thunderbird knows.
TB_AUTH = {"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM"}


def thunderbird_reads(doc: ET.Element, *, knows_client_cert: bool) -> tuple[str, str]:
    """The incoming and outgoing methods Thunderbird would configure, by its
    rules: the first server it can read of each kind, and in it the first
    <authentication> it knows; raises Unreadable like readFromXML throws."""
    known = TB_AUTH | ({"TLS-client-cert"} if knows_client_cert else set())
    chosen = []
    for tag, types in (("incomingServer", {"imap", "pop3"}), ("outgoingServer", {"smtp"})):
        for server in servers(doc, tag):
            if server["type"] not in types or not 1 <= int(server["port"]) <= 65535:  # type: ignore[call-overload]
                continue
            if server["socketType"] not in ("plain", "SSL", "STARTTLS") or not server["username"]:
                continue
            usable = [a for a in server["authentication"] if a in known]  # type: ignore[attr-defined]
            if usable:
                chosen.append(usable[0])
                break
        else:
            raise Unreadable(f"need proper <{tag}> in XML file")
    return chosen[0], chosen[1]


# One answer for every address (`Policy.client_setup_methods`): the staff's
# methods first, then the card and the organisation certificate.
AUTH = ["password-cleartext", "OAuth2", "TLS-client-cert"]


def test_what_thunderbird_configures(served: tuple[MssInstance, int]) -> None:
    inst, port = served
    path = "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress="
    # Every account is set up with the password, the card holder and the
    # system too (they choose "TLS Certificate" by hand, as the README says),
    # by a Thunderbird that knows certificate autoconfiguration or not.
    for address in (MARTIN, DURAND, LABO):
        doc = thunderbird(inst, port, path + address)
        for knows in (True, False):
            assert thunderbird_reads(doc, knows_client_cert=knows) == \
                ("password-cleartext",) * 2, (address, knows)


@pytest.mark.parametrize("path", ["/.well-known/autoconfig/mail/config-v1.1.xml",
                                  "/mail/config-v1.1.xml"])
def test_thunderbird_card_holder(served: tuple[MssInstance, int], path: str) -> None:
    inst, port = served
    doc = thunderbird(inst, port, f"{path}?emailaddress={MARTIN}")
    incoming = servers(doc, "incomingServer")
    # IMAPS first, then IMAP with STARTTLS.
    auth = AUTH
    assert incoming == [
        {"type": "imap", "hostname": HOST, "port": inst.port("imaps"), "socketType": "SSL",
         "authentication": auth, "username": "%EMAILADDRESS%"},
        {"type": "imap", "hostname": HOST, "port": inst.port("imap"), "socketType": "STARTTLS",
         "authentication": auth, "username": "%EMAILADDRESS%"},
    ]
    outgoing = servers(doc, "outgoingServer")
    assert [(s["type"], s["port"], s["socketType"]) for s in outgoing] == [
        ("smtp", inst.port("submissions"), "SSL"), ("smtp", inst.port("submission"), "STARTTLS")]
    assert all(s["authentication"] == auth for s in outgoing)
    # The MX listener (other operators) is never offered to a client.
    assert inst.port("smtp-mx") not in [s["port"] for s in outgoing]


def test_the_answer_does_not_tell_which_accounts_exist_or_their_kind(
        served: tuple[MssInstance, int]) -> None:
    """Regression: the document followed the account's class (a card holder
    got the card first, a system the organisation certificate alone,
    anyone else the staff's methods), so anyone could tell practitioners'
    and systems' addresses from others. Now every address of the domain
    gets the same bytes."""
    inst, port = served
    path = "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress="
    docs = {address: request(inst, port, "GET", path + address)
            for address in (MARTIN, LABO, DURAND, "nobody@hopital.test", CARDIO)}
    assert all(status == 200 for status, _, _ in docs.values()), docs
    assert len({body for _, _, body in docs.values()}) == 1, docs
    assert servers(thunderbird(inst, port, path + LABO),
                   "incomingServer")[0]["authentication"] == AUTH
    no_address = thunderbird(inst, port, "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert servers(no_address, "incomingServer")[0]["port"] == inst.port("imaps")


def test_thunderbird_foreign_domain_and_other_paths(served: tuple[MssInstance, int]) -> None:
    inst, port = served
    status, _, _ = request(inst, port, "GET", "/mail/config-v1.1.xml?emailaddress=a@gmail.test")
    assert status == 404
    for path in ("/", "/mss.yaml", "/../keys", "/.well-known/autoconfig/mail/"):
        assert request(inst, port, "GET", path)[0] == 404, path
    status, headers, _ = request(inst, port, "POST", "/mail/config-v1.1.xml", body=b"x")
    assert status == 405 and headers["allow"] == "GET, HEAD"


# ---------------------------------------------------------------- Outlook


def pox(address: str, schema: str = OUTLOOK_RESPONSE_NS) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\r\n'
            f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}">\r\n'
            f"  <Request>\r\n    <EMailAddress>{address}</EMailAddress>\r\n"
            f"    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\r\n"
            f"  </Request>\r\n</Autodiscover>\r\n").encode()


A = f"{{{AUTODISCOVER_NS}}}"
O = f"{{{OUTLOOK_RESPONSE_NS}}}"  # noqa: E741


def test_outlook_autodiscover(served: tuple[MssInstance, int]) -> None:
    inst, port = served
    status, headers, body = request(inst, port, "POST", "/Autodiscover/Autodiscover.xml",
                                    body=pox(DURAND), headers={"Content-Type": "text/xml"})
    assert status == 200 and headers["content-type"].startswith("text/xml")
    doc = ET.fromstring(body)  # noqa: S314 - our own server's answer
    assert doc.tag == f"{A}Autodiscover"
    response = doc.find(f"{O}Response")
    assert response is not None, body
    account = response.find(f"{O}Account")
    assert account is not None
    assert account.findtext(f"{O}AccountType") == "email"
    assert account.findtext(f"{O}Action") == "settings"
    protocols = [{child.tag.removeprefix(O): child.text for child in p}
                 for p in account.findall(f"{O}Protocol")]
    common = {"Server": HOST, "DomainRequired": "off", "LoginName": DURAND, "SPA": "off",
              "AuthRequired": "on"}
    smtp_extra = {"UsePOPAuth": "off", "SMTPLast": "off"}
    assert protocols == [
        {"Type": "IMAP", "Port": str(inst.port("imaps")), "Encryption": "SSL", **common},
        {"Type": "IMAP", "Port": str(inst.port("imap")), "Encryption": "TLS", **common},
        {"Type": "SMTP", "Port": str(inst.port("submissions")), "Encryption": "SSL", **common,
         **smtp_extra},
        {"Type": "SMTP", "Port": str(inst.port("submission")), "Encryption": "TLS", **common,
         **smtp_extra},
    ]


def error_code(body: bytes) -> str | None:
    doc = ET.fromstring(body)  # noqa: S314 - our own server's answer
    return doc.findtext(f"{A}Response/{A}Error/{A}ErrorCode")


@pytest.mark.parametrize(("body", "code"), [
    (pox(DURAND, "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/"
                 "responseschema/2006"), "601"),
    (pox("a@gmail.test"), "600"),
    (pox("not an address"), "600"),
    (b"<Autodiscover", "600"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><Autodiscover xmlns="'
     + AUTODISCOVER_REQUEST_NS.encode() + b'"/>', "600"),
    (b"", "600"),
])
def test_outlook_bad_requests(served: tuple[MssInstance, int], body: bytes, code: str) -> None:
    inst, port = served
    status, _, answer = request(inst, port, "POST", "/autodiscover/autodiscover.xml", body=body)
    assert status == 200 and error_code(answer) == code, answer


def raw_exchange(inst: MssInstance, port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Sends a request's head, then body chunks while the server lets us,
    and returns all it answered (it may close while we still send)."""
    ctx = inst.client_context()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # the server closed while we were still sending
        try:
            while data := s.recv(4096):
                answer += data
        except OSError:
            pass
    return answer


def test_an_oversized_request_is_refused(served: tuple[MssInstance, int]) -> None:
    inst, port = served
    # Announced too large: refused from the head, before any body.
    answer = raw_exchange(inst, port, b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\n"
                          b"Host: x\r\nContent-Length: 65536\r\n\r\n", [])
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    # Chunked (no length announced): refused once past the limit.
    answer = raw_exchange(inst, port, b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\n"
                          b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                          [b"2000\r\n" + b"<" * 0x2000 + b"\r\n"] * 8)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    # Still serving, and nothing in the log looks like a bug.
    assert request(inst, port, "GET", "/mail/config-v1.1.xml")[0] == 200
    assert "Traceback" not in inst.log_tail(50000)


def test_doctor_reaches_the_autoconfig_listener(served: tuple[MssInstance, int]) -> None:
    from mssctl_support import mssctl_inprocess

    inst, port = served
    code, out, _ = mssctl_inprocess("doctor", "--config", str(inst.directory / "mss.yaml"))
    assert f"OK    listener     autoconfig 127.0.0.1:{port}: HTTP/1.1 200 OK" in out, out
    assert code == 0, out


def test_plain_http_is_not_served(served: tuple[MssInstance, int]) -> None:
    inst, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")
