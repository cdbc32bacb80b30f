"""PROXY protocol v2 headers for tests (the v1 line is written out by hand)."""

from __future__ import annotations

import ipaddress
import struct

from policy.proxy import V2_SIGNATURE


def v2(command: int = 1, family: int = 1, transport: int = 1, payload: bytes = b"",
       tlvs: bytes = b"") -> bytes:
    """A v2 header: command 1 PROXY / 0 LOCAL; family 1 INET, 2 INET6, 3 UNIX;
    transport 1 STREAM."""
    body = payload + tlvs
    return (V2_SIGNATURE + bytes([0x20 | command, (family << 4) | transport])
            + struct.pack("!H", len(body)) + body)


def v4_payload(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))


def v6_payload(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))
