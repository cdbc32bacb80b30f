"""The documents of mail client autoconfiguration, pure: no Twisted, no store.

- Thunderbird's autoconfig, format config-v1.1
  (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
  served at ``/.well-known/autoconfig/mail/config-v1.1.xml`` and
  ``/mail/config-v1.1.xml`` (``?emailaddress=``).
- Outlook's Autodiscover "POX" (plain old XML): the request schema
  ``.../outlook/requestschema/2006`` POSTed to ``/autodiscover/autodiscover.xml``,
  answered in ``.../outlook/responseschema/2006a`` (MS-OXDSCLI).

What is announced comes from the listeners: IMAP and submission listeners
with TLS (implicit first: 993 and 465 are what the trust space's clients
use, then STARTTLS); a `tls: none` listener is never announced.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - only builds documents; parsing is expat below
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from xml.parsers import expat

from conf.settings import AuthMethod, ListenerRole, Settings, TLSMode

AUTODISCOVER_REQUEST_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006")
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a")
MAX_REQUEST = 16 * 1024  # an Autodiscover request is a few hundred octets

# Thunderbird's <authentication> value per login method.
THUNDERBIRD_AUTH: dict[AuthMethod, str] = {
    AuthMethod.CARD: "TLS-client-cert",
    AuthMethod.ORG_CERTIFICATE: "TLS-client-cert",
    AuthMethod.PASSWORD: "password-cleartext",
    AuthMethod.PASSWORD_TOTP: "password-cleartext",  # the code follows the password
    AuthMethod.TOKEN: "OAuth2",
}


@dataclass(frozen=True)
class Endpoint:
    kind: Literal["imap", "smtp"]
    host: str
    port: int
    implicit_tls: bool


@dataclass(frozen=True)
class ClientSetup:
    """What a client is told, for every address of these settings."""

    domains: tuple[str, ...]
    display_name: str
    incoming: tuple[Endpoint, ...]
    outgoing: tuple[Endpoint, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientSetup:
        host = settings.autoconfig.server or settings.hostname

        def endpoints(role: ListenerRole, kind: Literal["imap", "smtp"]) -> tuple[Endpoint, ...]:
            found = [Endpoint(kind, host, lst.port, lst.tls is TLSMode.IMPLICIT)
                     for lst in settings.listeners_for(role) if lst.tls is not TLSMode.NONE]
            found.sort(key=lambda e: not e.implicit_tls)  # stable: file order within a kind
            return tuple(found)

        return cls(tuple(d.lower() for d in settings.domains),
                   settings.autoconfig.display_name or settings.domains[0],
                   endpoints(ListenerRole.IMAP, "imap"), endpoints(ListenerRole.SUBMISSION, "smtp"))

    def serves(self, address: str) -> bool:
        _, at, domain = address.rpartition("@")
        return bool(at) and domain.lower().rstrip(".") in self.domains


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = text
    return el


def _serialise(root: ET.Element) -> bytes:
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def thunderbird_config(setup: ClientSetup, domain: str, methods: list[AuthMethod]) -> bytes:
    """config-v1.1 for one domain; `methods` in order of preference (each
    server lists one <authentication> per distinct value: Thunderbird takes
    the first it supports)."""
    auths: list[str] = []
    for method in methods:
        value = THUNDERBIRD_AUTH[method]
        if value not in auths:
            auths.append(value)
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    for d in setup.domains:
        _text(provider, "domain", d)
    _text(provider, "displayName", setup.display_name)
    _text(provider, "displayShortName", setup.display_name)
    for tag, endpoints in (("incomingServer", setup.incoming), ("outgoingServer", setup.outgoing)):
        for e in endpoints:
            server = ET.SubElement(provider, tag, type=e.kind)
            _text(server, "hostname", e.host)
            _text(server, "port", str(e.port))
            _text(server, "socketType", "SSL" if e.implicit_tls else "STARTTLS")
            for auth in auths:
                _text(server, "authentication", auth)
            _text(server, "username", "%EMAILADDRESS%")
    return _serialise(root)


def autodiscover_response(setup: ClientSetup, address: str) -> bytes:
    """The POX answer: IMAP and SMTP settings, login = the address. Outlook
    has no certificate login over IMAP, so a card holder's Outlook gets the
    servers and fails to log in unless the class allows a password."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for kind, endpoints in (("IMAP", setup.incoming), ("SMTP", setup.outgoing)):
        for e in endpoints:
            protocol = ET.SubElement(account, "Protocol")
            _text(protocol, "Type", kind)
            _text(protocol, "Server", e.host)
            _text(protocol, "Port", str(e.port))
            _text(protocol, "DomainRequired", "off")
            _text(protocol, "LoginName", address)
            _text(protocol, "SPA", "off")
            # Encryption overrides SSL: SSL = TLS from the first byte, TLS = STARTTLS.
            _text(protocol, "Encryption", "SSL" if e.implicit_tls else "TLS")
            _text(protocol, "AuthRequired", "on")
            if kind == "SMTP":
                _text(protocol, "UsePOPAuth", "off")
                _text(protocol, "SMTPLast", "off")
    return _serialise(root)


def autodiscover_error(code: int, message: str) -> bytes:
    """An Autodiscover error response (600 Invalid Request, 601 Provider is
    not available for the requested schema), as Exchange sends them."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_NS)
    response = ET.SubElement(root, "Response")
    error = ET.SubElement(response, "Error", Time=datetime.now(UTC).strftime("%H:%M:%S.%f"),
                          Id="0")
    _text(error, "ErrorCode", str(code))
    _text(error, "Message", message)
    ET.SubElement(error, "DebugData")
    return _serialise(root)


# ---------------------------------------------------------------- the request


class AutodiscoverRequestError(Exception):
    """The request cannot be answered; `code` is the Autodiscover error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AutodiscoverRequest:
    address: str
    schema: str


_SEP = "\x01"
_REQUEST = f"{AUTODISCOVER_REQUEST_NS}{_SEP}Request"
_EMAIL = f"{AUTODISCOVER_REQUEST_NS}{_SEP}EMailAddress"
_SCHEMA = f"{AUTODISCOVER_REQUEST_NS}{_SEP}AcceptableResponseSchema"
_ROOT = f"{AUTODISCOVER_REQUEST_NS}{_SEP}Autodiscover"


class _Refused(Exception):
    pass


def parse_autodiscover_request(body: bytes) -> AutodiscoverRequest:
    """The address and response schema of a POX request. No DTD or entity
    is accepted (billion laughs, external entities). Raises
    AutodiscoverRequestError (600) for anything else than one request."""
    if len(body) > MAX_REQUEST:
        raise AutodiscoverRequestError(600, "Invalid Request")
    stack: list[str] = []
    text: list[str] = []
    fields: dict[str, str] = {}

    def refuse(*args: object) -> Any:
        raise _Refused("DTDs and entities are not accepted")

    def start(name: str, attrs: dict[str, str]) -> None:
        if not stack and name != _ROOT:
            raise _Refused("not an Autodiscover request")
        stack.append(name)
        text.clear()

    def end(name: str) -> None:
        stack.pop()
        if name in (_EMAIL, _SCHEMA) and stack == [_ROOT, _REQUEST]:
            fields[name] = "".join(text).strip()
        text.clear()

    p = expat.ParserCreate(namespace_separator=_SEP)
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = text.append
    p.buffer_text = True
    try:
        p.Parse(body, True)
    except (_Refused, expat.ExpatError):
        raise AutodiscoverRequestError(600, "Invalid Request") from None
    address = fields.get(_EMAIL, "")
    if not address or len(address) > 320 or "@" not in address or any(
            c.isspace() or c in "<>\"'" for c in address):
        raise AutodiscoverRequestError(600, "Invalid Request")
    schema = fields.get(_SCHEMA, "")
    if schema != OUTLOOK_RESPONSE_NS:
        raise AutodiscoverRequestError(601, "Provider is not available for the requested schema")
    return AutodiscoverRequest(address, schema)
