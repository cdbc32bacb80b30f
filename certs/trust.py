"""Trust anchors and revocation lists.

`TrustStore` loads the CA certificates (``tls.ca_files``) and the CRLs
(``tls.crl_files``) and builds the pyOpenSSL `X509Store` the TLS contexts
verify against, with CRL checking on every certificate of the chain.

Revocation rules (REFERENCE.md): refuse revoked certificates; keep the last
valid CRL when a reload fails (unreadable, badly signed, or older than the one
held); an *expired* CRL is still used (its revoked serials stay refused) but is
reported in `problems()` and in the log, because refusing every card in the
trust space when a CRL download lags would stop clinical mail.

A trusted CA with *no* CRL at all (while CRL checking is on): every
certificate it issued is refused (``tls.missing_crl: refuse``, the default:
revocation cannot be checked) or accepted without a revocation check
(``accept``). Either way, the CA is named in a WARNING at start-up and at each
reload (`cas_without_crl`), and the first acceptance of each such CA after a
load is logged too.

On reload (`certs.tls.ServerTLS.reload`), `load_anchors` re-reads the CA
files (raising `TrustError`, the running anchors untouched, when one cannot be
read), then `reload_crls` the CRLs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from OpenSSL import SSL, crypto

log = logging.getLogger(__name__)

# OpenSSL verification error numbers used below (x509_vfy.h).
X509_V_OK = 0
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
X509_V_ERR_UNABLE_TO_GET_CRL = 3
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_CRL_NOT_YET_VALID = 11
X509_V_ERR_CRL_HAS_EXPIRED = 12
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_V_ERR_CERT_REVOKED = 23
X509_V_ERR_CERT_UNTRUSTED = 27

# "The chain does not lead to one of our anchors": the certificate comes from
# a CA we do not trust.
_UNKNOWN_ISSUER = frozenset({
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
    X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
    X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    X509_V_ERR_CERT_UNTRUSTED,
})
_REASONS = {
    X509_V_ERR_CERT_REVOKED: "revoked",
    X509_V_ERR_CERT_HAS_EXPIRED: "expired",
    X509_V_ERR_CERT_NOT_YET_VALID: "not-yet-valid",
    X509_V_ERR_UNABLE_TO_GET_CRL: "crl-missing",
    **{errno: "unknown-ca" for errno in _UNKNOWN_ISSUER},
}


def refusal_reason(errno: int) -> str:
    """The audit reason for an OpenSSL verification error: revoked, expired,
    not-yet-valid, unknown-ca, crl-missing, or verify-error (any other)."""
    return _REASONS.get(errno, "verify-error")


@dataclass(frozen=True)
class Refusal:
    """Why the verify callback refused a certificate, and which one (the
    card, not a CA of its chain, whenever the card was presented)."""

    reason: str  # refusal_reason(), or "name-mismatch" (outbound host name check)
    error: str  # OpenSSL's words
    depth: int  # where in the chain the problem is (0: the certificate itself)
    subject: str
    issuer: str
    serial: str  # hexadecimal, as CRLs and CA interfaces print it
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    @classmethod
    def of(cls, cert: x509.Certificate, reason: str, error: str, depth: int) -> Refusal:
        return cls(reason, error, depth, cert.subject.rfc4514_string(),
                   cert.issuer.rfc4514_string(), f"{cert.serial_number:X}",
                   cert.not_valid_before_utc, cert.not_valid_after_utc)


class VerifyNotes:
    """What the verify callback remembers during one handshake (a subclass
    may carry more), on a `NotedConnection`. Without it the callback still
    decides alike, only the refusal of an untrusted chain names the CA
    instead of the card."""

    def __init__(self) -> None:
        self.unknown_issuer: tuple[int, int] | None = None  # (errno, depth) held back
        # The first refusal of this handshake, as the callback decided it
        # (after its overrides: an expired CRL, `missing_crl: accept`): what a
        # failed handshake is explained with, never re-verified.
        self.refusal: Refusal | None = None


def note_refusal(conn: SSL.Connection, refusal: Refusal) -> None:
    """Keep the handshake's first refusal on a `NotedConnection`."""
    notes = getattr(conn, "verify_notes", None)
    if isinstance(notes, VerifyNotes) and notes.refusal is None:
        notes.refusal = refusal


def refusal_of(conn: SSL.Connection | None) -> Refusal | None:
    """The refusal the verify callback made on `conn`, if any."""
    notes = getattr(conn, "verify_notes", None)
    return notes.refusal if isinstance(notes, VerifyNotes) else None


class NotedConnection(SSL.Connection):
    """An SSL connection with its `VerifyNotes` (the app data slot belongs
    to Twisted, which puts its protocol there)."""

    def __init__(self, context: SSL.Context, notes: VerifyNotes) -> None:
        super().__init__(context, None)
        self.verify_notes = notes

Clock = Callable[[], dt.datetime]


class TrustError(Exception):
    """A CA file cannot be used (the trust store is not built)."""


class CertificateRejected(Exception):
    """`TrustStore.verify` refused a certificate; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_pem_certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    if b"-----BEGIN" not in data:
        return [x509.load_der_x509_certificate(data)]
    return x509.load_pem_x509_certificates(data)


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    """All CRLs of a file: one DER CRL, or any number of PEM blocks."""
    data = path.read_bytes()
    if b"-----BEGIN" not in data:
        return [x509.load_der_x509_crl(data)]
    marker = b"-----BEGIN X509 CRL-----"
    out = []
    for chunk in data.split(marker)[1:]:
        out.append(x509.load_pem_x509_crl(marker + chunk))
    if not out:
        raise ValueError("no X509 CRL block")
    return out


def _signed_by(obj: x509.Certificate | x509.CertificateRevocationList,
               issuer: x509.Certificate) -> bool:
    if isinstance(obj, x509.CertificateRevocationList):
        return obj.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    try:
        obj.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _crl_last(crl: x509.CertificateRevocationList) -> dt.datetime:
    return crl.last_update_utc


def _crl_next(crl: x509.CertificateRevocationList) -> dt.datetime | None:
    return crl.next_update_utc


@dataclass
class _HeldCRL:
    crl: x509.CertificateRevocationList
    source: Path


@dataclass
class TrustStatus:
    anchors: int
    crls: int
    problems: list[str] = field(default_factory=list)


class TrustStore:
    """CA anchors + CRLs, reloadable; thread-safe reads of the current state."""

    def __init__(
        self,
        ca_files: Sequence[Path],
        crl_files: Sequence[Path] = (),
        *,
        clock: Clock = lambda: dt.datetime.now(dt.UTC),
        accept_missing_crl: bool = False,
    ) -> None:
        self._ca_files = list(ca_files)
        self._crl_files = list(crl_files)
        self._clock = clock
        self.accept_missing_crl = accept_missing_crl
        self._lock = threading.Lock()
        self._anchors: list[x509.Certificate] = []
        # Issuer subject (DER) -> the CRL held for it.
        self._crls: dict[bytes, _HeldCRL] = {}
        self._load_problems: list[str] = []
        # CAs without a CRL whose certificates were accepted since the last
        # load (accept mode logs the first of each).
        self._accepted_without_crl: set[bytes] = set()
        self.load_anchors()
        self.reload_crls()
        self.warn_missing_crls()

    # ------------------------------------------------------------ loading

    @property
    def anchors(self) -> list[x509.Certificate]:
        return list(self._anchors)

    @property
    def crl_checking(self) -> bool:
        """CRLs are checked as soon as CRL files are configured."""
        return bool(self._crl_files)

    def load_anchors(self) -> None:
        anchors: list[x509.Certificate] = []
        for path in self._ca_files:
            try:
                anchors.extend(load_pem_certificates(path))
            except (OSError, ValueError) as exc:
                raise TrustError(f"{path}: cannot load CA certificates ({type(exc).__name__})") \
                    from exc
        with self._lock:
            self._anchors = anchors

    def _issuer_of(self, crl: x509.CertificateRevocationList) -> x509.Certificate | None:
        for ca in self._anchors:
            if ca.subject == crl.issuer and _signed_by(crl, ca):
                return ca
        return None

    def reload_crls(self) -> list[str]:
        """Re-read every CRL file. A CRL replaces the one held for its CA only
        if it parses, is signed by a known CA and is not older; otherwise the
        previous one is kept and the problem returned (and logged)."""
        problems: list[str] = []
        fresh: dict[bytes, _HeldCRL] = {}
        for path in self._crl_files:
            try:
                crls = load_crls(path)
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable CRL ({type(exc).__name__}); keeping the last valid one")
                continue
            for crl in crls:
                if self._issuer_of(crl) is None:
                    problems.append(f"{path}: CRL of {crl.issuer.rfc4514_string()} is not signed "
                                    "by a trusted CA; ignored")
                    continue
                key = crl.issuer.public_bytes()
                held = fresh.get(key) or self._crls.get(key)
                if held is not None and _crl_last(held.crl) > _crl_last(crl):
                    problems.append(f"{path}: CRL of {crl.issuer.rfc4514_string()} is older than "
                                    "the one held; keeping the newer")
                    fresh[key] = held
                    continue
                fresh[key] = _HeldCRL(crl, path)
        with self._lock:
            # CAs whose file failed this time keep their previous CRL.
            merged = dict(self._crls)
            merged.update(fresh)
            # A CA no longer trusted (tls.ca_files changed) takes its CRL along.
            self._crls = {k: h for k, h in merged.items() if self._issuer_of(h.crl) is not None}
            self._load_problems = problems
        for p in problems:
            log.warning("trust: %s", p)
        for p in self.expiry_problems():
            log.warning("trust: %s", p)
        return problems

    # ------------------------------------------------------------ state

    def cas_without_crl(self) -> list[x509.Certificate]:
        """The trusted CAs no CRL is held for, while CRL checking is on."""
        if not self.crl_checking:
            return []
        return [ca for ca in self.anchors if self._crl_for(ca) is None]

    def warn_missing_crls(self) -> list[str]:
        """One WARNING per CA without a CRL, saying what happens to the
        certificates it issued; returns the CAs' subjects."""
        subjects = [ca.subject.rfc4514_string() for ca in self.cas_without_crl()]
        for subject in subjects:
            if self.accept_missing_crl:
                log.warning("trust: no CRL for CA %s: the certificates it issued are ACCEPTED "
                            "without a revocation check (tls.missing_crl: accept)", subject)
            else:
                log.warning("trust: no CRL for CA %s: every certificate it issued is refused "
                            "(tls.missing_crl: refuse); add its CRL to tls.crl_files", subject)
        with self._lock:
            self._accepted_without_crl = set()
        return subjects

    def _accepting_without_crl(self, cert: crypto.X509) -> None:
        issuer = cert.to_cryptography().issuer
        key = issuer.public_bytes()
        with self._lock:
            first = key not in self._accepted_without_crl
            self._accepted_without_crl.add(key)
        if first:
            log.warning("trust: accepting certificates of CA %s without a revocation check: "
                        "no CRL held (tls.missing_crl: accept); first: %s",
                        issuer.rfc4514_string(), cert.to_cryptography().subject.rfc4514_string())

    def crls(self) -> list[x509.CertificateRevocationList]:
        with self._lock:
            return [h.crl for h in self._crls.values()]

    def expiry_problems(self) -> list[str]:
        now = self._clock()
        out = []
        for crl in self.crls():
            nxt = _crl_next(crl)
            if nxt is not None and nxt < now:
                out.append(f"CRL of {crl.issuer.rfc4514_string()} expired at {nxt.isoformat()}")
        return out

    def problems(self) -> list[str]:
        with self._lock:
            load = list(self._load_problems)
        return load + self.expiry_problems()

    def status(self) -> TrustStatus:
        return TrustStatus(len(self._anchors), len(self._crls), self.problems())

    # ------------------------------------------------------------ OpenSSL

    def x509_store(self) -> crypto.X509Store:
        """A new pyOpenSSL store: anchors, CRLs, and CRL checking on the whole
        chain when CRL files are configured."""
        store = crypto.X509Store()
        for ca in self._anchors:
            store.add_cert(crypto.X509.from_cryptography(ca))
        if self.crl_checking:
            for crl in self.crls():
                store.add_crl(crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
        return store

    def install(self, ctx: SSL.Context) -> None:
        """Put this trust into a context's own store (contexts cannot swap
        stores, so reloads build new contexts)."""
        store = ctx.get_cert_store()
        assert store is not None
        for ca in self._anchors:
            store.add_cert(crypto.X509.from_cryptography(ca))
        if self.crl_checking:
            for crl in self.crls():
                store.add_crl(crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)

    def verify_callback(
        self,
        extra: Callable[[crypto.X509, int], bool] | None = None,
        refused: Callable[[SSL.Connection, Refusal], None] | None = None,
    ) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
        """The callback for `SSL.Context.set_verify`: OpenSSL's verdict, except
        that an expired CRL is reported, not fatal (its revoked serials are
        still refused). `extra(cert, depth)` adds a check (e.g. host name).
        `refused(conn, refusal)` hears of every refusal (else it is logged
        here); it runs inside the handshake, so it must not block, and
        whatever it raises is logged, never changes the verdict.

        A chain that does not lead to our anchors is first reported at the
        depth of its topmost certificate (a foreign CA). On a
        `NotedConnection`, that error is held back and the refusal made at
        depth 0 (OpenSSL signals each depth down to 0 before it accepts a
        chain, whatever was overridden above), so that the refusal names
        the card itself."""

        def refuse(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int) -> bool:
            refusal = Refusal.of(cert.to_cryptography(), refusal_reason(errno),
                                 _verify_error_text(errno), depth)
            note_refusal(conn, refusal)
            if refused is None:
                log.warning("trust: refused certificate at depth %d (%s): %s", depth,
                            refusal.subject, refusal.error)
                return False
            try:
                refused(conn, refusal)
            except Exception:  # noqa: BLE001 - reporting never decides
                log.exception("trust: reporting a refused certificate failed")
            return False

        def callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
                     ok: int) -> bool:
            if not ok and errno == X509_V_ERR_CRL_HAS_EXPIRED:
                log.warning("trust: using an expired CRL for %s",
                            cert.to_cryptography().issuer.rfc4514_string())
                ok = 1
            if not ok and errno == X509_V_ERR_UNABLE_TO_GET_CRL and self.accept_missing_crl:
                self._accepting_without_crl(cert)
                ok = 1
            notes = conn.verify_notes if isinstance(conn, NotedConnection) else None
            if not ok:
                if depth > 0 and errno in _UNKNOWN_ISSUER and notes is not None:
                    if notes.unknown_issuer is None:
                        notes.unknown_issuer = (errno, depth)
                    return True  # refused at depth 0, naming the card
                if depth == 0 and notes is not None and notes.unknown_issuer is not None:
                    errno = notes.unknown_issuer[0]  # the cause, not its consequence
                return refuse(conn, cert, errno, depth)
            if depth == 0 and notes is not None and notes.unknown_issuer is not None:
                return refuse(conn, cert, notes.unknown_issuer[0], 0)
            if extra is not None:
                return extra(cert, depth)
            return True

        return callback

    # ------------------------------------------------------------ outside TLS

    def verify(
        self,
        cert: x509.Certificate,
        intermediates: Iterable[x509.Certificate] = (),
    ) -> list[x509.Certificate]:
        """Verify a certificate outside a handshake (e.g. `mssctl cert check`):
        chain to an anchor, then revocation of every certificate of the chain
        with the CRLs held. Returns the chain (leaf first). Raises
        CertificateRejected."""
        store = crypto.X509Store()
        for ca in self._anchors:
            store.add_cert(crypto.X509.from_cryptography(ca))
        ctx = crypto.X509StoreContext(
            store,
            crypto.X509.from_cryptography(cert),
            [crypto.X509.from_cryptography(c) for c in intermediates],
        )
        try:
            chain = [c.to_cryptography() for c in ctx.get_verified_chain()]
        except crypto.X509StoreContextError as exc:
            raise CertificateRejected(f"untrusted: {exc.errors[2] if len(exc.errors) > 2 else exc}") \
                from exc
        if self.crl_checking:
            for child, issuer in zip(chain, chain[1:], strict=False):
                crl = self._crl_for(issuer)
                if crl is None:
                    if self.accept_missing_crl:
                        continue
                    raise CertificateRejected(f"no CRL for {issuer.subject.rfc4514_string()}")
                if crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
                    raise CertificateRejected("revoked")
        return chain

    def is_revoked(self, cert: x509.Certificate) -> bool:
        """True when a held CRL of the certificate's issuer lists it."""
        with self._lock:
            held = self._crls.get(cert.issuer.public_bytes())
        return bool(held and held.crl.get_revoked_certificate_by_serial_number(
            cert.serial_number) is not None)

    def _crl_for(self, issuer: x509.Certificate) -> x509.CertificateRevocationList | None:
        with self._lock:
            held = self._crls.get(issuer.subject.public_bytes())
        if held is None or not _signed_by(held.crl, issuer):
            return None
        return held.crl


def _verify_error_text(errno: int) -> str:
    try:
        from OpenSSL._util import ffi, lib

        return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode())
    except Exception:  # only a log message
        return f"error {errno}"


__all__ = [
    "CertificateRejected",
    "NotedConnection",
    "Refusal",
    "TrustError",
    "TrustStatus",
    "TrustStore",
    "VerifyNotes",
    "load_crls",
    "load_pem_certificates",
    "refusal_reason",
]
