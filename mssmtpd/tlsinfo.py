"""What the TLS layer of a connection says: version, cipher, client certificate.

Prefers `certs.tls` (the project's one TLS module) and falls back to asking
the pyOpenSSL connection directly, so the SMTP daemon does not depend on the
exact shape of helpers that are not there yet.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.interfaces import ISSLTransport

log = logging.getLogger(__name__)


def is_tls(transport: Any) -> bool:
    return bool(ISSLTransport.providedBy(transport))


def _handle(transport: Any) -> Any:
    try:
        return transport.getHandle()
    except Exception:  # noqa: BLE001 - no TLS handle on this transport
        return None


def tls_info(transport: Any, tls: Any = None) -> tuple[str, str] | None:
    """(version, cipher) once the handshake is done, else None."""
    helper = getattr(tls, "tls_info", None)
    if helper is None:
        try:
            from certs import tls as certs_tls

            helper = getattr(certs_tls, "tls_info", None)
        except ImportError:
            helper = None
    if helper is not None:
        try:
            result = helper(transport)
            if result:
                return (str(result[0]), str(result[1]))
        except Exception:  # noqa: BLE001 - fall back to asking OpenSSL
            log.debug("certs.tls.tls_info failed", exc_info=True)
    conn = _handle(transport)
    if conn is None or not hasattr(conn, "get_cipher_name"):
        return None
    cipher = conn.get_cipher_name()
    version = conn.get_protocol_version_name()
    if not cipher:
        return None
    return (str(version), str(cipher))


def peer_certificate(transport: Any, tls: Any = None) -> Any:
    """The client certificate as a cryptography object (verified by the TLS
    layer against the trust anchors), or None."""
    helper = getattr(tls, "peer_certificate", None)
    if helper is None:
        try:
            from certs import tls as certs_tls

            helper = getattr(certs_tls, "peer_certificate", None)
        except ImportError:
            helper = None
    if helper is not None:
        try:
            return helper(transport)
        except Exception:  # noqa: BLE001
            log.debug("certs.tls.peer_certificate failed", exc_info=True)
    conn = _handle(transport)
    if conn is None or not hasattr(conn, "get_peer_certificate"):
        return None
    cert = conn.get_peer_certificate()
    if cert is None:
        return None
    return cert.to_cryptography()
