"""The relay client's side of RFC 5321 / 1870 / 6152 / 6531 / 3461, on StringTransport.

The peer's replies are scripted; what the client writes is asserted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mssmtpd.client import ClientJob, RelayFailure, SMTPClientProtocol
from storage.interface import DSNParams

EHLO = (b"250-peer.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        b"250-DSN\r\n250 STARTTLS\r\n")


class TLSStringTransport(StringTransport):
    def startTLS(self, context: Any, normal: bool = True) -> None:  # noqa: N802, FBT001
        self.tls = True


def start(job: ClientJob, ehlo2: bytes) -> tuple[SMTPClientProtocol, StringTransport, list[Any]]:
    proto = SMTPClientProtocol(job, object(), Clock(), 30.0)
    transport = TLSStringTransport()
    proto.makeConnection(transport)
    results: list[Any] = []
    proto.done.addBoth(results.append)
    proto.dataReceived(b"220 peer.example ESMTP\r\n")
    proto.dataReceived(EHLO)
    assert transport.value().endswith(b"STARTTLS\r\n")
    proto.dataReceived(b"220 2.0.0 go\r\n")
    transport.clear()
    proto.dataReceived(ehlo2)
    return proto, transport, results


def job(body: bytes, sender: str = "a@hopital.test",
        recipients: tuple[str, ...] = ("b@clinique.test",)) -> ClientJob:
    return ClientJob(sender=sender, recipients=recipients, body=body,
                     dsn=DSNParams(ret="HDRS", envid="e+1"), helo="mx.hopital.test")


def test_mail_declares_size_8bitmime_and_dsn() -> None:
    # RFC 1870 5 (SIZE=), RFC 6152 3 (8-bit content declared even past 64 KiB's
    # worth of ASCII), RFC 3461 4.3/4.4 (RET, ENVID as xtext).
    body = b"Subject: x\r\n\r\n" + b"a" * 70 + b"\r\n" + "é\r\n".encode()
    _, transport, _ = start(job(body), EHLO.replace(b"SIZE 1000", b"SIZE 0"))
    assert transport.value() == (
        f"MAIL FROM:<a@hopital.test> SIZE={len(body)} BODY=8BITMIME RET=HDRS ENVID=e+2B1\r\n"
    ).encode()


def test_eight_bit_after_the_first_64k_is_still_declared() -> None:
    body = b"Subject: x\r\n\r\n" + (b"a" * 998 + b"\r\n") * 70 + b"\xc3\xa9\r\n"
    _, transport, _ = start(job(body), EHLO.replace(b"SIZE 1000", b"SIZE 0"))
    assert b" BODY=8BITMIME" in transport.value()


def test_message_over_the_peers_size_is_not_sent() -> None:
    # RFC 1870 5: the client must not send a message larger than the peer's SIZE.
    _, transport, results = start(job(b"Subject: x\r\n\r\n" + b"y" * 2000 + b"\r\n"), EHLO)
    assert b"MAIL FROM" not in transport.value()
    (failure,) = results
    assert isinstance(failure.value, RelayFailure) and failure.value.permanent
    assert failure.value.text.startswith("552 5.3.4")


def test_utf8_envelope_needs_smtputf8_at_the_peer() -> None:
    # RFC 6531 3.2: never send a non-ASCII envelope to a peer without SMTPUTF8,
    # whether the sender or a recipient is non-ASCII.
    utf8 = job(b"Subject: x\r\n\r\nz\r\n", recipients=("zoé@clinique.test",))
    _, transport, results = start(utf8, EHLO)
    assert b"MAIL FROM" not in transport.value()
    (failure,) = results
    assert failure.value.permanent and failure.value.text.startswith("553 5.6.7")
    _, transport, results = start(utf8, EHLO.replace(b"250-DSN", b"250-DSN\r\n250-SMTPUTF8"))
    assert transport.value().startswith(b"MAIL FROM:<a@hopital.test>")
    assert transport.value().endswith(b" SMTPUTF8\r\n") and results == []
