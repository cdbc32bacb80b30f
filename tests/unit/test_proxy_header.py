"""policy.proxy.parse_proxy_header: the PROXY protocol's v1 line and v2
binary header, whole, byte by byte, and every kind of bad input."""

from __future__ import annotations

import ipaddress

import pytest
from proxy_support import v2, v4_payload, v6_payload

from policy.proxy import (
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
    trusted,
)

GOOD: list[tuple[bytes, ProxyHeader]] = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\r\n",
     ProxyHeader(1, 45, ("192.0.2.7", 56324), ("198.51.100.1", 993))),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n",
     ProxyHeader(1, 45, ("2001:db8::7", 40000), ("2001:db8::1", 25))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15)),
    (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", ProxyHeader(1, 39)),
    (v2(payload=v4_payload("192.0.2.7", "198.51.100.1", 56324, 587)),
     ProxyHeader(2, 28, ("192.0.2.7", 56324), ("198.51.100.1", 587))),
    (v2(family=2, payload=v6_payload("2001:db8::7", "2001:db8::1", 1, 143)),
     ProxyHeader(2, 52, ("2001:db8::7", 1), ("2001:db8::1", 143))),
    # TLVs (ALPN, authority ...) after the addresses are skipped
    (v2(payload=v4_payload("10.0.0.1", "10.0.0.2", 3, 4), tlvs=b"\x01\x00\x02h2"),
     ProxyHeader(2, 33, ("10.0.0.1", 3), ("10.0.0.2", 4))),
    # LOCAL (a health check of the balancer itself): no client address
    (v2(command=0, family=0, transport=0), ProxyHeader(2, 16)),
    (v2(command=0, payload=v4_payload("10.0.0.1", "10.0.0.2", 3, 4)), ProxyHeader(2, 28)),
    (v2(family=0, transport=0), ProxyHeader(2, 16)),  # PROXY of an unspecified family
    (v2(family=3, payload=b"\x00" * 216), ProxyHeader(2, 232)),  # AF_UNIX
]


@pytest.mark.parametrize(("data", "header"), GOOD)
def test_good_headers(data: bytes, header: ProxyHeader) -> None:
    assert parse_proxy_header(data) == header
    # what follows belongs to the protocol
    assert parse_proxy_header(data + b"EHLO x\r\n") == header


@pytest.mark.parametrize(("data", "header"), GOOD)
def test_byte_by_byte_needs_more_until_the_last(data: bytes, header: ProxyHeader) -> None:
    for n in range(len(data)):
        assert parse_proxy_header(data[:n]) is None, n
    assert parse_proxy_header(data) == header


BAD: list[tuple[bytes, str]] = [
    (b"EHLO client\r\n", "no PROXY protocol header"),
    (b"PROXI TCP4", "no PROXY protocol header"),
    (b"\r\n\r\n\x00\r\nQUITX", "no PROXY protocol header"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n", "expected 'PROXY TCP4|TCP6"),
    (b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n", "expected 'PROXY TCP4|TCP6"),
    (b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP4 192.0.2.999 198.51.100.1 1 2\r\n", "bad address"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n", "bad port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 012 2\r\n", "bad port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n", "bad port"),
    (b"PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n", "expected 'PROXY TCP4|TCP6"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n", "not ended by CRLF"),
    (b"PROXY " + b"A" * 120, "longer than 107 bytes"),
    (b"PROXY TCP4 \xff\r\n", "not ASCII"),
    (v2()[:12] + bytes([0x10, 0x11, 0, 0]), "version 1, expected 2"),
    (v2()[:12] + bytes([0x22, 0x11, 0, 0]), "unknown command 2"),
    (v2(payload=b"\x00" * 5000)[:16], "at most 4096"),
    (v2(payload=b"\x00" * 8), "IPv4 addresses cut short"),
    (v2(family=2, payload=b"\x00" * 20), "IPv6 addresses cut short"),
    (v2(transport=2, payload=v4_payload("10.0.0.1", "10.0.0.2", 3, 4)), "not a stream"),
    (v2(family=5, payload=b"\x00" * 12), "unknown address family 5"),
]


@pytest.mark.parametrize(("data", "why"), BAD)
def test_bad_headers_name_the_problem(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=None) as err:
        parse_proxy_header(data)
    assert why in str(err.value)


def test_trusted_networks() -> None:
    nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert trusted("127.0.0.1", nets) and trusted("127.9.9.9", nets)
    assert trusted("::ffff:127.0.0.1", nets)  # IPv4-mapped
    assert trusted("2001:db8::5", nets)
    assert not trusted("10.0.0.1", nets) and not trusted("::1", nets)
    assert not trusted("not-an-ip", nets) and not trusted("", nets)
