"""OpenSSL contexts for the listeners and for relaying (pyOpenSSL + Twisted).

`ServerTLS(settings.tls)` builds, per client-certificate mode, one server
context: TLS 1.2 minimum (1.3 allowed), the four trust-space suites for 1.2,
our certificate chain, and — when the listener asks for client certificates —
verification against ``ca_files`` with CRLs on the whole chain
(`certs.trust.TrustStore`). `reload()` (SIGHUP) re-reads the CA files, the
CRLs (keeping the last valid ones) and the certificates/keys (keeping the
running ones when a file is broken), and new connections use new contexts.

The objects returned by `server_context_factory` and `client_creator` are what
Twisted wants: `transport.startTLS(...)`, `TLSMemoryBIOFactory(...)`,
`endpoints.wrapClientTLS(...)`.

Every certificate refused in a handshake (ours as a server: a client's card,
a peer MTA's certificate; ours as a relay client: the remote MTA's) is
logged at WARNING and handed, as a `CertificateRefusal` naming the
listener, the peer and the direction, to `ServerTLS.on_refusal` (the audit
trail). That runs inside the handshake, on the reactor thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from certs.trust import (
    NotedConnection,
    Refusal,
    TrustError,
    TrustStore,
    VerifyNotes,
    note_refusal,
)
from conf.settings import (
    ClientCertMode,
    ListenerRole,
    ListenerSettings,
    MissingCRL,
    TLSSettings,
)

log = logging.getLogger(__name__)

_MIN_VERSION = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}
_OPTIONS = (
    SSL.OP_NO_COMPRESSION  # CRIME
    | SSL.OP_CIPHER_SERVER_PREFERENCE  # our order: GCM before CBC
    | SSL.OP_NO_RENEGOTIATION
)
_VERIFY_DEPTH = 6


class TLSConfigError(Exception):
    """Certificate, key or cipher settings that OpenSSL refuses."""


def _base_context(method: int, settings: TLSSettings) -> SSL.Context:
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(_MIN_VERSION[settings.min_version])
    ctx.set_options(_OPTIONS)
    try:
        ctx.set_cipher_list(settings.ciphers.encode("ascii"))
    except SSL.Error as exc:
        raise TLSConfigError(f"no usable cipher in tls.ciphers {settings.ciphers!r}") from exc
    return ctx


@dataclass(frozen=True)
class _KeyPair:
    """A certificate chain and its key, parsed once and kept in memory so a
    broken file on reload leaves the running identity in place."""

    chain: tuple[x509.Certificate, ...]
    key: Any  # cryptography private key

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> _KeyPair:
        try:
            chain = tuple(x509.load_pem_x509_certificates(cert_file.read_bytes()))
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TLSConfigError(
                f"cannot load certificate {cert_file} / key {key_file} ({type(exc).__name__})"
            ) from exc
        pair = cls(chain, key)
        pair.install(SSL.Context(SSL.TLS_METHOD))  # checks that key and cert match
        return pair

    def install(self, ctx: SSL.Context) -> None:
        try:
            ctx.use_certificate(self.chain[0])
            for extra in self.chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(self.key)
            ctx.check_privatekey()
        except (SSL.Error, TypeError, IndexError) as exc:
            raise TLSConfigError("certificate and key do not match") from exc


# Directions of a TLS connection, as audit events name them.
INBOUND_CLIENT = "inbound-client"  # a mail client or an application (submission, IMAP)
INBOUND_MTA = "inbound-mta"  # another operator's MTA on an mx listener
OUTBOUND_RELAY = "outbound-relay"  # our relay connecting to another operator's MTA


@dataclass(frozen=True)
class CertificateRefusal:
    """A certificate refused during a handshake, with where it happened."""

    refusal: Refusal
    direction: str  # INBOUND_CLIENT | INBOUND_MTA | OUTBOUND_RELAY
    listener: str | None  # our listener (inbound)
    peer: str | None  # the other end's address
    peer_port: int | None
    server_name: str | None  # the host we relay to (outbound)


class _ConnectionNotes(VerifyNotes):
    """Where each of our SSL connections is, for the refusal report (the
    peer address is read when needed: the transport is connected only after
    the SSL object is made)."""

    def __init__(self, direction: str, listener: str | None, tls_protocol: Any,
                 server_name: str | None = None) -> None:
        super().__init__()
        self.direction = direction
        self.listener = listener
        self.tls_protocol = tls_protocol
        self.server_name = server_name

    def peer(self) -> tuple[str | None, int | None]:
        try:
            addr = self.tls_protocol.transport.getPeer()
        except Exception:  # noqa: BLE001 - a report without the address still counts
            return None, None
        return getattr(addr, "host", None), getattr(addr, "port", None)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ServerContextFactory:
    """One listener's TLS: asks the owning `ServerTLS` for the current context
    at each connection, so reloads apply without restarting listeners."""

    def __init__(self, owner: ServerTLS, mode: ClientCertMode, session_id: bytes,
                 listener: str | None = None, direction: str = INBOUND_CLIENT) -> None:
        self._owner = owner
        self.mode = mode
        self._session_id = session_id
        self.listener = listener
        self.direction = direction

    def getContext(self) -> SSL.Context:
        return self._owner._server_context(self.mode, self._session_id)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return NotedConnection(
            self.getContext(), _ConnectionNotes(self.direction, self.listener, tlsProtocol))


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """Outbound TLS to a peer MTA: verify its chain (ca_files + CRLs) and that
    its certificate names `hostname`; present our own certificate."""

    def __init__(self, context: SSL.Context, trust: TrustStore, hostname: str,
                 verify_hostname: bool = True,
                 refused: Callable[[SSL.Connection, Refusal], None] | None = None) -> None:
        self._ctx = context
        self._trust = trust
        self.hostname = hostname
        self._verify_hostname = verify_hostname
        self._refused = refused
        try:
            self._ip: str | None = str(ipaddress.ip_address(hostname))
        except ValueError:
            self._ip = None

    def _check_name(self, conn: SSL.Connection, cert: crypto.X509, depth: int) -> bool:
        if depth != 0 or not self._verify_hostname:
            return True
        leaf = cert.to_cryptography()
        try:
            if self._ip is not None:
                verify_certificate_ip_address(leaf, self._ip)
            else:
                verify_certificate_hostname(leaf, self.hostname)
        except (VerificationError, CertificateError):
            refusal = Refusal.of(leaf, "name-mismatch",
                                 f"the certificate does not name {self.hostname}", 0)
            note_refusal(conn, refusal)
            if self._refused is None:
                log.warning("tls: peer certificate does not name %s", self.hostname)
            else:
                try:
                    self._refused(conn, refusal)
                except Exception:  # noqa: BLE001 - reporting never decides
                    log.exception("tls: reporting a refused certificate failed")
            return False
        return True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = NotedConnection(
            self._ctx, _ConnectionNotes(OUTBOUND_RELAY, None, tlsProtocol, self.hostname))
        if self._ip is None:
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        conn.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            self._trust.verify_callback(lambda cert, depth: self._check_name(conn, cert, depth),
                                        self._refused),
        )
        return conn


class ServerTLS:
    """TLS for every listener and for the relay, from `conf.settings.TLSSettings`."""

    def __init__(self, settings: TLSSettings, *, trust: TrustStore | None = None) -> None:
        self.settings = settings
        self.trust = trust or TrustStore(
            settings.ca_files, settings.crl_files,
            accept_missing_crl=settings.missing_crl is MissingCRL.ACCEPT)
        # Hears of every refused certificate (see the module docstring); set
        # by whoever keeps the audit trail. Must not block.
        self.on_refusal: Callable[[CertificateRefusal], None] | None = None
        self._lock = threading.Lock()
        self._server_contexts: dict[tuple[ClientCertMode, bytes], SSL.Context] = {}
        self._client_context: SSL.Context | None = None
        # What the last `reload` re-read and kept (empty before the first).
        self.reloaded: dict[str, Any] = {}
        # Fail at start-up, not at the first connection, on a bad cert/key.
        self._server_pair = _KeyPair.load(settings.cert_file, settings.key_file)
        self._client_pair = self._load_client_pair()
        self._server_context(ClientCertMode.NONE, b"mss-check")

    def _load_client_pair(self) -> _KeyPair:
        s = self.settings
        if s.client_cert_file is None:
            return self._server_pair
        return _KeyPair.load(s.client_cert_file, s.client_key_file or s.key_file)

    # ------------------------------------------------------------ server

    def server_context_factory(self, listener: ListenerSettings) -> ServerContextFactory:
        # Sessions must not resume across listeners with different client-cert
        # rules: the session id context is per listener and mode.
        sid = hashlib.sha256(
            f"mss:{listener.name}:{listener.port}:{listener.client_cert.value}".encode()
        ).digest()[:32]
        direction = INBOUND_MTA if listener.role is ListenerRole.MX else INBOUND_CLIENT
        return ServerContextFactory(self, listener.client_cert, sid, listener.name, direction)

    def _refused(self, conn: SSL.Connection, refusal: Refusal) -> None:
        """Every refusal of every connection: logged, then `on_refusal`."""
        notes = conn.verify_notes if isinstance(conn, NotedConnection) else None
        if isinstance(notes, _ConnectionNotes):
            peer, port = notes.peer()
            event = CertificateRefusal(refusal, notes.direction, notes.listener, peer, port,
                                       notes.server_name)
        else:
            event = CertificateRefusal(refusal, INBOUND_CLIENT, None, None, None, None)
        log.warning(
            "tls: refused %s certificate (%s) from %s%s: %s; subject %s, issuer %s, serial %s",
            event.direction, refusal.reason, event.peer or "?",
            f" on {event.listener}" if event.listener else
            f" ({event.server_name})" if event.server_name else "",
            refusal.error, refusal.subject, refusal.issuer, refusal.serial,
        )
        if refusal.reason == "crl-missing":
            log.warning("tls: no CRL is held for %s (tls.missing_crl: refuse): add its CRL to "
                        "tls.crl_files", refusal.issuer)
        hook = self.on_refusal
        if hook is not None:
            hook(event)

    def _server_context(self, mode: ClientCertMode, session_id: bytes) -> SSL.Context:
        key = (mode, session_id)
        with self._lock:
            ctx = self._server_contexts.get(key)
            if ctx is None:
                ctx = self._build_server_context(mode, session_id)
                self._server_contexts[key] = ctx
            return ctx

    def _build_server_context(self, mode: ClientCertMode, session_id: bytes) -> SSL.Context:
        s = self.settings
        ctx = _base_context(SSL.TLS_SERVER_METHOD, s)
        self._server_pair.install(ctx)
        ctx.set_session_id(session_id)
        if mode is ClientCertMode.NONE:
            ctx.set_verify(SSL.VERIFY_NONE)
            return ctx
        self.trust.install(ctx)
        # Tell clients (Thunderbird's certificate picker) which CAs we accept.
        for ca in self.trust.anchors:
            ctx.add_client_ca(ca)
        flags = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        if mode is ClientCertMode.REQUIRED:
            flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_verify(flags, self.trust.verify_callback(refused=self._refused))
        ctx.set_verify_depth(_VERIFY_DEPTH)
        return ctx

    # ------------------------------------------------------------ client

    def client_creator(self, hostname: str, *, verify_hostname: bool = True) -> ClientCreator:
        with self._lock:
            if self._client_context is None:
                self._client_context = self._build_client_context()
            ctx = self._client_context
        return ClientCreator(ctx, self.trust, hostname, verify_hostname, self._refused)

    def _build_client_context(self) -> SSL.Context:
        s = self.settings
        ctx = _base_context(SSL.TLS_CLIENT_METHOD, s)
        self._client_pair.install(ctx)
        self.trust.install(ctx)
        ctx.set_verify_depth(_VERIFY_DEPTH)
        return ctx

    # ------------------------------------------------------------ reload

    def reload(self) -> list[str]:
        """SIGHUP: re-read the CA files (``tls.ca_files``), the CRLs (keeping
        the last valid ones), the server certificate and key and the relay's
        (keeping the running ones if a file is broken or the key does not
        match); returns the problems found (logged). New connections use new
        contexts; open ones keep theirs. `reloaded` then says what was
        re-read and what is in use, for the reload audit event."""
        problems: list[str] = []
        reloaded: dict[str, Any] = {}
        try:
            self.trust.load_anchors()
            reloaded["ca_files"] = "reloaded"
        except TrustError as exc:
            problems.append(f"{exc}; keeping the running CA certificates")
            log.warning("tls: %s", problems[-1])
            reloaded["ca_files"] = "kept"
        crl_problems = self.trust.reload_crls()
        problems += crl_problems
        reloaded["crl_files"] = "partial" if crl_problems else "reloaded"
        reloaded["cas_without_crl"] = self.trust.warn_missing_crls()
        try:
            server_pair = _KeyPair.load(self.settings.cert_file, self.settings.key_file)
            client_pair = (server_pair if self.settings.client_cert_file is None
                           else self._load_client_pair())
            self._server_pair = server_pair
            self._client_pair = client_pair
            reloaded["certificate"] = "reloaded"
        except TLSConfigError as exc:
            problems.append(f"{exc}; keeping the running certificate")
            log.warning("tls: %s", problems[-1])
            reloaded["certificate"] = "kept"
        leaf = self._server_pair.chain[0]
        reloaded["certificate_subject"] = leaf.subject.rfc4514_string()
        reloaded["certificate_serial"] = f"{leaf.serial_number:X}"
        reloaded["certificate_not_after"] = leaf.not_valid_after_utc.isoformat()
        with self._lock:
            self._server_contexts.clear()
            self._client_context = None
        self.reloaded = reloaded
        return problems + self.trust.expiry_problems()

    # ------------------------------------------------------------ per connection

    @staticmethod
    def peer_certificate(transport: Any) -> x509.Certificate | None:
        return peer_certificate(transport)

    @staticmethod
    def tls_info(transport: Any) -> tuple[str, str] | None:
        return tls_info(transport)


def tls_connection(transport: Any) -> SSL.Connection | None:
    """The OpenSSL connection behind a Twisted transport: implicit TLS
    (TLSMemoryBIOProtocol as transport), after `startTLS` (tcp transport whose
    getHandle was replaced), or through protocol wrappers."""
    t = transport
    for _ in range(6):
        if t is None:
            return None
        if isinstance(t, TLSMemoryBIOProtocol):
            handle = t.getHandle()  # type: ignore[no-untyped-call]
            return handle if isinstance(handle, SSL.Connection) else None
        get_handle = getattr(t, "getHandle", None)
        if get_handle is not None:
            try:
                handle = get_handle()
            except Exception:  # a closed transport: no TLS to report
                return None
            if isinstance(handle, SSL.Connection):
                return handle
        proto = getattr(t, "protocol", None)
        if isinstance(proto, TLSMemoryBIOProtocol):
            handle = proto.getHandle()  # type: ignore[no-untyped-call]
            return handle if isinstance(handle, SSL.Connection) else None
        t = getattr(t, "transport", None)
    return None


def peer_certificate(transport: Any) -> x509.Certificate | None:
    """The client's (or server's) verified certificate, None without TLS or
    without a certificate."""
    conn = tls_connection(transport)
    if conn is None:
        return None
    cert = conn.get_peer_certificate(as_cryptography=True)
    return cert


def tls_info(transport: Any) -> tuple[str, str] | None:
    """("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384") once the handshake is done."""
    conn = tls_connection(transport)
    if conn is None:
        return None
    cipher = conn.get_cipher_name()
    version = conn.get_protocol_version_name()
    if not cipher or not version or version == "Unknown":
        return None
    return version, cipher


__all__ = [
    "INBOUND_CLIENT",
    "INBOUND_MTA",
    "OUTBOUND_RELAY",
    "CertificateRefusal",
    "ClientCreator",
    "ServerContextFactory",
    "ServerTLS",
    "TLSConfigError",
    "peer_certificate",
    "tls_connection",
    "tls_info",
]
