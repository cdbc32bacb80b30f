"""The hospital's directory over LDAP (`ldap3`, blocking: never call it on
the reactor thread).

`Directory.connect()` opens a connection bound as the sync's identity
(simple bind, SASL EXTERNAL with a client certificate, or anonymous),
trying `ldap.urls` in order (failover) with TLS as configured (ldaps://, or
StartTLS on ldap://, certificates checked against `ldap.ca_file`).
`Directory.search()` pages through a search (RFC 2696) and yields entries.

`BindChecker` checks a password by binding as an account's entry, for the
`ldap` login method: at most `bind_pool_size` binds at once per process, on
connections kept open and reused (a bind on an open connection replaces its
identity), each operation bounded by `ldap.timeout`. A directory that cannot
be reached is `BindOutcome.UNAVAILABLE`, never a wrong password.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core import exceptions as ldap_exc

from conf.settings import LdapBind, LdapScope, LdapSearch, LdapSettings

log = logging.getLogger(__name__)


class DirectoryError(Exception):
    """The directory could not be used (unreachable, TLS refused, bind or
    search refused); the message says which server and why."""


@dataclass(frozen=True, slots=True)
class Entry:
    dn: str
    attributes: dict[str, list[str]]

    def first(self, name: str | None) -> str | None:
        """The first value of an attribute (case-insensitive name), stripped;
        None when absent or empty."""
        if not name:
            return None
        for key, values in self.attributes.items():
            if key.lower() == name.lower():
                for v in values:
                    text = str(v).strip()
                    if text:
                        return text
        return None

    def values(self, name: str) -> list[str]:
        for key, values in self.attributes.items():
            if key.lower() == name.lower():
                return [str(v) for v in values]
        return []


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class Directory:
    """Service connections of the sync (see the module docstring)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings

    def _tls(self, *, client_cert: bool) -> ldap3.Tls:
        s = self.settings
        kwargs: dict[str, Any] = {"validate": ssl.CERT_REQUIRED,
                                  "version": ssl.PROTOCOL_TLS_CLIENT}
        if s.ca_file is not None:
            kwargs["ca_certs_file"] = str(s.ca_file)
        if client_cert and s.client_cert_file is not None and s.client_key_file is not None:
            kwargs["local_certificate_file"] = str(s.client_cert_file)
            kwargs["local_private_key_file"] = str(s.client_key_file)
        return ldap3.Tls(**kwargs)

    def server(self, url: str, *, client_cert: bool = False) -> ldap3.Server:
        tls = self._tls(client_cert=client_cert)
        return ldap3.Server(url, use_ssl=url.lower().startswith("ldaps://"), tls=tls,
                            connect_timeout=self.settings.timeout, get_info=ldap3.NONE)

    def open(self, url: str, *, client_cert: bool, **identity: Any) -> ldap3.Connection:
        """An open (not yet bound) connection to `url`, TLS started when
        configured; `identity`: ldap3's user/password/authentication/sasl_*
        for its next `bind()`."""
        s = self.settings
        # ldap3 packs receive_timeout into SO_RCVTIMEO as an integer.
        conn = ldap3.Connection(self.server(url, client_cert=client_cert),
                                receive_timeout=max(1, math.ceil(s.timeout)),
                                raise_exceptions=False,
                                read_only=True, auto_referrals=False, **identity)
        conn.open()
        if s.start_tls and not url.lower().startswith("ldaps://") and not conn.start_tls():
            conn.unbind()
            raise DirectoryError(f"{url}: StartTLS refused: {conn.result.get('description')}")
        return conn

    def connect(self) -> ldap3.Connection:
        """A connection bound as the sync, to the first server that answers.
        Raises DirectoryError naming each server tried."""
        s = self.settings
        password = ""
        if s.bind is LdapBind.SIMPLE:
            assert s.bind_password_file is not None
            try:
                password = s.bind_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise DirectoryError(f"ldap.bind_password_file: cannot read "
                                     f"{s.bind_password_file}: {exc.strerror}") from None
        identity: dict[str, Any]
        if s.bind is LdapBind.SIMPLE:
            identity = {"user": s.bind_dn, "password": password}
        elif s.bind is LdapBind.SASL_EXTERNAL:
            # The empty credentials matter: without them ldap3 sends none and
            # slapd answers saslBindInProgress.
            identity = {"authentication": ldap3.SASL, "sasl_mechanism": ldap3.EXTERNAL,
                        "sasl_credentials": ""}
        else:
            identity = {"authentication": ldap3.ANONYMOUS}
        problems: list[str] = []
        for url in s.urls:
            try:
                conn = self.open(url, client_cert=s.bind is LdapBind.SASL_EXTERNAL, **identity)
                ok = conn.bind()
                if not ok:
                    result = conn.result or {}
                    conn.unbind()
                    # A refused bind is the same on every replica: stop here.
                    raise DirectoryError(f"{url}: bind refused ({s.bind.value}): "
                                         f"{result.get('description')} "
                                         f"{result.get('message') or ''}".rstrip())
                return conn
            except DirectoryError:
                raise
            except ldap_exc.LDAPBindError as exc:
                raise DirectoryError(f"{url}: bind refused ({s.bind.value}): {exc}") from None
            except (ldap_exc.LDAPException, OSError, ssl.SSLError) as exc:
                problems.append(f"{url}: {_describe(exc)}")
        raise DirectoryError("no directory server answered: " + "; ".join(problems))

    def search(self, conn: ldap3.Connection, where: LdapSearch,
               attributes: list[str]) -> Iterator[Entry]:
        """Every entry of the search, paged (`ldap.page_size`). Raises
        DirectoryError when the search fails or the connection drops."""
        scope = ldap3.SUBTREE if where.scope is LdapScope.SUBTREE else ldap3.LEVEL
        try:
            pages = conn.extend.standard.paged_search(
                where.base_dn, where.filter, search_scope=scope,
                attributes=sorted(set(attributes)) or [ldap3.NO_ATTRIBUTES],
                paged_size=self.settings.page_size, generator=True)
            for item in pages:
                if item.get("type") != "searchResEntry":
                    continue  # referrals, continuation references
                attrs = {str(k): [_text(v) for v in (vs if isinstance(vs, list) else [vs])]
                         for k, vs in (item.get("raw_attributes") or {}).items()}
                yield Entry(str(item["dn"]), attrs)
        except ldap_exc.LDAPException as exc:
            raise DirectoryError(f"search of {where.base_dn} failed: {_describe(exc)}") from None
        result = conn.result or {}
        if result.get("result") not in (None, 0):
            raise DirectoryError(f"search of {where.base_dn} {where.filter} failed: "
                                 f"{result.get('description')} {result.get('message') or ''}"
                                 .rstrip())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.replace("\n", " ")[:300]


class BindOutcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"  # wrong password, or no such entry
    UNAVAILABLE = "unavailable"  # no server could be asked


class BindChecker:
    """Password checks by directory bind (see the module docstring).
    Thread-safe; `check` blocks (call it from a thread of its own runner)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.directory = Directory(settings)
        self._slots = threading.BoundedSemaphore(settings.bind_pool_size)
        self._idle: queue.LifoQueue[ldap3.Connection] = queue.LifoQueue()

    def check(self, dn: str, password: str) -> BindOutcome:
        if not password or not dn:
            return BindOutcome.INVALID  # an empty password would be an anonymous bind
        if not self._slots.acquire(timeout=self.settings.timeout):
            log.warning("ldap: every bind connection busy for %.0f s", self.settings.timeout)
            return BindOutcome.UNAVAILABLE
        try:
            return self._check(dn, password)
        finally:
            self._slots.release()

    def _check(self, dn: str, password: str) -> BindOutcome:
        try:
            conn: ldap3.Connection | None = self._idle.get_nowait()
        except queue.Empty:
            conn = None
        if conn is not None:
            outcome = self._bind(conn, dn, password)
            if outcome is not None:
                return outcome
        # No idle connection, or it had dropped: a new one, server by server.
        problems: list[str] = []
        for url in self.settings.urls:
            try:
                conn = self.directory.open(url, client_cert=False)
            except (DirectoryError, ldap_exc.LDAPException, OSError, ssl.SSLError) as exc:
                problems.append(f"{url}: {_describe(exc)}")
                continue
            outcome = self._bind(conn, dn, password)
            if outcome is not None:
                return outcome
            problems.append(f"{url}: connection lost")
        log.warning("ldap: password check impossible: %s", "; ".join(problems))
        return BindOutcome.UNAVAILABLE

    def _bind(self, conn: ldap3.Connection, dn: str, password: str) -> BindOutcome | None:
        """The bind's answer, the connection kept for reuse; None (and the
        connection closed) when the server could not answer."""
        try:
            ok = conn.rebind(user=dn, password=password)
        except (ldap_exc.LDAPException, OSError, ssl.SSLError) as exc:
            # LDAPBindError included: ldap3 raises it when the server closed
            # the connection (a refused password is a False, not a raise).
            log.info("ldap: bind connection lost: %s", _describe(exc))
            _close(conn)
            return None
        code = (conn.result or {}).get("result")
        if not ok and code not in (49, 32, 34):
            # Not invalidCredentials / noSuchObject / invalidDNSyntax: the
            # server is busy or unwilling; that is no answer about the password.
            log.info("ldap: bind of %s answered %s", dn, (conn.result or {}).get("description"))
            _close(conn)
            return None
        self._idle.put(conn)
        return BindOutcome.OK if ok else BindOutcome.INVALID

    def close(self) -> None:
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return


def _close(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except (ldap_exc.LDAPException, OSError):
        pass
