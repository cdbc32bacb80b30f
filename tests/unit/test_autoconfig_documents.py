"""`autoconfig.documents`: what is announced from the settings, the
documents' shapes, and the Autodiscover request parser against hostile input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from store_support import make_settings

from conf.settings import AuthMethod, ListenerSettings
from mssctl.autoconfig.documents import (
    AUTODISCOVER_REQUEST_NS,
    MAX_REQUEST,
    OUTLOOK_RESPONSE_NS,
    AutodiscoverRequestError,
    ClientSetup,
    parse_autodiscover_request,
    thunderbird_config,
)


def listeners(*specs: tuple[str, int, str]) -> list[ListenerSettings]:
    return [ListenerSettings(name=f"{role}-{port}", port=port, role=role, tls=tls)  # type: ignore[arg-type]
            for role, port, tls in specs]


def setup_for(tmp_path: Path, **overrides: Any) -> ClientSetup:
    return ClientSetup.from_settings(make_settings(tmp_path, **overrides))


def test_announced_listeners(tmp_path: Path) -> None:
    setup = setup_for(tmp_path, hostname="mx.hopital.test", listeners=listeners(
        ("mx", 25, "starttls"), ("imap", 143, "starttls"), ("imap", 993, "implicit"),
        ("imap", 1143, "none"), ("submission", 587, "starttls"),
        ("submission", 465, "implicit"), ("autoconfig", 443, "implicit")))
    assert [(e.kind, e.port, e.implicit_tls, e.host) for e in setup.incoming] == [
        ("imap", 993, True, "mx.hopital.test"), ("imap", 143, False, "mx.hopital.test")]
    assert [(e.port, e.implicit_tls) for e in setup.outgoing] == [(465, True), (587, False)]


def test_server_and_display_name(tmp_path: Path) -> None:
    from conf.settings import AutoconfigSettings

    setup = setup_for(tmp_path, listeners=listeners(("imap", 993, "implicit")),
                      autoconfig=AutoconfigSettings(server="imap.hopital.test",
                                                    display_name="Hôpital"))
    assert setup.incoming[0].host == "imap.hopital.test"
    doc = ET.fromstring(thunderbird_config(setup, "hopital.test", [AuthMethod.PASSWORD]))  # noqa: S314
    assert doc.findtext("emailProvider/displayName") == "Hôpital"


@pytest.mark.parametrize(("methods", "expected"), [
    ([AuthMethod.CARD, AuthMethod.PASSWORD], ["TLS-client-cert", "password-cleartext"]),
    ([AuthMethod.PASSWORD_TOTP, AuthMethod.PASSWORD], ["password-cleartext"]),  # once
    ([AuthMethod.TOKEN], ["OAuth2"]),
    ([AuthMethod.ORG_CERTIFICATE], ["TLS-client-cert"]),
])
def test_thunderbird_authentication(tmp_path: Path, methods: list[AuthMethod],
                                    expected: list[str]) -> None:
    setup = setup_for(tmp_path, listeners=listeners(("imap", 993, "implicit"),
                                                    ("submission", 465, "implicit")))
    doc = ET.fromstring(thunderbird_config(setup, "hopital.test", methods))  # noqa: S314
    for server in doc.iter():
        if server.tag in ("incomingServer", "outgoingServer"):
            assert [a.text for a in server.findall("authentication")] == expected


def request(address: str = "a@hopital.test", schema: str = OUTLOOK_RESPONSE_NS) -> bytes:
    return (f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request>'
            f"<EMailAddress>{address}</EMailAddress>"
            f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
            f"</Request></Autodiscover>").encode()


def test_parse_request() -> None:
    parsed = parse_autodiscover_request(request(" a@hopital.test\n"))
    assert parsed.address == "a@hopital.test" and parsed.schema == OUTLOOK_RESPONSE_NS


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                  b'<Autodiscover xmlns="' + AUTODISCOVER_REQUEST_NS.encode()
                  + b'"><Request><EMailAddress>&lol2;@x</EMailAddress></Request></Autodiscover>')
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<Autodiscover xmlns="' + AUTODISCOVER_REQUEST_NS.encode()
            + b'"><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>')


@pytest.mark.parametrize(("body", "code"), [
    (b"", 600),
    (b"not xml", 600),
    (b"<a/>", 600),  # another root
    (request().replace(AUTODISCOVER_REQUEST_NS.encode(), b"urn:other"), 600),
    (BILLION_LAUGHS, 600),
    (EXTERNAL, 600),
    (request("no-at-sign"), 600),
    (request("a b@hopital.test"), 600),
    (request("x" * 400 + "@hopital.test"), 600),
    (request().replace(b"<EMailAddress>a@hopital.test</EMailAddress>", b""), 600),
    (request(schema="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/"
                    "responseschema/2006"), 601),
    (request() + b" " * MAX_REQUEST, 600),
])
def test_parse_refuses(body: bytes, code: int) -> None:
    with pytest.raises(AutodiscoverRequestError) as info:
        parse_autodiscover_request(body)
    assert info.value.code == code


def test_only_the_request_of_the_root_counts() -> None:
    nested = request().replace(
        b"</Request>", b"<Request><EMailAddress>b@elsewhere.test</EMailAddress></Request>"
                       b"</Request>")
    assert parse_autodiscover_request(nested).address == "a@hopital.test"


AUTOCONFIG_SETTINGS = """\
domains: [hopital.test]
listeners:
  - {{name: web, port: 8443, role: autoconfig{tls}}}
database:
  url: sqlite:///mss.db
tls:
  cert_file: pki/server.pem
  key_file: pki/server.key
audit:
  path: audit.log
key_file: keys
"""


@pytest.mark.parametrize(("tls", "error"), [
    ("", True),  # the listeners' default, starttls, means nothing to HTTP
    (", tls: starttls", True),
    (", tls: implicit", False),
    (", tls: none", False),  # loopback (the default address)
])
def test_an_autoconfig_listener_speaks_https(tmp_path: Path, tls: str, error: bool) -> None:
    from conf.loader import ConfigError, load_settings

    path = tmp_path / "mss.yaml"
    path.write_text(AUTOCONFIG_SETTINGS.format(tls=tls), encoding="utf-8")
    if not error:
        assert load_settings(path).listeners[0].role.value == "autoconfig"
        return
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.lines == [
        f"{path}: listeners.0.tls: expected implicit (HTTPS) for an autoconfig listener "
        "(or none on loopback), got starttls"]


def test_the_banner_names_an_autoconfig_listener(tmp_path: Path) -> None:
    from mssctl.serve import BoundListener, banner

    settings = make_settings(tmp_path, listeners=listeners(("autoconfig", 443, "implicit")))
    text = banner(settings, [BoundListener(settings.listeners[0], 443)], tmp_path / "mss.yaml", 1)
    assert "autoconfig-443  127.0.0.1:443    HTTPS client autoconfiguration (Thunderbird, " \
           "Outlook), TLS from the first byte" in text
