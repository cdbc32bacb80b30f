"""`mssctl doctor`: checks a settings file and the running system.

Each check prints one line, ``OK``, ``WARN`` or ``FAIL``, its name and a
one-line reason; the exit status is the worst: 0 (all OK), 1 (a warning),
2 (a failure). It reads files and the database and connects to the
listeners; it changes nothing (no audit event).
"""

from __future__ import annotations

import argparse
import enum
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conf.settings import ListenerRole, ListenerSettings, MissingCRL, Settings, TLSMode
from mssctl.common import ConfigProblems, add_config_option, config_path, load


class Level(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    reason: str


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check the settings, certificates, CRLs, database and listeners",
        description="Check a settings file and the running system; one line per check "
                    "(OK, WARN, FAIL). Exit status: 0 all OK, 1 a warning, 2 a failure.")
    add_config_option(p)
    p.add_argument("--cert-warn-days", type=int, default=30, metavar="N",
                   help="warn when a certificate expires within N days (default 30)")
    p.add_argument("--crl-warn-hours", type=float, default=24.0, metavar="H",
                   help="warn when a CRL's next update is due within H hours (default 24)")
    p.add_argument("--whitelist-warn-days", type=float, default=7.0, metavar="N",
                   help="warn when the whitelist was generated over N days ago (default 7)")
    p.add_argument("--queue-warn-age", type=float, default=3600.0, metavar="SECONDS",
                   help="warn when the oldest queued message is older (default 3600)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per listener: connect and read the greeting (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args)
    try:
        settings = load(args)
    except ConfigProblems as exc:
        report([Check(Level.FAIL, "settings", line) for line in exc.lines])
        return int(Level.FAIL)
    checks = [Check(Level.OK, "settings",
                    f"{path}: {len(settings.listeners)} listener(s), "
                    f"domains {', '.join(settings.domains)}")]
    checks += [Check(Level.WARN, "settings", d) for d in settings.policy.deprecations()]
    for family in (check_certificates, check_key_modes, check_crls, check_whitelist,
                   check_database, check_queue):
        checks += list(family(settings, args))
    checks.append(check_server(path))
    checks += list(check_listeners(settings, args))
    report(checks)
    return int(max(c.level for c in checks))


def report(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.level.name:<4}  {c.name:<{width}}  {c.reason}")
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    print(f"{len(checks)} checks: {counts[Level.OK]} ok, {counts[Level.WARN]} warning(s), "
          f"{counts[Level.FAIL]} failure(s)")


# ---------------------------------------------------------------- certificates


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} day{'s' if round(days) != 1 else ''}"


def _expiry(name: str, what: str, cert: Any, warn_days: int, now: datetime) -> Check:
    subject = cert.subject.rfc4514_string()
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    if before > now:
        return Check(Level.FAIL, name, f"{what} {subject}: not valid before "
                                       f"{before:%Y-%m-%d %H:%M} UTC")
    if after <= now:
        return Check(Level.FAIL, name, f"{what} {subject}: expired on {after:%Y-%m-%d} "
                                       f"({_days(now - after)} ago)")
    left = after - now
    level = Level.WARN if left < timedelta(days=warn_days) else Level.OK
    return Check(level, name, f"{what} {subject}: expires on {after:%Y-%m-%d} "
                              f"(in {_days(left)})")


def _load_certs(path: Path) -> list[Any]:
    from certs.trust import load_pem_certificates

    return load_pem_certificates(path)


def _pair(name: str, what: str, cert_file: Path, key_file: Path, warn_days: int,
          now: datetime) -> Iterator[Check]:
    try:
        chain = _load_certs(cert_file)
    except (OSError, ValueError) as exc:
        yield Check(Level.FAIL, name, f"{what} {cert_file}: unreadable ({_why(exc)})")
        return
    yield _expiry(name, what, chain[0], warn_days, now)
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        yield Check(Level.FAIL, name, f"{what} key {key_file}: unreadable ({_why(exc)})")
        return
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)):
        yield Check(Level.FAIL, name, f"{what} key {key_file} does not match {cert_file}")


def check_certificates(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    now = datetime.now(UTC)
    tls = settings.tls
    yield from _pair("certificate", "server", tls.cert_file, tls.key_file,
                     args.cert_warn_days, now)
    if tls.client_cert_file is not None:
        yield from _pair("certificate", "relay client", tls.client_cert_file,
                         tls.client_key_file or tls.key_file, args.cert_warn_days, now)
    for path in tls.ca_files:
        try:
            cas = _load_certs(path)
        except (OSError, ValueError) as exc:
            yield Check(Level.FAIL, "certificate", f"CA file {path}: unreadable ({_why(exc)})")
            continue
        for ca in cas:
            yield _expiry("certificate", "CA", ca, args.cert_warn_days, now)


def _mode_check(name: str, what: str, path: Path, *, group_ok: bool) -> Check:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return Check(Level.FAIL, name, f"{what} {path}: {_why(exc)}")
    if mode & 0o007 or (mode & 0o070 and not group_ok):
        return Check(Level.FAIL, name, f"{what} {path}: mode {mode:04o} lets "
                                       f"{'others' if mode & 0o007 else 'the group'} read it "
                                       "(chmod 600)")
    if mode & 0o070:
        return Check(Level.WARN, name, f"{what} {path}: mode {mode:04o}: readable by its "
                                       "group")
    return Check(Level.OK, name, f"{what} {path}: mode {mode:04o}")


def check_key_modes(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    from storage.crypto import KeyFileError, KeyRing

    check = _mode_check("key-file", "key_file", settings.key_file, group_ok=False)
    if check.level is Level.OK:
        try:
            ring = KeyRing.load(settings.key_file)
        except KeyFileError as exc:
            check = Check(Level.FAIL, "key-file", str(exc))
        else:
            check = Check(Level.OK, "key-file", f"{check.reason}, {len(ring.keys)} key(s), "
                                                f"current {ring.current_id}")
    yield check
    keys = {settings.tls.key_file}
    if settings.tls.client_key_file is not None:
        keys.add(settings.tls.client_key_file)
    for path in sorted(keys):
        yield _mode_check("key-file", "TLS key", path, group_ok=True)


# ---------------------------------------------------------------- CRLs


def check_crls(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    from certs.trust import load_crls

    tls = settings.tls
    if not tls.crl_files:
        yield Check(Level.WARN, "crl", "tls.crl_files is empty: revoked certificates are "
                                       "not refused")
        return
    cas: list[Any] = []
    for path in tls.ca_files:
        try:
            cas += _load_certs(path)
        except (OSError, ValueError):
            pass  # reported by check_certificates
    crls: list[Any] = []
    for path in tls.crl_files:
        try:
            crls += load_crls(path)
        except (OSError, ValueError) as exc:
            yield Check(Level.FAIL, "crl", f"{path}: unreadable ({_why(exc)})")
    now = datetime.now(UTC)
    warn = timedelta(hours=args.crl_warn_hours)
    for ca in cas:
        subject = ca.subject.rfc4514_string()
        mine = [c for c in crls if c.issuer == ca.subject and _signed(c, ca)]
        if not mine:
            if tls.missing_crl is MissingCRL.ACCEPT:
                yield Check(Level.WARN, "crl", f"no CRL for CA {subject}: its certificates are "
                                               "accepted unchecked (tls.missing_crl: accept)")
            else:
                yield Check(Level.FAIL, "crl", f"no CRL for CA {subject}: its certificates are "
                                               "refused (tls.missing_crl: refuse)")
            continue
        crl = max(mine, key=lambda c: c.last_update_utc)
        nxt = crl.next_update_utc
        age = _days(now - crl.last_update_utc)
        if nxt is None:
            yield Check(Level.WARN, "crl", f"CRL of {subject}: issued {age} ago, names no "
                                           "next update")
        elif nxt <= now:
            yield Check(Level.FAIL, "crl", f"CRL of {subject}: stale, its next update was due "
                                           f"{nxt:%Y-%m-%d %H:%M} UTC ({_days(now - nxt)} ago)")
        elif nxt - now < warn:
            yield Check(Level.WARN, "crl", f"CRL of {subject}: next update due "
                                           f"{nxt:%Y-%m-%d %H:%M} UTC, within "
                                           f"{args.crl_warn_hours:g} h: fetch it")
        else:
            yield Check(Level.OK, "crl", f"CRL of {subject}: issued {age} ago, next update "
                                         f"{nxt:%Y-%m-%d %H:%M} UTC")


def _signed(crl: Any, ca: Any) -> bool:
    try:
        return bool(crl.is_signature_valid(ca.public_key()))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- whitelist


def check_whitelist(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    from policy.whitelist import Whitelist, WhitelistError

    path = settings.policy.whitelist_file
    if path is None:
        yield Check(Level.WARN, "whitelist", "policy.whitelist_file is not set: relaying is "
                                             "not restricted to the trust space")
        return
    try:
        whitelist = Whitelist.load(path)
    except WhitelistError as exc:
        yield Check(Level.FAIL, "whitelist", str(exc))
        return
    size = f"{whitelist.entry_count} entries for {len(whitelist.domains)} domains"
    generated = _parse_time(whitelist.generated)
    if generated is None:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        generated, source = mtime, "file written"
    else:
        source = "generated"
    age = datetime.now(UTC) - generated
    level = Level.WARN if age > timedelta(days=args.whitelist_warn_days) else Level.OK
    where = f" (fetched from {settings.policy.whitelist_url})" \
        if settings.policy.whitelist_url else ""
    yield Check(level, "whitelist", f"{path}{where}: {size}, {source} "
                                    f"{generated:%Y-%m-%d %H:%M} UTC ({_days(age)} ago)")


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- database, queue


def _db_name(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database.url).render_as_string(hide_password=True)


def check_database(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    from sqlalchemy.exc import SQLAlchemyError

    from storage import head_revision, schema_revision
    from storage.engine import sqlite_path

    name = _db_name(settings)
    db_file = sqlite_path(settings.database.url)
    if db_file is not None and not db_file.exists():
        yield Check(Level.FAIL, "database", f"{name}: no database file: run `mssctl db "
                                            "upgrade`")
        return
    try:
        current = schema_revision(settings.database.url)
    except (SQLAlchemyError, OSError) as exc:
        yield Check(Level.FAIL, "database", f"{name}: unreachable ({_why(exc)})")
        return
    head = head_revision()
    if current != head:
        yield Check(Level.FAIL, "database", f"{name}: schema at {current or 'nothing'}, not "
                                            f"{head}: run `mssctl db upgrade`")
        return
    yield Check(Level.OK, "database", f"{name}: reachable, schema at the latest revision "
                                      f"({head})")


def check_queue(settings: Settings, args: argparse.Namespace) -> Iterator[Check]:
    from storage import open_store
    from storage.crypto import KeyFileError
    from storage.interface import StoreError

    try:
        store = open_store(settings.database.url, settings.key_file, pool_size=1)
    except (StoreError, KeyFileError, OSError) as exc:
        yield Check(Level.WARN, "queue", f"not checked: cannot open the store ({_why(exc)})")
        return
    try:
        entries = store.list_queue()
    except StoreError as exc:
        yield Check(Level.FAIL, "queue", f"cannot read the queue ({_why(exc)})")
        return
    finally:
        store.close()
    if not entries:
        yield Check(Level.OK, "queue", "empty")
        return
    oldest = min(entries, key=lambda e: e.created)
    created = oldest.created if oldest.created.tzinfo else oldest.created.replace(tzinfo=UTC)
    age = datetime.now(UTC) - created
    text = (f"{len(entries)} message(s); oldest: entry {oldest.id}, queued "
            f"{created:%Y-%m-%d %H:%M} UTC ({age.total_seconds() / 3600:.1f} h ago, "
            f"{oldest.attempts} attempt(s){', last error: ' + oldest.last_error[:120] if oldest.last_error else ''})")
    level = Level.WARN if age.total_seconds() > args.queue_warn_age else Level.OK
    yield Check(level, "queue", text)


# ---------------------------------------------------------------- the server


def check_server(config: Path) -> Check:
    """`serve` records its pid beside the settings file while it runs."""
    import os

    from mssctl.serve import pid_file

    path = pid_file(config)
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return Check(Level.WARN, "server", f"no {path.name} beside the settings: serve is not "
                                           "running (or cannot write there)")
    except (OSError, ValueError) as exc:
        return Check(Level.WARN, "server", f"{path}: unreadable ({_why(exc)})")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Check(Level.WARN, "server", f"{path} names pid {pid}, which is not running "
                                           "(left by a crash?)")
    except PermissionError:
        pass  # running as another user: it exists
    return Check(Level.OK, "server", f"serve is running, pid {pid}")


# ---------------------------------------------------------------- listeners


_GREETINGS: dict[ListenerRole, bytes] = {
    ListenerRole.MX: b"220",
    ListenerRole.SUBMISSION: b"220",
    ListenerRole.IMAP: b"* OK",
}


def _connect_address(address: str) -> str:
    """Where to connect for a listener bound to `address` (a wildcard: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)  # noqa: S104


def _probe(listener: ListenerSettings, timeout: float) -> tuple[bool, str]:
    """(answered as expected, what it answered or why not)."""
    host = _connect_address(listener.address)
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, listener.port), timeout=timeout)
    try:
        if listener.proxy_protocol:
            # What a balancer's health check sends: "this connection is mine".
            sock.sendall(b"PROXY UNKNOWN\r\n")
        stream: socket.socket = sock
        if listener.tls is TLSMode.IMPLICIT:
            ctx = ssl.create_default_context()
            # The certificate is checked above, from its file; here: does it answer?
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            stream = ctx.wrap_socket(sock, server_hostname=host)
        if listener.role not in _GREETINGS:
            return _http_probe(stream, listener, host)
        data = b""
        while b"\n" not in data and len(data) < 1024:
            stream.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = stream.recv(1024)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace")
        return data.startswith(_GREETINGS[listener.role]), line[:100] or "no greeting"
    finally:
        sock.close()


def _http_probe(stream: socket.socket, listener: ListenerSettings, host: str) -> tuple[bool, str]:
    stream.sendall(b"GET /.well-known/autoconfig/mail/config-v1.1.xml HTTP/1.1\r\n"
                   b"Host: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
    data = stream.recv(1024)
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    return line.startswith("HTTP/1.1 200"), line[:100] or "no answer"


def check_listeners(settings: Settings, args: argparse.Namespace,
                    probe: Callable[[ListenerSettings, float], tuple[bool, str]] = _probe,
                    ) -> Iterator[Check]:
    for lst in settings.listeners:
        where = f"{lst.name} {lst.address}:{lst.port}"
        try:
            ok, answer = probe(lst, args.timeout)
        except (OSError, ssl.SSLError) as exc:
            yield Check(Level.FAIL, "listener", f"{where}: {_why(exc)}"
                        + (" (a PROXY protocol listener: is this host in its proxy_from?)"
                           if lst.proxy_protocol else ""))
            continue
        hint = (" (a PROXY protocol listener: is this host in its proxy_from?)"
                if lst.proxy_protocol else "")
        if ok:
            yield Check(Level.OK, "listener", f"{where}: {answer}")
        else:
            yield Check(Level.FAIL, "listener", f"{where}: unexpected answer {answer!r}{hint}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if isinstance(exc, ConnectionError) else exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200] or type(exc).__name__
