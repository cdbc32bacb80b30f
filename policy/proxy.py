"""The HAProxy PROXY protocol (v1 text and v2 binary) on listeners that enable
it (`listeners[].proxy_protocol`): behind a load balancer, the audit, the
connection limits and the flow matrix see the client's address, not the
balancer's.

`parse_proxy_header` is the pure grammar: bytes in, a `ProxyHeader` (or "need
more", or a `ProxyHeaderError` naming the problem) out. `ProxyProtocolFactory`
wraps a listener's factory: the wrapped protocol (SMTP or IMAP, with TLS for
implicit-TLS listeners) starts only once the header has arrived, so that its
greeting, its per-address limits and its first audit event already see the
client's address. A connection that does not come from `proxy_from`, sends
no valid header, or none within the deadline is closed without a word (the
protocol has not started: there is nobody to answer), logged and audited.

Twisted's own `twisted.protocols.haproxy` starts the wrapped protocol before
the header is read and drops a header that arrives in pieces; hence this one.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import address as tw_address
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

log = logging.getLogger(__name__)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # RFC-like limit of the spec: the longest v1 line, CRLF included
V2_MAX_PAYLOAD = 4096  # addresses and TLVs; HAProxy's own TLVs are far smaller
HEADER_TIMEOUT = 10.0  # seconds for the whole header

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header; the message says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the balancer says of the connection. `source` is None for a
    LOCAL (v2) or UNKNOWN (v1) header: the balancer's own connection, e.g. a
    health check; the real peer address then stands."""

    version: int  # 1 or 2
    length: int  # bytes of the header; what follows belongs to the protocol
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, None when more bytes are needed.
    Raises ProxyHeaderError."""
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header (the listener requires one)")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise ProxyHeaderError("no PROXY protocol header (the listener requires one)")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes")
        if b"\n" in data:
            raise ProxyHeaderError("PROXY v1 line not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    fields = line.split(" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1, length)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 line: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[1] == "TCP4" else 6
    src, dst = _v1_ip(fields[2], version), _v1_ip(fields[3], version)
    return ProxyHeader(1, length, (src, _v1_port(fields[4])), (dst, _v1_port(fields[5])))


def _v1_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 line: bad address {text[:45]!r}") from None
    if ip.version != version:
        raise ProxyHeaderError(f"PROXY v1 line: {text} is not an IPv{version} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1 line: bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 line: bad port {text}")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    head = data[:12]
    if head != V2_SIGNATURE[: len(head)]:
        raise ProxyHeaderError("no PROXY protocol header (the listener requires one)")
    if len(data) < 16:
        return None
    ver_cmd, fam, size = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header: version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 header: unknown command {command}")
    if size > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header: {size} bytes of addresses and TLVs "
                               f"(at most {V2_MAX_PAYLOAD})")
    if len(data) < 16 + size:
        return None
    length = 16 + size
    payload = data[16:length]
    family, transport = fam >> 4, fam & 0x0F
    if command == 0 or family == 0:  # LOCAL, or PROXY of an unspecified family
        return ProxyHeader(2, length)
    if transport != 1:
        raise ProxyHeaderError("PROXY v2 header: not a stream (TCP) connection")
    if family == 1:
        if size < 12:
            raise ProxyHeaderError("PROXY v2 header: IPv4 addresses cut short")
        src, dst = ipaddress.IPv4Address(payload[0:4]), ipaddress.IPv4Address(payload[4:8])
        sport, dport = struct.unpack("!HH", payload[8:12])
    elif family == 2:
        if size < 36:
            raise ProxyHeaderError("PROXY v2 header: IPv6 addresses cut short")
        src6, dst6 = ipaddress.IPv6Address(payload[0:16]), ipaddress.IPv6Address(payload[16:32])
        sport, dport = struct.unpack("!HH", payload[32:36])
        return ProxyHeader(2, length, (str(src6), sport), (str(dst6), dport))
    elif family == 3:  # AF_UNIX: no address to report
        return ProxyHeader(2, length)
    else:
        raise ProxyHeaderError(f"PROXY v2 header: unknown address family {family}")
    return ProxyHeader(2, length, (str(src), sport), (str(dst), dport))


def trusted(host: str, networks: Sequence[Network]) -> bool:
    """The balancer's own address is one the listener takes headers from."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def _address(host: str, port: int) -> Any:
    if ":" in host:
        return tw_address.IPv6Address("TCP", host, port)
    return tw_address.IPv4Address("TCP", host, port)


class ProxyProtocolWrapper(ProtocolWrapper):
    """Reads the header, then starts the wrapped protocol on this transport,
    whose getPeer()/getHost() are the client's and the balancer's front end."""

    # zope interfaces type poorly: the wrapped protocol, the transport and
    # the factory are what Twisted hands over.
    factory: Any
    transport: Any
    wrappedProtocol: Any

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._buffer = b""
        self._header: ProxyHeader | None = None
        self._deadline: Any = None
        self._closed = False  # refused: nothing more reaches any protocol

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, without starting the wrapped
        # protocol: that waits for the header.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = transport
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        host = getattr(peer, "host", "")
        if not trusted(host, self.factory.networks):
            self._refuse("proxy-untrusted", f"{host} is not in proxy_from")
            return
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._expired)

    def dataReceived(self, data: bytes) -> None:
        if self._header is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._closed:
            return
        self._buffer += data
        try:
            header = parse_proxy_header(self._buffer)
        except ProxyHeaderError as exc:
            self._refuse("proxy-header", str(exc))
            return
        if header is None:
            return
        self._header = header
        rest, self._buffer = self._buffer[header.length:], b""
        self._cancel_deadline()
        self.wrappedProtocol.makeConnection(self)
        if rest and self.connected:
            self.wrappedProtocol.dataReceived(rest)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_deadline()
        if self._header is not None:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
            return
        # The wrapped protocol never started: nothing of it to tell.
        self.factory.unregisterProtocol(self)

    def getPeer(self) -> Any:
        header = self._header
        if header is not None and header.source is not None:
            return _address(*header.source)
        return self.transport.getPeer()

    def getHost(self) -> Any:
        header = self._header
        if header is not None and header.destination is not None:
            return _address(*header.destination)
        return self.transport.getHost()

    def _expired(self) -> None:
        self._deadline = None
        self._refuse("proxy-timeout", f"no PROXY header within {self.factory.timeout:g} s")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _refuse(self, reason: str, detail: str) -> None:
        self._closed = True
        self._buffer = b""
        self._cancel_deadline()
        host = getattr(self.transport.getPeer(), "host", "?")
        log.warning("%s: connection from %s closed: %s", self.factory.listener, host, detail)
        try:
            self.factory.refused(host, reason, detail)
        except Exception:  # noqa: BLE001 - reporting never keeps a connection open
            log.exception("proxy: reporting a refused connection failed")
        self.transport.abortConnection()


class ProxyProtocolFactory(WrappingFactory):
    """Wraps one listener's factory (see the module docstring). `refused(host,
    reason, detail)` hears of every connection closed before its header was
    complete; it must not block."""

    protocol = ProxyProtocolWrapper

    def __init__(self, wrapped: Any, *, listener: str, networks: Sequence[Network],
                 clock: Any, refused: Callable[[str, str, str], None],
                 timeout: float = HEADER_TIMEOUT) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.listener = listener
        self.networks = tuple(networks)
        self.clock = clock
        self.refused = refused
        self.timeout = timeout

    def logPrefix(self) -> str:
        return f"{self.listener} (PROXY)"


__all__ = [
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyProtocolFactory",
    "parse_proxy_header",
    "trusted",
]
