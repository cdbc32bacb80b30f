"""`mssctl init DIR`: a complete, runnable instance in one directory.

Writes the settings (every path relative, so DIR can be moved), the default flow
matrix, a whitelist naming our own domain, a development PKI, the key file and
a migrated SQLite database with the served domain; ``--demo`` adds the demo
people and boxes of README.md. Everything is built in a temporary sibling
directory and renamed into place at the end, so an interrupted init leaves no
half-made instance behind.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import string
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from mssctl.common import EXIT_OK, EXIT_USAGE, CliError, record_admin
from mssctl.serve import DEMO_LOGINS_FILE

if TYPE_CHECKING:
    from certs.devpki import DevPKI
    from storage.interface import MessageStore

DEFAULT_DOMAIN = "hopital.test"
DEFAULT_PORTS: tuple[tuple[str, int, str, str], ...] = (
    # name, port, role, tls
    ("smtp-mx", 2525, "mx", "starttls"),
    ("submission", 2587, "submission", "starttls"),
    ("submissions", 2465, "submission", "implicit"),
    ("imap", 1143, "imap", "starttls"),
    ("imaps", 1993, "imap", "implicit"),
)
MAX_OFFSET = 65535 - max(p for _, p, _, _ in DEFAULT_PORTS)
ORG_RIGHTS = "lrswipkxtea"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "init",
        help="create a runnable instance (settings, PKI, keys, database) in DIR",
        description="Create DIR/mss.yaml, DIR/flows.yaml, DIR/whitelist.xml, DIR/pki/, "
        "DIR/keys and DIR/mss.db (SQLite, migrated).",
    )
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--demo", action="store_true",
                   help="add demo accounts and mailboxes (dr.martin, sec.durand, sec.petit, "
                   "cardiologie, labo)")
    p.add_argument("--domain", default=DEFAULT_DOMAIN,
                   help=f"the served mail domain (default {DEFAULT_DOMAIN})")
    p.add_argument("--port-offset", type=int, default=0, metavar="N",
                   help="add N to every default port (run two instances side by side)")
    p.add_argument("--hostname", default=None, metavar="H",
                   help="the server's host name (default mx.DOMAIN); the certificate "
                   "also names localhost and 127.0.0.1")
    p.set_defaults(func=run)


# ---------------------------------------------------------------- file contents


def render_config(
    *, domain: str, hostname: str, port_offset: int, demo: bool, pki: dict[str, str]
) -> str:
    """The mss.yaml `init` writes (also the source of conf/defaults/mss.yaml)."""
    listeners = "\n".join(
        f"  - {{name: {name}, address: 127.0.0.1, port: {port + port_offset}, "
        f"role: {role}, tls: {tls}, client_cert: optional}}"
        for name, port, role, tls in DEFAULT_PORTS
    )
    if demo:
        methods = (
            "    # demo: a password alone too, for testing without a card, a code or a token\n"
            "    practitioner: [card, password]\n"
            "    staff: [password, password+totp, token]\n"
        )
    else:
        methods = (
            "    practitioner: [card]\n"
            "    staff: [password+totp, token]\n"
        )
    return f"""\
# mss.yaml: settings of one MSS secure health mail server instance.
# Written by `mssctl init`; every setting is described in README.md
# ("Configuration reference"). Relative paths are relative to this file.

hostname: {hostname}
domains:
  - {domain}

# role: mx (between operators) | submission (clients) | imap
# tls: none | starttls | implicit      client_cert: none | optional | required
listeners:
{listeners}

database:
  # sqlite:///<file> (relative to this file) or postgresql+psycopg2://user@host/db
  url: sqlite:///mss.db
  pool_size: 8
  threads: 4

tls:
  cert_file: {pki["cert_file"]}
  key_file: {pki["key_file"]}
  ca_files:
    - {pki["ca_file"]}
  crl_files:
    - {pki["crl_file"]}
  min_version: TLSv1.2

limits:
  message_size: 10485760
  recipients: 100
  line_length: 1000
  command_line_length: 65536
  connections_per_ip: 50
  imap_connections_per_ip: 50
  commands_before_mail: 20
  bad_commands: 10
  failed_auth: 3
  smtp_idle_timeout: 300
  imap_idle_timeout: 1800
  imap_idle_command_timeout: 1800
  imap_login_timeout: 60
  imap_append_messages: 100
  imap_append_octets: 52428800
  imap_update_contexts: 5
  tls_handshake_timeout: 10
  bare_line_endings: reject

queue:
  # Static routes, domain: "host:port" (e.g. a second local instance); others use DNS MX.
  routes: {{}}
  retry_initial: 60
  retry_max: 3600
  lifetime: 432000
  poll_interval: 5
  connect_timeout: 30

audit:
  path: audit.log
  retention_days: 183

policy:
  flows_file: flows.yaml
  whitelist_file: whitelist.xml
  # Login methods allowed per account class: card, org-certificate, password,
  # password+totp (the password followed by a one-time code), token, ldap (a
  # password checked by a bind to the directory of the ldap section).
  login_methods:
{methods}    system: [org-certificate]
    admin: [card, password+totp]
  # Operators of the trust space present their certificate on the mx
  # listeners; its DN must be listed in the whitelist for the sender's domain.
  # For a lab without peer certificates: false (README, "Configuration reference").
  mx_require_client_cert: true
  enforce_whitelist: true
  # Receives mail for postmaster@ of every served domain (RFC 5321 4.5.1).
  postmaster: postmaster@{domain}
  # Organisation (APP) certificates log in only when pinned to their account
  # (`mssctl account pin LOGIN --cert FILE.pem`): a structure's OU alone would
  # let any of its certificates in.
  require_org_cert_pinning: true
  # Login throttling, shared by every worker through the database: N failures
  # within `window` seconds lock the account (or the client address) for
  # base_delay, doubled by each further failure up to the max.
  lockout:
    account_failures: 10
    address_failures: 30
    window: 900
    base_delay: 60
    max_delay: 3600
    address_max_delay: 300

key_file: keys
workers: 1
"""


def default_flows() -> str:
    """The flow matrix `init` writes: the shipped conf/defaults/flows.yaml,
    which states today's fixed rules (valid for any domain and listeners)."""
    return (resources.files("conf") / "defaults" / "flows.yaml").read_text(encoding="utf-8")


def render_whitelist(entries: list[tuple[str, str, str]], now: datetime) -> str:
    """The agency's XML shape; entries are (domain, operator DN, description)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    domains = "".join(
        f"""    <Domaine>
      <Nom>{escape(name)}</Nom>
      <Description>{escape(description)}</Description>
      <DNCertificatOperateur>{escape(dn)}</DNCertificatOperateur>
      <ResponsableContact>postmaster@{escape(name)}</ResponsableContact>
      <SupportContact>support@{escape(name)}</SupportContact>
      <DateMAJ>{stamp}</DateMAJ>
    </Domaine>
"""
        for name, dn, description in entries
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Development whitelist written by `mssctl init`: our own domain (and, with
     demo data, a peer operator). In production, point policy.whitelist_file at
     the list published by the national agency. -->
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
  <DateDeGeneration>{stamp}</DateDeGeneration>
  <ListeDomaines>
{domains}  </ListeDomaines>
</ListeBlancheMSSante>
"""


# ---------------------------------------------------------------- demo data


@dataclass
class DemoLogin:
    login: str
    what: str
    password: str | None = None
    cert_files: list[Path] = field(default_factory=list)


# Letters and digits only: a password is pasted into command lines
# (`mssctl account add --password`, `swaks --auth-password`, `curl -u`), where
# one beginning with "-" (token_urlsafe gave one in 64) reads as an option.
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 16  # about 95 bits


def _new_password() -> str:
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def _cert_identity(path: Path) -> Any:
    from cryptography import x509

    from certs.identity import identity_from_certificate

    # The file holds the leaf first, then its issuing CA.
    return identity_from_certificate(x509.load_pem_x509_certificates(path.read_bytes())[0])


def _cert_fingerprint(path: Path) -> str:
    from cryptography import x509

    from certs.identity import certificate_fingerprint

    return certificate_fingerprint(x509.load_pem_x509_certificates(path.read_bytes())[0])


def add_demo(store: MessageStore, domain: str, pki: DevPKI) -> list[DemoLogin]:
    from policy.passwords import hash_password
    from storage.interface import AccountClass, MailboxType

    assert pki.practitioner is not None and pki.organisation is not None
    logins: list[DemoLogin] = []

    card = _cert_identity(pki.practitioner.cert)
    pw = _new_password()
    martin = store.add_account(
        f"dr.martin@{domain}", "Dr Paul Martin", AccountClass.PRACTITIONER,
        idnat=card.idnat, password_hash=hash_password(pw),
    )
    store.add_mailbox(martin.login, MailboxType.PER, display_name="Dr Paul Martin",
                      owner_account_id=martin.id, service="Cardiologie",
                      description="Cardiologue")
    files = [p for p in (pki.practitioner.cert, pki.practitioner.key, pki.practitioner.p12)
             if p is not None]
    logins.append(DemoLogin(martin.login, f"practitioner, PER box, card IdNat_PS {card.idnat}",
                            pw, files))

    secretaries = []
    for local, name in (("sec.durand", "Sophie Durand"), ("sec.petit", "Julie Petit")):
        pw = _new_password()
        acc = store.add_account(f"{local}@{domain}", name, AccountClass.STAFF,
                                password_hash=hash_password(pw))
        store.add_mailbox(acc.login, MailboxType.PER, display_name=name, owner_account_id=acc.id)
        secretaries.append(acc)
        logins.append(DemoLogin(acc.login, "secretary (staff), own box + cardiologie@", pw))

    cardio = store.add_mailbox(
        f"cardiologie@{domain}", MailboxType.ORG, display_name="Secretariat de cardiologie",
        responsible="Service de cardiologie, Hopital de demonstration",
        service="Cardiologie", description="Secretariat: rendez-vous, comptes rendus",
    )
    for acc in secretaries:
        store.set_grant(acc.id, cardio.id, ORG_RIGHTS, send_as=True)

    org = _cert_identity(pki.organisation.cert)
    labo = store.add_account(
        f"labo@{domain}", "Laboratoire (application)", AccountClass.SYSTEM,
        cert_subject=org.subject, cert_pins=[_cert_fingerprint(pki.organisation.cert)],
    )
    store.add_mailbox(labo.login, MailboxType.APP, display_name="Laboratoire",
                      owner_account_id=labo.id, responsible="Laboratoire de biologie")
    files = [p for p in (pki.organisation.cert, pki.organisation.key, pki.organisation.p12)
             if p is not None]
    logins.append(DemoLogin(labo.login, "application (APP box), organisation certificate "
                            "(pinned), SASL EXTERNAL", None, files))
    return logins


def demo_text(logins: list[DemoLogin], pki: DevPKI, directory: Path) -> str:
    lines = [
        "Demo logins (SASL PLAIN/LOGIN with the password; EXTERNAL with the certificate):",
    ]
    for d in logins:
        lines.append(f"  {d.login:<28} {d.what}")
        if d.password:
            lines.append(f"  {'':<28} password: {d.password}")
        for f in d.cert_files:
            lines.append(f"  {'':<28} {_kind(f)}: {directory / f.relative_to(pki.directory.parent)}")
    cardio = f"cardiologie@{pki.domain}"
    lines.append(f"  {cardio:<28} functional box (ORG) shared by both secretaries")
    lines.append(f"  PKCS#12 password: {pki.p12_password}")
    return "\n".join(lines)


def _kind(path: Path) -> str:
    if path.suffix == ".p12":
        return "PKCS#12 (import in the mail client)"
    if path.name.endswith(".key"):
        return "private key (PEM)"
    return "certificate (PEM)"


# ---------------------------------------------------------------- command


def _check_args(args: argparse.Namespace) -> tuple[str, str]:
    domain = args.domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise CliError(f"--domain: expected a mail domain such as hopital.test, got {args.domain!r}",
                       EXIT_USAGE)
    hostname = (args.hostname or f"mx.{domain}").strip().lower()
    if not _HOST.match(hostname):
        raise CliError(f"--hostname: expected a host name, got {args.hostname!r}", EXIT_USAGE)
    if not 0 <= args.port_offset <= MAX_OFFSET:
        raise CliError(f"--port-offset: expected an integer from 0 to {MAX_OFFSET}, "
                       f"got {args.port_offset}", EXIT_USAGE)
    return domain, hostname


def _private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def build(work: Path, final: Path, domain: str, hostname: str, port_offset: int,
          demo: bool) -> str:
    """Creates the instance in `work` (to be renamed to `final`); returns the
    summary to print."""
    from certs.devpki import make_dev_pki
    from conf.loader import load_settings
    from policy.flows import listener_roles, load_matrix
    from storage import open_store
    from storage.crypto import generate_key_file
    from storage.interface import MailboxType

    hostnames = list(dict.fromkeys([hostname, "localhost", "127.0.0.1"]))
    pki = make_dev_pki(work / "pki", hostnames=hostnames, domain=domain, demo=demo)

    def rel(p: Path) -> str:
        return p.relative_to(work).as_posix()

    (work / "mss.yaml").write_text(
        render_config(
            domain=domain, hostname=hostname, port_offset=port_offset, demo=demo,
            pki={"cert_file": rel(pki.server_cert), "key_file": rel(pki.server_key),
                 "ca_file": rel(pki.ca_bundle), "crl_file": rel(pki.crl)},
        ),
        encoding="utf-8",
    )
    (work / "flows.yaml").write_text(default_flows(), encoding="utf-8")
    entries = [(domain, pki.server.subject, "Domaine de cette instance (dev)")]
    if demo and pki.peer_operator is not None:
        entries.append(("operateur-pair.test", pki.peer_operator.subject,
                        "Operateur pair de demonstration"))
    (work / "whitelist.xml").write_text(render_whitelist(entries, datetime.now(UTC)),
                                        encoding="utf-8")
    generate_key_file(work / "keys")
    os.chmod(work / "keys", 0o600)

    settings = load_settings(work / "mss.yaml", check_files=True)  # what serve will read
    load_matrix(work / "flows.yaml", listeners=listener_roles(settings))  # and its matrix
    store = open_store(settings.database.url, settings.key_file, create=True)
    try:
        store.add_domain(domain)
        # RFC 5321 4.5.1: postmaster must be accepted; a functional box that
        # the operator grants to its staff (`mssctl mailbox grant`).
        store.add_mailbox(f"postmaster@{domain}", MailboxType.ORG, display_name="Postmaster",
                          responsible=domain)
        logins = add_demo(store, domain, pki) if demo else []
        record_admin(settings, store, "init", str(final), "ok", domain=domain,
                     hostname=hostname, demo=demo, accounts=len(store.list_accounts()),
                     mailboxes=len(store.list_mailboxes()))
    finally:
        store.close()
    for db_file in work.glob("mss.db*"):  # addresses and dates are in clear
        os.chmod(db_file, 0o600)

    lines = [
        f"Created {final}/ for domain {domain} (host name {hostname}):",
        "  mss.yaml       settings (paths relative to it)",
        "  flows.yaml     flow matrix: today's rules (`mssctl policy check`, `explain`)",
        "  whitelist.xml  trust-space whitelist naming this server",
        "  pki/           development PKI (not for production)",
        "  keys           encryption key of stored messages (keep it private, back it up)",
        "  mss.db         SQLite database, migrated",
        "",
        "Listeners (127.0.0.1):",
    ]
    for name, port, role, tls in DEFAULT_PORTS:
        lines.append(f"  {name:<12} {port + port_offset:<5}  {role}, {tls}")
    lines += ["", f"CA file to trust: {final / rel(pki.ca_bundle)}"]
    if demo:
        text = demo_text(logins, pki, final)
        _private_write(work / DEMO_LOGINS_FILE, text + "\n")
        lines += ["", text, "", f"(These logins are kept in {final / DEMO_LOGINS_FILE}.)"]
    lines += ["", f"Start it: mssctl serve --config {final / 'mss.yaml'} --banner"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    domain, hostname = _check_args(args)
    final: Path = args.directory
    if final.exists() and not final.is_dir():
        raise CliError(f"{final} exists and is not a directory")
    if final.is_dir() and any(final.iterdir()):
        what = "already holds an instance" if (final / "mss.yaml").exists() else "is not empty"
        raise CliError(f"{final} {what}; choose a new directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.init-", dir=final.parent)).resolve()
    try:
        summary = build(work, final, domain, hostname, args.port_offset, args.demo)
        if final.is_dir():
            final.rmdir()  # empty (checked above): rename cannot replace it otherwise
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(summary)
    return EXIT_OK
