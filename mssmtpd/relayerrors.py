"""Why a relay attempt failed, in words an operator can act on.

The queue keeps the text (`last_error`, shown by `mssctl queue list`), the
audit trail and the DSN carry it. Each text starts with an SMTP code and an
RFC 3463 status, as the relay and the DSN builder expect: 4.4.1 for a peer
that cannot be reached, 4.7.5 (cryptographic failure, RFC 7672 8.1) for TLS.
TLS problems are temporary: an operator can fix them (a CA to add, a CRL to
fetch, a certificate to renew) and the queue retries until its lifetime ends.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from certs.trust import Refusal, TrustStore, refusal_of, refusal_reason

# TLS alerts a server sends when it does not accept the client's certificate.
_CERT_ALERTS = ("bad certificate", "unknown ca", "certificate required", "certificate unknown",
                "certificate revoked", "certificate expired", "unsupported certificate",
                "access denied")


def connect_failure(host: str, port: int, failure: Failure) -> str:
    """A TCP connection that did not open."""
    where = f"{host}:{port}"
    exc = failure.value
    if isinstance(exc, net_error.ConnectionRefusedError):
        return f"451 4.4.1 connection refused by {where}"
    if isinstance(exc, net_error.TimeoutError | net_error.TCPTimedOutError | TimeoutError):
        return f"451 4.4.1 connection to {where} timed out"
    if isinstance(exc, net_error.NoRouteError):
        return f"451 4.4.1 no route to {where}"
    if isinstance(exc, net_error.DNSLookupError):
        return f"451 4.4.3 cannot resolve {host}"
    return f"451 4.4.1 cannot connect to {where} ({type(exc).__name__})"


def ssl_reasons(failure: Failure | None) -> list[str]:
    """OpenSSL's reason strings in a Twisted failure ("certificate verify
    failed", "tlsv13 alert certificate required" ...)."""
    if failure is None or not isinstance(failure.value, SSL.Error):
        return []
    reasons = []
    for item in failure.value.args[0] if failure.value.args else ():
        if isinstance(item, tuple) and len(item) == 3 and item[2]:
            reasons.append(str(item[2]))
    return reasons


def _alert(reason: str) -> str | None:
    # "sslv3 alert bad certificate", "tlsv13 alert certificate required"
    head, sep, name = reason.partition(" alert ")
    return name.strip() if sep and head.startswith(("ssl", "tls")) else None


def peer_certificate_problem(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                             trust: TrustStore, hostname: str) -> str | None:
    """Why our trust store refuses the peer's certificate (None: it does not).

    The verify callback decided during the handshake; this repeats its checks
    on the chain the peer sent, to say which one failed."""
    ctx = crypto.X509StoreContext(
        trust.x509_store(), crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in intermediates])
    try:
        ctx.verify_certificate()
    except crypto.X509StoreContextError as exc:
        errno, depth = int(exc.errors[0]), int(exc.errors[1])
        cert = exc.certificate.to_cryptography() if exc.certificate is not None else leaf
        which = "its certificate" if depth == 0 else f"its CA {cert.subject.rfc4514_string()}"
        reason = refusal_reason(errno)
        if reason == "unknown-ca":
            return f"unknown CA: issued by {leaf.issuer.rfc4514_string()}, not one of our CAs"
        if reason == "expired":
            return f"expired: {which} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        if reason == "not-yet-valid":
            return f"not yet valid: {which} starts on {cert.not_valid_before_utc:%Y-%m-%d} UTC"
        if reason == "revoked":
            return f"revoked: {which} (serial {cert.serial_number:X}) is on its CA's CRL"
        if reason == "crl-missing":
            return f"no CRL held for the CA {cert.issuer.rfc4514_string()}"
        return f"{exc.errors[2]} (depth {depth})"
    try:
        verify_certificate_ip_address(leaf, hostname) if _is_ip(hostname) else \
            verify_certificate_hostname(leaf, hostname)
    except (VerificationError, CertificateError):
        return f"name mismatch: the certificate ({leaf.subject.rfc4514_string()}) " \
               f"does not name {hostname}"
    return None


def describe_refusal(refusal: Refusal, hostname: str) -> str:
    """The verify callback's own refusal (`certs.trust.refusal_of`), in the
    words of `peer_certificate_problem`: what the handshake decided, with its
    overrides (an expired CRL tolerated, `tls.missing_crl: accept`)."""
    which = "its certificate" if refusal.depth == 0 else f"its CA {refusal.subject}"
    reason = refusal.reason
    if reason == "unknown-ca":
        issuer = refusal.issuer if refusal.depth == 0 else refusal.subject
        return f"unknown CA: issued by {issuer}, not one of our CAs"
    if reason == "expired" and refusal.not_after is not None:
        return f"expired: {which} expired on {refusal.not_after:%Y-%m-%d %H:%M} UTC"
    if reason == "not-yet-valid" and refusal.not_before is not None:
        return f"not yet valid: {which} starts on {refusal.not_before:%Y-%m-%d} UTC"
    if reason == "revoked":
        return f"revoked: {which} (serial {refusal.serial}) is on its CA's CRL"
    if reason == "crl-missing":
        return f"no CRL held for the CA {refusal.issuer}"
    if reason == "name-mismatch":
        return f"name mismatch: the certificate ({refusal.subject}) does not name {hostname}"
    return f"{refusal.error} (depth {refusal.depth})"


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def tls_failure(host: str, failure: Failure | None, conn: SSL.Connection | None,
                trust: TrustStore | None) -> str:
    """A STARTTLS handshake (or the first read after it) that failed."""
    reasons = ssl_reasons(failure)
    for reason in reasons:
        alert = _alert(reason)
        if alert is None:
            continue
        if alert in _CERT_ALERTS:
            return f"451 4.7.5 {host} refused our certificate (TLS alert: {alert})"
        return f"451 4.7.5 TLS alert from {host}: {alert}"
    if any("certificate verify failed" in r for r in reasons):
        refusal = refusal_of(conn)
        why = describe_refusal(refusal, host) if refusal is not None else None
        if why is None and conn is not None and trust is not None:
            # A connection without notes: check the chain again to say why.
            chain: list[Any] = list(conn.get_peer_cert_chain(as_cryptography=True) or [])
            if chain:
                why = peer_certificate_problem(chain[0], chain[1:], trust, host)
        return f"451 4.7.5 certificate of {host} not trusted: {why or 'verification failed'}"
    if reasons:
        return f"451 4.7.5 TLS handshake with {host} failed: {'; '.join(reasons)}"
    detail = failure.getErrorMessage() if failure is not None else "connection closed"
    return f"451 4.7.5 TLS handshake with {host} failed ({detail or 'connection closed'})"


def dn_mismatch(host: str, domain: str, dn: str) -> str:
    return (f"451 4.7.5 certificate DN of {host} ({dn}) is not one the whitelist lists "
            f"for {domain}")


# The peer's text kept in the queue, the audit and the DSN: a reply may have
# 200 lines of 64 KiB, and whatever control characters the peer chose.
MAX_PEER_TEXT = 512


def smtp_refusal(host: str, command: str, lines: list[str]) -> str:
    """The peer's reply to a command, code and text (printable, at most
    MAX_PEER_TEXT characters), and who said it."""
    text = " / ".join(line[4:].strip() for line in lines if len(line) > 4) or ""
    text = "".join(ch if ch.isprintable() else " " for ch in text[:MAX_PEER_TEXT * 2])
    if len(text) > MAX_PEER_TEXT:
        text = text[:MAX_PEER_TEXT] + "…"
    code = "".join(ch for ch in lines[-1][:3] if ch.isdigit())
    return f"{code} {text} (answer of {host} to {command})".replace("  ", " ")
