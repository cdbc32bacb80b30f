"""Typed models of every setting (pydantic v2).

One YAML file (`mss.yaml`) maps onto `Settings`. Relative paths in the file are
resolved against the directory holding the file by the loader
(`conf.loader.load_settings`), so the models here always carry absolute paths once
loaded. Unknown keys are errors (``extra="forbid"``): a misspelt key must never be
silently ignored on a mail server.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerRole(enum.StrEnum):
    """What a listener is for."""

    MX = "mx"  # SMTP between operators (port 25)
    SUBMISSION = "submission"  # SMTP from clients and systems (587 / 465)
    IMAP = "imap"  # IMAP (143 / 993)
    AUTOCONFIG = "autoconfig"  # HTTPS: mail client autoconfiguration (443)


class TLSMode(enum.StrEnum):
    NONE = "none"  # plaintext only: tests and loopback tools
    STARTTLS = "starttls"  # plaintext greeting, STARTTLS upgrades
    IMPLICIT = "implicit"  # TLS from the first byte (465, 993)


class ClientCertMode(enum.StrEnum):
    NONE = "none"  # never ask for a client certificate
    OPTIONAL = "optional"  # ask; a missing certificate is fine, a bad one is refused
    REQUIRED = "required"  # ask; the handshake fails without a valid one


class MissingCRL(enum.StrEnum):
    """What TLS does with a certificate issued by a trusted CA for which no
    CRL is held (while `tls.crl_files` is set)."""

    REFUSE = "refuse"  # revocation cannot be checked: refuse (default)
    ACCEPT = "accept"  # accept without a revocation check (logged)


class BareLineEndings(enum.StrEnum):
    """What SMTP does with a bare CR or LF inside DATA (smuggling defence)."""

    REJECT = "reject"
    NORMALISE = "normalise"


Port = Annotated[int, Field(ge=0, le=65535)]


class ListenerSettings(_Model):
    name: str = ""
    address: str = "127.0.0.1"
    port: Port
    role: ListenerRole
    tls: TLSMode = TLSMode.STARTTLS
    client_cert: ClientCertMode = ClientCertMode.OPTIONAL
    # Behind a load balancer: every connection starts with a HAProxy PROXY
    # header (v1 or v2) naming the client, accepted only from these networks.
    proxy_protocol: bool = False
    proxy_from: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128")])

    @field_validator("proxy_from", mode="before")
    @classmethod
    def _networks(cls, v: Any) -> Any:
        if isinstance(v, list):
            out = []
            for item in v:
                try:
                    out.append(ipaddress.ip_network(str(item), strict=False))
                except ValueError:
                    raise ValueError(f"{item!r} is not an IPv4 or IPv6 network "
                                     "(e.g. 10.0.0.0/24)") from None
            return out
        return v


class TLSSettings(_Model):
    """Server certificate, trust anchors and revocation lists."""

    cert_file: Path
    key_file: Path
    # CA certificates trusted for client certificates (cards, organisations) and
    # for peer operators' MTAs.
    ca_files: list[Path] = Field(default_factory=list)
    crl_files: list[Path] = Field(default_factory=list)
    # A trusted CA without a CRL in crl_files: refuse the certificates it
    # issued, or accept them unchecked. Either way a WARNING names the CA at
    # start-up and at each reload.
    missing_crl: MissingCRL = MissingCRL.REFUSE
    # Certificate presented by our MTA when relaying (mutual TLS between operators).
    # Defaults to the server certificate.
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    min_version: str = "TLSv1.2"
    # OpenSSL cipher string for TLS 1.2: the four suites of the trust space.
    ciphers: str = (
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256"
    )

    @field_validator("min_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        if v not in ("TLSv1.2", "TLSv1.3"):
            raise ValueError("must be TLSv1.2 or TLSv1.3")
        return v


class DatabaseSettings(_Model):
    # sqlite:///abs/path/mss.db or postgresql+psycopg2://user@host/db
    url: str
    # Connections kept per process (PostgreSQL); SQLite uses one per thread.
    pool_size: int = Field(default=8, ge=1, le=256)
    # Threads running store calls off the reactor (reads; the writes of IMAP
    # sessions have a writer lane of their own on SQLite). More threads cost
    # more CPU in GIL hand-overs than they save: 4 measured best with 2 to 8
    # on the mixed IMAP load (bench/imap_bench.py).
    threads: int = Field(default=4, ge=1, le=256)


class LimitSettings(_Model):
    message_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    recipients: int = Field(default=100, ge=1)
    line_length: int = Field(default=1000, ge=80)  # SMTP: RFC 5321 4.5.3.1.6
    command_line_length: int = Field(default=64 * 1024, ge=1024)  # IMAP, excluding literals
    # Simultaneous connections from one address to one SMTP listener, counted
    # across all the worker processes (`policy.connections`).
    connections_per_ip: int = Field(default=50, ge=1)
    # The same for one IMAP listener, before and after login. Generous: a
    # hospital's clients often reach us from one NAT address.
    imap_connections_per_ip: int = Field(default=50, ge=1)
    commands_before_mail: int = Field(default=20, ge=1)  # SMTP
    bad_commands: int = Field(default=10, ge=1)  # then disconnect
    failed_auth: int = Field(default=3, ge=1)  # then disconnect
    smtp_idle_timeout: float = Field(default=300.0, gt=0)
    imap_idle_timeout: float = Field(default=1800.0, gt=0)  # RFC 3501: at least 30 min
    imap_idle_command_timeout: float = Field(default=1800.0, gt=0)
    # An IMAP connection must be authenticated this long after it opened (not
    # reset by activity), as Dovecot's login processes do.
    imap_login_timeout: float = Field(default=60.0, gt=0)
    # One IMAP APPEND (RFC 3502 MULTIAPPEND, RFC 4469 CATENATE) is held whole
    # in memory until it is complete, then stored in one transaction: at most
    # this many messages, and this many octets of literals all together (each
    # message is also within message_size, as Dovecot limits each literal).
    imap_append_messages: int = Field(default=100, ge=1)
    imap_append_octets: int = Field(default=50 * 1024 * 1024, ge=1024)
    # RFC 5267 4.3.1: SEARCH / SORT results a session keeps up to date
    # (RETURN (UPDATE)) at a time; each is computed again when the folder
    # changes. The RFC wants at least one.
    imap_update_contexts: int = Field(default=5, ge=1)
    # Implicit-TLS listeners (465, 993): a connection whose TLS handshake is not
    # complete this long after it opened is closed.
    tls_handshake_timeout: float = Field(default=10.0, gt=0)
    bare_line_endings: BareLineEndings = BareLineEndings.REJECT


class QueueSettings(_Model):
    # Static routes: domain -> "host:port". Others use DNS MX.
    routes: dict[str, str] = Field(default_factory=dict)
    retry_initial: float = Field(default=60.0, gt=0)  # seconds before the first retry
    retry_max: float = Field(default=3600.0, gt=0)  # backoff cap
    lifetime: float = Field(default=5 * 86400.0, gt=0)  # then bounce with a DSN
    poll_interval: float = Field(default=5.0, gt=0)
    connect_timeout: float = Field(default=30.0, gt=0)


class AuditSettings(_Model):
    path: Path
    retention_days: int = Field(default=183, ge=1)  # >= 6 months


class LockoutSettings(_Model):
    """Login throttling (`policy.throttle`; README "Login throttling").

    Each refused login is a failure of its account and of its client
    address; `<scope>_failures` failures within `window` seconds lock for
    `base_delay`, doubled by every further failure, up to `max_delay`
    (accounts) or `address_max_delay` (addresses: shorter, so that one
    attacker behind a hospital's NAT cannot keep every agent out for long).
    A threshold of 0 turns that scope off."""

    account_failures: int = Field(default=10, ge=0)
    address_failures: int = Field(default=30, ge=0)
    window: float = Field(default=900.0, gt=0)  # seconds
    base_delay: float = Field(default=60.0, gt=0)
    max_delay: float = Field(default=3600.0, gt=0)
    address_max_delay: float = Field(default=300.0, gt=0)
class AuthMethod(enum.StrEnum):
    """How an account may prove who it is (`policy.login_methods`)."""

    CARD = "card"  # client certificate of a person (CPS, CPE card): SASL EXTERNAL
    ORG_CERTIFICATE = "org-certificate"  # organisation certificate (APP boxes): EXTERNAL
    PASSWORD = "password"  # noqa: S105 - a method name: a password alone (discouraged)
    PASSWORD_TOTP = "password+totp"  # noqa: S105 - the password, then a one-time code
    TOKEN = "token"  # noqa: S105 - an identity provider token: OAUTHBEARER, XOAUTH2
    # A password checked by binding to the directory (`ldap`) as the
    # account's entry; for accounts the directory sync made.
    LDAP = "ldap"


def _methods(*methods: AuthMethod) -> Any:
    return Field(default_factory=lambda: list(methods))


class LoginMethodSettings(_Model):
    """The methods allowed per account class. A login by another method is
    refused like a wrong password (audited as "method-not-allowed")."""

    practitioner: list[AuthMethod] = _methods(AuthMethod.CARD)
    staff: list[AuthMethod] = _methods(AuthMethod.PASSWORD_TOTP, AuthMethod.TOKEN)
    system: list[AuthMethod] = _methods(AuthMethod.ORG_CERTIFICATE)
    admin: list[AuthMethod] = _methods(AuthMethod.CARD, AuthMethod.PASSWORD_TOTP)

    def allowed(self, account_class: str) -> frozenset[AuthMethod]:
        return frozenset(self.allowed_in_order(account_class))

    def allowed_in_order(self, account_class: str) -> list[AuthMethod]:
        methods: list[AuthMethod] = getattr(self, account_class, [])
        return list(methods)


# `policy.password_login_classes` (deprecated): the classes given a password
# alone on top of the default methods.
ACCOUNT_CLASSES = ("practitioner", "staff", "system", "admin")


class RelayDNCheck(enum.StrEnum):
    STRICT = "strict"  # the receiving MTA's DN must be one the whitelist lists for the domain
    OFF = "off"  # chain and host name only


class PolicySettings(_Model):
    flows_file: Path | None = None
    whitelist_file: Path | None = None
    # Where the agency publishes the whitelist (https): fetched every
    # `whitelist_refresh` seconds; a valid document replaces `whitelist_file`
    # (the last good copy, needed with a URL), a broken or unreachable one
    # keeps it. `whitelist_ca_file`: CAs for that HTTPS (default: the system's).
    whitelist_url: str | None = None
    whitelist_refresh: float = Field(default=21600.0, ge=60)
    whitelist_ca_file: Path | None = None
    # Allowed authentication methods per account class.
    login_methods: LoginMethodSettings = Field(default_factory=LoginMethodSettings)
    # Deprecated (use login_methods): classes that may also log in with a
    # password alone. Still read, with a warning (`deprecations`).
    password_login_classes: list[str] | None = None
    # Require a client certificate on MX connections (mutual TLS between
    # operators), its DN listed in the whitelist for the sender's domain.
    # `mssctl init` writes it on; the default stays off so that an upgrade
    # does not start refusing the peers of an existing instance whose file
    # never set it.
    mx_require_client_cert: bool = False
    # Only relay to whitelisted domains.
    enforce_whitelist: bool = True
    # Outbound: the receiving MTA's certificate DN must be listed for the
    # destination domain (when a whitelist is loaded and lists the domain).
    relay_dn_check: RelayDNCheck = RelayDNCheck.STRICT
    # Mailbox that receives mail for "postmaster" (RFC 5321 4.5.1: <postmaster>
    # and postmaster@<each served domain> must be accepted) when no mailbox of
    # that exact name exists. `mssctl init` creates postmaster@<domain>.
    postmaster: str | None = None
    # Login throttling across connections, processes and nodes.
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    # A certificate that is not a person card (organisation, APP systems)
    # logs in only through a pinned fingerprint (`mssctl account pin`). Off
    # by default so that an upgrade does not lock existing APP systems out;
    # `mssctl init` writes it on for new instances.
    require_org_cert_pinning: bool = False
    # Issuer shown by authenticator apps for one-time codes (otpauth:// URI);
    # default: the first served domain.
    totp_issuer: str | None = None

    @field_validator("whitelist_url")
    @classmethod
    def _whitelist_https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return v

    @model_validator(mode="after")
    def _whitelist_copy(self) -> PolicySettings:
        if self.whitelist_url is not None and self.whitelist_file is None:
            raise ValueError("whitelist_url needs whitelist_file: where the last good copy "
                             "is kept (and read at start)")
        return self

    @field_validator("password_login_classes")
    @classmethod
    def _known_classes(cls, v: list[str] | None) -> list[str] | None:
        for name in v or ():
            if name not in ACCOUNT_CLASSES:
                close = difflib.get_close_matches(name, ACCOUNT_CLASSES, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"unknown account class {name!r}{hint}; "
                                 f"expected {', '.join(ACCOUNT_CLASSES)}")
        return v

    @model_validator(mode="after")
    def _migrate_password_classes(self) -> PolicySettings:
        classes = self.password_login_classes
        if classes is None:
            return self
        if "login_methods" in self.model_fields_set:
            raise ValueError("password_login_classes is replaced by login_methods: "
                             "remove it (login_methods is also set)")
        methods = self.login_methods
        updates = {name: [*getattr(methods, name), AuthMethod.PASSWORD]
                   for name in classes if AuthMethod.PASSWORD not in getattr(methods, name)}
        object.__setattr__(self, "login_methods", methods.model_copy(update=updates))
        return self

    def deprecations(self) -> list[str]:
        if self.password_login_classes is None:
            return []
        return ["policy.password_login_classes is deprecated: it now adds `password` to "
                "the default policy.login_methods of "
                f"{', '.join(self.password_login_classes) or 'no class'}; "
                "write policy.login_methods instead"]


class TokenValidation(enum.StrEnum):
    JWKS = "jwks"  # signature with the provider's published keys, then the claims
    INTROSPECTION = "introspection"  # RFC 7662: ask the provider (revocation seen at once)


class IdentityProviderSettings(_Model):
    """An OpenID Connect provider whose access tokens log in (SASL
    OAUTHBEARER and XOAUTH2, method "token")."""

    # https URL; its /.well-known/openid-configuration names the keys.
    issuer: str
    # The "aud" a token must carry (the client id the provider gives this server).
    audience: str
    # The claim naming the account login: email, preferred_username, upn ...
    login_claim: str = "email"
    validation: list[TokenValidation] = Field(
        default_factory=lambda: [TokenValidation.JWKS], min_length=1)
    # CA certificates to trust for the provider's HTTPS (default: the system's).
    ca_file: Path | None = None
    # Introspection client credentials (HTTP Basic); the secret in a file.
    client_id: str | None = None
    client_secret_file: Path | None = None
    # Default: the provider's introspection_endpoint metadata.
    introspection_endpoint: str | None = None
    leeway: float = Field(default=60.0, ge=0, le=600)  # seconds of clock skew on exp/nbf
    jwks_cache: float = Field(default=3600.0, ge=10)  # seconds keys are kept
    timeout: float = Field(default=10.0, gt=0, le=120)  # per HTTPS request

    @field_validator("issuer", "introspection_endpoint")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return v

    @model_validator(mode="after")
    def _introspection_credentials(self) -> IdentityProviderSettings:
        if TokenValidation.INTROSPECTION in self.validation and (
                not self.client_id or self.client_secret_file is None):
            raise ValueError("introspection needs client_id and client_secret_file")
        return self


class LdapBind(enum.StrEnum):
    """How the sync binds to the directory."""

    SIMPLE = "simple"  # bind_dn and the password in bind_password_file
    SASL_EXTERNAL = "sasl-external"  # TLS client certificate (client_cert_file, client_key_file)
    ANONYMOUS = "anonymous"


class LdapScope(enum.StrEnum):
    SUBTREE = "subtree"
    ONE = "one"  # the base's children only


class LdapSearch(_Model):
    """Where people (or groups) are, and which entries count."""

    base_dn: str = Field(min_length=1)
    filter: str = "(objectClass=inetOrgPerson)"
    scope: LdapScope = LdapScope.SUBTREE

    @field_validator("filter")
    @classmethod
    def _parenthesised(cls, v: str) -> str:
        v = v.strip()
        if not (v.startswith("(") and v.endswith(")")) or v.count("(") != v.count(")"):
            raise ValueError("expected an LDAP filter in parentheses, e.g. (objectClass=person)")
        return v


class LdapGroupSearch(LdapSearch):
    filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    # Values are member DNs (groupOfNames, Active Directory's group).
    member_attribute: str = "member"
    # The group's name, as `grants[].group` may give it.
    name_attribute: str = "cn"


class LdapAttributes(_Model):
    """Directory attribute -> account field. `disabled`: Active Directory's
    `userAccountControl` is read as a bit mask (bit 2, ACCOUNTDISABLE);
    any other attribute disables when it holds TRUE, true, yes or 1."""

    login: str = "mail"
    mail: str | None = "mail"  # the address of the person's own (PER) box; None: no box
    idnat: str | None = None  # IdNat_PS (RPPS): e.g. employeeNumber
    display_name: str = "cn"
    account_class: str | None = None  # mapped by `class_map`, else `default_class`
    disabled: str | None = None


ALL_RIGHTS_LETTERS = "lrswipkxtea"


class LdapGrant(_Model):
    """Members of `group` get `rights` (and the send-as right) on `mailbox`."""

    group: str = Field(min_length=1)  # a group DN, or its name (groups.name_attribute)
    mailbox: str = Field(min_length=3)
    rights: str = ALL_RIGHTS_LETTERS
    send_as: bool = False

    @field_validator("rights")
    @classmethod
    def _rights(cls, v: str) -> str:
        bad = sorted(set(v) - set(ALL_RIGHTS_LETTERS))
        if bad or not v:
            raise ValueError(f"expected RFC 4314 rights among {ALL_RIGHTS_LETTERS}"
                             + (f", got {''.join(bad)!r}" if bad else ", got none"))
        return "".join(r for r in ALL_RIGHTS_LETTERS if r in v)

    @field_validator("mailbox")
    @classmethod
    def _address(cls, v: str) -> str:
        local, at, domain = v.strip().lower().rpartition("@")
        if not at or not local or not domain:
            raise ValueError(f"expected a mailbox address, got {v!r}")
        return f"{local}@{domain}"


class LdapSettings(_Model):
    """The hospital's directory (OpenLDAP, Active Directory): `mssctl ldap
    sync` (and `serve` every `sync_interval` seconds) makes its people
    accounts and its service groups grants; the `ldap` login method checks
    passwords by binding as the account's entry."""

    # Tried in order (failover): ldap://host:389 or ldaps://host:636.
    urls: list[str] = Field(min_length=1)
    start_tls: bool = False  # ldap:// only: upgrade with StartTLS
    ca_file: Path | None = None  # CAs for the directory's certificate (default: the system's)
    bind: LdapBind = LdapBind.SIMPLE
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    client_cert_file: Path | None = None  # sasl-external
    client_key_file: Path | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)  # connect and per operation
    page_size: int = Field(default=500, ge=1, le=100_000)  # RFC 2696 paged searches
    people: LdapSearch
    attributes: LdapAttributes = Field(default_factory=LdapAttributes)
    default_class: str = "staff"
    # Value of attributes.account_class (compared case-insensitively) -> class.
    class_map: dict[str, str] = Field(default_factory=dict)
    groups: LdapGroupSearch | None = None
    grants: list[LdapGrant] = Field(default_factory=list)
    # `serve` syncs every this many seconds (0: only `mssctl ldap sync`);
    # one process of one node at a time (a lease in the database).
    sync_interval: float = Field(default=900.0, ge=0)
    # The lease lapses this long after a holder took it (a dead node's).
    sync_lease: float = Field(default=1800.0, ge=30)
    # Password logins by directory bind: at most this many binds at once
    # per process (connections kept open and reused).
    bind_pool_size: int = Field(default=4, ge=1, le=64)

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"expected ldap:// or ldaps:// URLs, got {url!r}")
        return v

    @field_validator("default_class")
    @classmethod
    def _default_class(cls, v: str) -> str:
        return _account_class(v)

    @field_validator("class_map")
    @classmethod
    def _class_map(cls, v: dict[str, str]) -> dict[str, str]:
        return {str(k).lower(): _account_class(c) for k, c in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> LdapSettings:
        if self.start_tls and any(u.lower().startswith("ldaps://") for u in self.urls):
            raise ValueError("start_tls is for ldap:// URLs (ldaps:// is TLS from the start)")
        if self.bind is LdapBind.SIMPLE and (not self.bind_dn or self.bind_password_file is None):
            raise ValueError("bind: simple needs bind_dn and bind_password_file")
        if self.bind is LdapBind.SASL_EXTERNAL:
            if self.client_cert_file is None or self.client_key_file is None:
                raise ValueError("bind: sasl-external needs client_cert_file and "
                                 "client_key_file")
            if not self.start_tls and not all(u.lower().startswith("ldaps://")
                                              for u in self.urls):
                raise ValueError("bind: sasl-external needs TLS: ldaps:// URLs or start_tls")
        if self.grants and self.groups is None:
            raise ValueError("grants need groups (where the service groups are)")
        if self.bind is LdapBind.SIMPLE and self.cleartext_urls():
            raise ValueError("bind: simple would send the password in clear to "
                             f"{', '.join(self.cleartext_urls())}: use ldaps:// or start_tls")
        return self

    def cleartext_urls(self) -> list[str]:
        """The URLs a password would cross the network in clear to: ldap://
        without StartTLS, to a host that is not the loopback."""
        if self.start_tls:
            return []
        out = []
        for url in self.urls:
            if not url.lower().startswith("ldap://"):
                continue
            host = url[len("ldap://"):].split("/", 1)[0].rsplit(":", 1)[0].strip("[]").lower()
            if host not in ("127.0.0.1", "::1", "localhost"):
                out.append(url)
        return out


def _account_class(name: str) -> str:
    if name not in ACCOUNT_CLASSES:
        close = difflib.get_close_matches(name, ACCOUNT_CLASSES, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown account class {name!r}{hint}; "
                         f"expected {', '.join(ACCOUNT_CLASSES)}")
    return name


class MetricsSettings(_Model):
    """The Prometheus endpoint (`mssctl serve`): plain HTTP, no
    authentication, so loopback by default; a non-loopback address is
    refused by the loader unless `allow_remote` says the network in front
    of it is trusted (README, "Metrics and logs")."""

    address: str = "127.0.0.1"
    port: Port = 9154
    # Where the worker processes keep their counters (prometheus_client's
    # multiprocess mode); default: `metrics/` beside the settings file.
    # Emptied at every start.
    directory: Path | None = None
    # Seconds the gauges read from the database (queue depth, oldest entry)
    # are reused between scrapes.
    cache_seconds: float = Field(default=5.0, ge=0, le=300)
    allow_remote: bool = False

    @field_validator("address")
    @classmethod
    def _ip_address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address (e.g. 127.0.0.1)") from None
        return v.strip("[]")


class LogFormat(enum.StrEnum):
    TEXT = "text"  # one human-readable line per record (default)
    JSON = "json"  # one JSON object per line, for log shippers


class LoggingSettings(_Model):
    format: LogFormat = LogFormat.TEXT


class AutoconfigSettings(_Model):
    """What the `autoconfig` listeners tell mail clients (Thunderbird's
    config-v1.1, Outlook's Autodiscover)."""

    # The server name clients connect to for IMAP and SMTP (default: hostname).
    server: str | None = None
    # The provider's name clients show (default: the first served domain).
    display_name: str | None = None


class Settings(_Model):
    hostname: str = "localhost"
    domains: list[str] = Field(min_length=1)
    listeners: list[ListenerSettings] = Field(min_length=1)
    database: DatabaseSettings
    tls: TLSSettings
    limits: LimitSettings = Field(default_factory=LimitSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    audit: AuditSettings
    policy: PolicySettings = Field(default_factory=PolicySettings)
    # An OpenID Connect provider for token logins; none: no token login.
    identity_provider: IdentityProviderSettings | None = None
    # The hospital's directory: account sync and the `ldap` login method.
    ldap: LdapSettings | None = None
    # File of base64 AES-256 keys, one "id:base64key" per line; the last is current.
    key_file: Path
    # Worker processes sharing the listening ports (SO_REUSEPORT); 1 = no fork.
    workers: int = Field(default=1, ge=1, le=64)
    # The Prometheus endpoint; none (the default): no metrics are kept.
    metrics: MetricsSettings | None = None
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    # What `autoconfig` listeners announce.
    autoconfig: AutoconfigSettings = Field(default_factory=AutoconfigSettings)

    @model_validator(mode="after")
    def _ldap_method_needs_ldap(self) -> Settings:
        for name in ACCOUNT_CLASSES:
            if AuthMethod.LDAP not in getattr(self.policy.login_methods, name):
                continue
            if self.ldap is None:
                raise ValueError(f"policy.login_methods.{name} allows ldap, "
                                 "but no ldap section is configured")
            if self.ldap.cleartext_urls():
                raise ValueError(f"policy.login_methods.{name} allows ldap, which would send "
                                 "passwords in clear to "
                                 f"{', '.join(self.ldap.cleartext_urls())}: use ldaps:// or "
                                 "ldap.start_tls")
        return self

    def listeners_for(self, role: ListenerRole) -> list[ListenerSettings]:
        return [lst for lst in self.listeners if lst.role is role]

    def is_local_domain(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return any(d == x.lower() for x in self.domains)
