"""A throwaway OpenLDAP `slapd` for the directory tests.

`running_slapd(directory, pki)` writes a slapd.conf of its own (mdb backend,
the core, cosine, inetorgperson and nis schemas of /etc/ldap/schema, plus a
two-line test schema giving people Active Directory's `userAccountControl`),
loads an LDIF with slapadd (offline: fast), and starts `slapd -d 0` listening
on 127.0.0.1 only, with ldap:// (StartTLS offered) and ldaps:// on free
ports, the server certificate of the project's dev PKI, and client
certificates of that PKI accepted for SASL EXTERNAL (mapped to the
directory's admin DN). `Slapd.stop()` / `start()` stop and start it again on
the same ports (the "directory unreachable" tests). Nothing listens outside
loopback: the addresses are in `-h`, and there is no other listener.

`people_ldif(n_people, n_groups)` generates the fixture directory: people
`uid=agent0001,ou=people,dc=hopital,dc=test` … (inetOrgPerson, mail
agentNNNN@hopital.test, employeeNumber the IdNat_PS, employeeType the
account class, userPassword `pw-agentNNNN`, userAccountControl 512 (enabled)),
and groups `cn=service01,ou=groups,…` (groupOfNames) of which person i is a
member of group i % n_groups.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE = "dc=hopital,dc=test"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
ADMIN_DN = f"cn=admin,{BASE}"
ADMIN_PASSWORD = "directory-admin-secret"  # noqa: S105 - a throwaway test directory
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_DEADLINE = 15.0

# Active Directory's account-control attribute (bit 2: disabled), on an
# auxiliary class, so that the AD mapping is tested against a real server.
TEST_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'mssTestAccount' SUP top AUXILIARY
  MAY ( userAccountControl ) )
"""


def slapd_binaries() -> tuple[Path, Path] | None:
    slapd = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists()
                                      else None)
    slapadd = shutil.which("slapadd") or ("/usr/sbin/slapadd"
                                          if Path("/usr/sbin/slapadd").exists() else None)
    if slapd is None or slapadd is None:
        return None
    return Path(slapd), Path(slapadd)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def idnat(i: int) -> str:
    """A practitioner-shaped IdNat_PS ("8" + an 11-digit RPPS number)."""
    return f"8{10000000000 + i:011d}"


def person_uid(i: int) -> str:
    return f"agent{i:04d}"


def person_dn(i: int) -> str:
    return f"uid={person_uid(i)},{PEOPLE}"


def person_mail(i: int) -> str:
    return f"{person_uid(i)}@hopital.test"


def person_password(i: int) -> str:
    return f"pw-{person_uid(i)}"


def group_cn(g: int) -> str:
    return f"service{g:02d}"


def group_dn(g: int) -> str:
    return f"cn={group_cn(g)},{GROUPS}"


def base_ldif() -> str:
    return (
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Hopital test\ndc: hopital\n\n"
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n"
    )


def person_entry(i: int, *, account_class: str = "staff", uac: int = 512) -> str:
    uid = person_uid(i)
    return (
        f"dn: {person_dn(i)}\nobjectClass: inetOrgPerson\nobjectClass: mssTestAccount\n"
        f"uid: {uid}\ncn: Agent {i:04d}\nsn: Agent\ngivenName: Number{i}\n"
        f"mail: {person_mail(i)}\nemployeeNumber: {idnat(i)}\n"
        f"employeeType: {account_class}\nuserPassword: {person_password(i)}\n"
        f"userAccountControl: {uac}\n\n"
    )


def group_entry(g: int, members: list[int]) -> str:
    lines = [f"dn: {group_dn(g)}", "objectClass: groupOfNames", f"cn: {group_cn(g)}"]
    # groupOfNames needs one member: an empty service names the base.
    lines += [f"member: {person_dn(i)}" for i in members] or [f"member: {BASE}"]
    return "\n".join(lines) + "\n\n"


def people_ldif(n_people: int, n_groups: int) -> str:
    """The fixture directory: person i (1-based) in group (i % n_groups) + 1."""
    parts = [base_ldif()]
    parts += [person_entry(i) for i in range(1, n_people + 1)]
    for g in range(1, n_groups + 1):
        parts.append(group_entry(g, [i for i in range(1, n_people + 1)
                                     if (i % n_groups) + 1 == g]))
    return "".join(parts)


@dataclass
class Slapd:
    """A running slapd: `ldap_url` (StartTLS offered), `ldaps_url`, the CA to
    trust (`ca_file`), and admin access (`admin()`: an ldap3 Connection)."""

    directory: Path
    conf: Path
    slapd: Path
    ldap_port: int
    ldaps_port: int
    ca_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def start(self) -> None:
        assert self.process is None
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        log = (self.directory / "slapd.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(self.slapd), "-d", "0", "-f", str(self.conf), "-h", urls],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while not (_accepts(self.ldap_port) and _accepts(self.ldaps_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("slapd did not start:\n" + self.log_tail())
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        path = self.directory / "slapd.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def admin(self) -> Any:
        """An ldap3 Connection bound as the directory's admin (plain ldap://)."""
        import ldap3

        conn = ldap3.Connection(ldap3.Server(self.ldap_url, connect_timeout=5), ADMIN_DN,
                                ADMIN_PASSWORD, auto_bind=True, receive_timeout=10)
        return conn

    def modify(self, dn: str, changes: dict[str, Any]) -> None:
        conn = self.admin()
        try:
            if not conn.modify(dn, changes):
                raise RuntimeError(f"modify {dn}: {conn.result}")
        finally:
            conn.unbind()

    def add(self, ldif_entry: str) -> None:
        """Adds one entry given as LDIF text (one `dn:` and its attributes)."""
        dn, attrs = "", {}  # type: tuple[str, dict[str, list[str]]]
        for line in ldif_entry.strip().splitlines():
            name, _, value = line.partition(": ")
            if name == "dn":
                dn = value
            else:
                attrs.setdefault(name, []).append(value)
        conn = self.admin()
        try:
            if not conn.add(dn, attributes=attrs):
                raise RuntimeError(f"add {dn}: {conn.result}")
        finally:
            conn.unbind()

    def delete(self, dn: str) -> None:
        conn = self.admin()
        try:
            if not conn.delete(dn):
                raise RuntimeError(f"delete {dn}: {conn.result}")
        finally:
            conn.unbind()


def write_config(directory: Path, pki: Any) -> Path:
    """slapd.conf in `directory` (database in directory/db); returns its path."""
    (directory / "db").mkdir(parents=True, exist_ok=True)
    (directory / "mss-test.schema").write_text(TEST_SCHEMA)
    includes = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in SCHEMAS)
    conf = directory / "slapd.conf"
    conf.write_text(f"""\
{includes}
include {directory / 'mss-test.schema'}
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {directory / 'slapd.pid'}
argsfile {directory / 'slapd.args'}
TLSCertificateFile {pki.server.cert}
TLSCertificateKeyFile {pki.server.key}
TLSCACertificateFile {pki.ca_bundle}
TLSVerifyClient try
# SASL EXTERNAL: the dev PKI's server certificate (what the sync presents as
# its client certificate in the tests) acts as the directory's admin.
authz-regexp "^cn=mx\\.hopital\\.test,.*$" "{ADMIN_DN}"
database mdb
maxsize 268435456
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {directory / 'db'}
index objectClass,uid,mail,member eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
""")
    return conf


@contextmanager
def running_slapd(pki: Any, ldif: str, directory: Path | None = None) -> Iterator[Slapd]:
    """Writes the configuration, loads `ldif` with slapadd, starts slapd;
    stops it and removes its files on exit."""
    found = slapd_binaries()
    if found is None:
        raise RuntimeError("slapd not found (Debian packages slapd and ldap-utils)")
    slapd, slapadd = found
    own = directory is None
    base = Path(tempfile.mkdtemp(prefix="mss-slapd-")) if directory is None else directory
    conf = write_config(base, pki)
    (base / "data.ldif").write_text(ldif)
    done = subprocess.run(  # noqa: S603 - fixed argv
        [str(slapadd), "-q", "-f", str(conf), "-l", str(base / "data.ldif")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"slapadd failed: {done.stdout.decode(errors='replace')}")
    server = Slapd(base, conf, slapd, _free_port(), _free_port(), pki.ca_bundle)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if own:
            shutil.rmtree(base, ignore_errors=True)


def ldap_section(server: Slapd, directory: Path, *, n_groups: int = 0,
                 **overrides: Any) -> dict[str, Any]:
    """The `ldap:` settings of the tests for `server`: LDAPS with the dev
    CA, a simple bind as the admin (password in directory/ldap-password),
    people mapped as an OpenLDAP site maps them (mail, employeeNumber as
    IdNat_PS, employeeType as the class, AD's userAccountControl), and
    service group g granting service<g>@hopital.test (group 1 with send-as)."""
    secret = directory / "ldap-password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    secret.chmod(0o600)
    values: dict[str, Any] = {
        "urls": [server.ldaps_url],
        "ca_file": str(server.ca_file),
        "bind": "simple",
        "bind_dn": ADMIN_DN,
        "bind_password_file": str(secret),
        "timeout": 5,
        "page_size": 200,
        "people": {"base_dn": PEOPLE, "filter": "(objectClass=inetOrgPerson)"},
        "attributes": {"login": "mail", "mail": "mail", "idnat": "employeeNumber",
                       "display_name": "cn", "account_class": "employeeType",
                       "disabled": "userAccountControl"},
        "class_map": {"medecin": "practitioner"},
        "groups": {"base_dn": GROUPS, "filter": "(objectClass=groupOfNames)"},
        "grants": [{"group": group_cn(g), "mailbox": f"{group_cn(g)}@hopital.test",
                    "rights": "lrswipkxtea", "send_as": g == 1}
                   for g in range(1, n_groups + 1)],
        "sync_interval": 0,
    }
    values.update(overrides)
    return values
