"""Per-connection IMAP state (RFC 3501 3): who is logged in, what is selected.

The Twisted protocol owns one `Session`; command handlers read and change it.
The per-session sequence view of the selected mailbox lives in
`imapd.view.SelectedView`; the connection-wide settings (TLS, compression,
enabled extensions) live here. Nothing here talks to the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.settings import ListenerSettings, TLSMode
from imapd.namespace import Namespaces, Place
from imapd.notify import NotifySpec
from imapd.parser.commands import State
from imapd.view import SelectedView
from policy.decisions import Identity, Peer, SessionAccess
from policy.sasl import advertised

# IMAP4rev2 (RFC 9051) beside IMAP4rev1: a session is rev1 until the client
# sends ENABLE IMAP4rev2 (RFC 9051 6.3.1, 2.3.2: no \Recent then).
BASE_CAPABILITIES = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE")
AUTHENTICATED_CAPABILITIES = (
    "UIDPLUS", "MOVE", "NAMESPACE", "SPECIAL-USE", "UNSELECT", "CHILDREN",
    "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "CONDSTORE", "QRESYNC", "ACL", "RIGHTS=texk", "QUOTA",
    "QUOTA=RES-STORAGE", "MULTIAPPEND", "CATENATE", "UTF8=ACCEPT",
    "BINARY", "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES", "ESEARCH", "ESORT", "SEARCHRES", "WITHIN", "NOTIFY", "CONTEXT=SEARCH",
    "CONTEXT=SORT",
)

# Message counts a session remembers (`Session.folder_sizes`).
MAX_KNOWN_SIZES = 1000


@dataclass
class Session:
    listener: ListenerSettings
    peer: Peer
    tls: bool = False
    state: State = State.NOT_AUTHENTICATED
    identity: Identity | None = None
    namespaces: Namespaces | None = None
    view: SelectedView | None = None
    selected_place: Place | None = None
    compressed: bool = False
    enabled: set[str] = field(default_factory=set)  # ENABLE'd extensions
    logged_out: bool = False
    failed_commands: int = 0
    failed_auth: int = 0
    append_limit: int = 10 * 1024 * 1024
    # The last check of this session's access (login, SELECT, recheck).
    access: SessionAccess | None = None
    # An identity provider is configured: OAUTHBEARER and XOAUTH2 are offered.
    token_login: bool = False
    # NOTIFY SET (RFC 5465) in force, or None (never set, or NOTIFY NONE).
    notify: NotifySpec | None = None
    # Message counts this session last saw, by mailbox name (SELECT, STATUS
    # MESSAGES): what lets the next SELECT or STATUS of a small folder run
    # on the reactor thread (`quick_size`).
    folder_sizes: dict[str, int] = field(default_factory=dict)
    # Names the session's last LIST or LSUB collected (None: none yet): a
    # short list is collected on the reactor thread the next time.
    listed: int | None = None

    # ------------------------------------------------------------ TLS / auth

    @property
    def starttls_available(self) -> bool:
        return self.listener.tls is TLSMode.STARTTLS and not self.tls

    @property
    def plaintext_login_allowed(self) -> bool:
        """Passwords only over TLS. A listener configured with tls "none" is a
        deliberate plaintext one (loopback tools, tests): allowed there."""
        return self.tls or self.listener.tls is TLSMode.NONE

    @property
    def actor(self) -> str:
        return self.identity.name if self.identity else "-"

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.starttls_available:
                caps.append("STARTTLS")
            # LOGIN: what Thunderbird falls back to after a NO to PLAIN.
            # EXTERNAL only to a client that presented a verified
            # certificate: SASL clients (mbsync's cyrus-sasl) pick EXTERNAL
            # whenever it is offered, and then fail without trying their
            # password. The protocol greets on 993 after the handshake, so
            # this is known.
            plaintext = self.plaintext_login_allowed
            caps.extend("AUTH=" + m for m in advertised(
                passwords=plaintext, tokens=plaintext and self.token_login,
                external=self.tls and self.peer.client_cert is not None))
            if not plaintext:
                caps.append("LOGINDISABLED")
        else:
            caps.extend(AUTHENTICATED_CAPABILITIES)
            caps.append(f"APPENDLIMIT={self.append_limit}")
            if not self.compressed:
                caps.append("COMPRESS=DEFLATE")
        return caps

    @property
    def rev2(self) -> bool:
        """RFC 9051: the client enabled IMAP4rev2 (ESEARCH answers SEARCH,
        no \\Recent, mailbox names in UTF-8)."""
        return "IMAP4REV2" in self.enabled

    @property
    def utf8(self) -> bool:
        """Mailbox names in UTF-8: UTF8=ACCEPT is enabled (RFC 6855), or
        IMAP4rev2 (RFC 9051 5.1: modified UTF-7 is for IMAP4rev1 only)."""
        return "UTF8=ACCEPT" in self.enabled or self.rev2

    # ------------------------------------------------------------ state

    def login(self, identity: Identity, namespaces: Namespaces) -> None:
        self.identity = identity
        self.namespaces = namespaces
        self.state = State.AUTHENTICATED

    def note_size(self, name: str, messages: int) -> None:
        sizes = self.folder_sizes
        if len(sizes) >= MAX_KNOWN_SIZES and name not in sizes:
            sizes.clear()  # a session walking thousands of names: start again
        sizes[name] = messages

    def quick_size(self, name: str, limit: int) -> bool:
        """Whether the folder had at most `limit` messages when this session
        last looked (False when it never did)."""
        known = self.folder_sizes.get(name)
        return known is not None and known <= limit

    def select(self, place: Place, view: SelectedView) -> None:
        self.selected_place = place
        self.view = view
        self.state = State.SELECTED

    def unselect(self) -> SelectedView | None:
        view = self.view
        self.view = None
        self.selected_place = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        return view
