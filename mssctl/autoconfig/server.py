"""`build_factory(services, listener)`: the `autoconfig` listener, HTTPS
(twisted.web) serving mail client autoconfiguration (`autoconfig.documents`).

The login methods offered come from the policy
(`Policy.client_setup_methods`: the same for every address, so the answer
does not tell which accounts exist or what kind they are; it reads no
store). Requests are small and bounded: a body over
`MAX_REQUEST` octets is answered 413 and the connection closed; headers are
bounded by twisted.web (16 KiB, 500 lines); an idle connection is closed
after `IDLE_TIMEOUT`. No access log: the query names an address, and a
request says nothing worth keeping.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from twisted.web import resource, server

from certs.tlsconn import close_connection, implicit_tls_factory
from conf.settings import ClientCertMode, ListenerSettings, TLSMode
from mssctl.autoconfig.documents import (
    MAX_REQUEST,
    AutodiscoverRequestError,
    ClientSetup,
    autodiscover_error,
    autodiscover_response,
    parse_autodiscover_request,
    thunderbird_config,
)
from policy.services import Services

IDLE_TIMEOUT = 30.0  # seconds
THUNDERBIRD_PATHS = (b"/.well-known/autoconfig/mail/config-v1.1.xml", b"/mail/config-v1.1.xml")
AUTODISCOVER_PATH = b"/autodiscover/autodiscover.xml"  # compared case-insensitively


class _BoundedRequest(server.Request):
    """A request whose body may not exceed MAX_REQUEST octets."""

    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)  # type: ignore[no-untyped-call]
        if length is not None and length > MAX_REQUEST:
            self._too_large()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_REQUEST:
            self._too_large()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _too_large(self) -> None:
        if self._refused:
            return
        self._refused = True
        transport: Any = self.channel.transport
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n")
        # Not waiting for the client's close_notify: it may still be sending.
        close_connection(transport, None, 0.0)


class AutoconfigResource(resource.Resource):
    """Every path of the listener: routing by exact path, so nothing else
    (no directory listing, no other file) is ever served."""

    isLeaf = True

    def __init__(self, services: Services) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.services = services
        self.setup = ClientSetup.from_settings(services.settings)

    def render(self, request: Any) -> bytes | int:
        request.setHeader(b"server", b"MSS autoconfig")  # not Twisted's name and version
        path = (request.path or b"").rstrip(b"/") or b"/"
        method = request.method or b""
        if path in THUNDERBIRD_PATHS:
            if method not in (b"GET", b"HEAD"):
                return _plain(request, 405, b"GET only\n", allow=b"GET, HEAD")
            return self._thunderbird(request)
        if path.lower() == AUTODISCOVER_PATH:
            if method != b"POST":
                return _plain(request, 405, b"POST only\n", allow=b"POST")
            return self._autodiscover(request)
        return _plain(request, 404, b"not found\n")

    # -- Thunderbird

    def _thunderbird(self, request: Any) -> bytes | int:
        query = parse_qs((request.uri or b"").partition(b"?")[2].decode("utf-8", "replace"))
        addresses = query.get("emailaddress", [])
        address = addresses[0].strip() if addresses else ""
        if address and not self.setup.serves(address):
            return _plain(request, 404, b"not a domain of this server\n")
        domain = address.rpartition("@")[2].lower() if address else self.setup.domains[0]

        methods = self.services.policy.client_setup_methods()
        return _document(request, b"application/xml; charset=utf-8",
                         thunderbird_config(self.setup, domain, methods))

    # -- Outlook

    def _autodiscover(self, request: Any) -> bytes | int:
        body = request.content.read() if request.content is not None else b""
        try:
            parsed = parse_autodiscover_request(body)
        except AutodiscoverRequestError as exc:
            return _xml(request, autodiscover_error(exc.code, exc.message))
        if not self.setup.serves(parsed.address):
            return _xml(request, autodiscover_error(
                600, "Invalid Request"))  # Exchange's answer for a foreign address

        return _document(request, b"text/xml; charset=utf-8",
                         autodiscover_response(self.setup, parsed.address))


def _plain(request: Any, code: int, body: bytes, *,
           allow: bytes | None = None) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    if allow is not None:
        request.setHeader(b"allow", allow)
    return body


def _xml(request: Any, body: bytes) -> bytes:
    request.setHeader(b"content-type", b"text/xml; charset=utf-8")
    return body


def _document(request: Any, content_type: bytes, body: bytes) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    return body


class AutoconfigSite(server.Site):
    requestFactory = _BoundedRequest

    def log(self, request: Any) -> None:
        """No access log (see the module docstring)."""


def build_factory(services: Services, listener: ListenerSettings) -> Any:
    site = AutoconfigSite(AutoconfigResource(services),  # type: ignore[no-untyped-call]
                          timeout=IDLE_TIMEOUT)
    site.displayTracebacks = False
    if listener.tls is TLSMode.NONE:
        return site
    # Clients fetching their settings have no certificate to show yet.
    https = listener.model_copy(update={"client_cert": ClientCertMode.NONE})
    return implicit_tls_factory(services, https, site)
