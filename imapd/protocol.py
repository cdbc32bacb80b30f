"""The Twisted side of an IMAP connection: bytes in, responses out.

Bytes go to the pure `CommandReader`; its events are handled one command at a
time, in order (pipelined commands wait in the reader's buffer). Each command
is checked once against its type's allowed states, dispatched through the
explicit table in `imapd.commands`, and finished with the untagged updates
this session may announce at that moment (`SelectedView.flush`), then the
tagged reply. The protocol also provides the connection operations handlers
need (`imapd.commands.base.Context`): reading continuation lines, STARTTLS,
COMPRESS=DEFLATE, IDLE, and FETCH backpressure as a streaming producer.

Flow control, so that one client can neither grow a worker's memory nor hold
its reactor: while the connection cannot process input (a command runs, the
client does not read our replies, or its turn is over) and more than
`INPUT_HIGH_WATER` octets wait, reading from the socket stops until it can
again; compressed input is inflated only as the reader needs it, in bounded
pieces, through the same line and literal limits as plain input; and one
connection's pipelined commands yield the reactor after `TURN_SECONDS`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.tlsconn import close_connection
from conf.settings import ListenerSettings, TLSMode
from imapd import responses
from imapd.commands import DISPATCH
from imapd.commands.context import context_updates
from imapd.commands.fetch import fetch as fetch_handler
from imapd.commands.mailbox import leave_selected
from imapd.commands.notify import read_boxes
from imapd.commands.selected import sync_view
from imapd.errors import (
    APPEND_OVER_LIMIT,
    APPEND_TOO_BIG,
    NOTIFY_OVERFLOW,
    AccessWithdrawn,
    Reply,
    bad,
    not_allowed_now,
    to_reply,
)
from imapd.namespace import SEP
from imapd.notify import NotifySpec, status_key, status_line
from imapd.parser.commands import (
    Check,
    Command,
    Fetch,
    Idle,
    Noop,
    Notify,
    Search,
    SeqRange,
    SequenceSet,
    State,
    Store,
)
from imapd.parser.reader import (
    CommandReader,
    CommandReady,
    LiteralTooLarge,
    NeedContinuation,
    ParseFailure,
    RawLine,
)
from imapd.session import Session
from imapd.view import SelectedView
from imapd.watcher import FolderWatcher, NameChange
from policy.decisions import Peer, SessionAccess
from policy.services import Services
from storage.interface import NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

# The APPEND literal size the reader accepts before authentication.
PREAUTH_MAX_LITERAL = 8 * 1024
# Unprocessed input held while the connection cannot process it; past this,
# the socket is not read until it can (the client's sends then block).
INPUT_HIGH_WATER = 256 * 1024
# Compressed input inflated at a time: 15 KB of DEFLATE can inflate to 10 MiB.
INFLATE_CHUNK = 64 * 1024
# How long one connection's pipelined commands may hold the reactor before
# the others get their turn.
TURN_SECONDS = 0.02

# Commands during which EXPUNGE must not be sent (RFC 3501 7.4.1), unless UID.
_NO_EXPUNGE = (Fetch, Store, Search)
# Commands after which the view is always refreshed from the store (NOTIFY
# SET is an implicit NOOP: RFC 5465 3.1).
_FORCE_SYNC = (Noop, Check, Idle, Notify)
# New messages of the selected mailbox announced with the FETCH attributes
# NOTIFY's MessageNew asks for, at most, in one go: past it the session says
# NOTIFICATIONOVERFLOW and stops its notifications (RFC 5465 5.8) rather
# than stream an unbounded burst (the EXISTS is still sent).
NOTIFY_FETCH_MAX = 1000
# Mailbox events (MailboxName, SubscriptionChange) held for a client that
# does not read, at most; past it, NOTIFICATIONOVERFLOW as above.
NOTIFY_NAMES_MAX = 1000


class ConnectionGone(Exception):
    """The client went away while a handler was waiting on it."""


def _no_delay(transport: Any) -> None:
    """Replies are small and end a round trip: Nagle's algorithm plus the
    client's delayed ACK would add tens of milliseconds to every command."""
    for _ in range(4):
        if transport is None:
            return
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)


@implementer(interfaces.IPushProducer, interfaces.IHandshakeListener)
class IMAPServerProtocol(Protocol, TimeoutMixin):
    def __init__(self, services: Services, listener: ListenerSettings,
                 watcher: FolderWatcher) -> None:
        self.services = services
        self.listener = listener
        self.watcher = watcher
        limits = services.settings.limits
        # Until login, no APPEND literal is wanted: an anonymous connection
        # must not make us buffer a message-sized literal (LOGIN and
        # AUTHENTICATE literals are bounded by the line budget anyway).
        self.reader = CommandReader(max_line=limits.command_line_length,
                                    max_literal=PREAUTH_MAX_LITERAL)
        self.session: Session = None  # type: ignore[assignment]  # set in connectionMade
        self.watch_token: int | None = None
        self.callLater = services.reactor.callLater  # type: ignore[method-assign]
        self._busy = False
        self._closing = False
        self._pumping = False
        self._repump = False
        self._raw_waiter: defer.Deferred[bytes] | None = None
        self._idle_done: defer.Deferred[bytes] | None = None
        self._idle_syncing = False
        self._idle_again = False
        self._paused: defer.Deferred[None] | None = None
        self._after_reply: list[Callable[[], None]] = []
        self._deflate: Any = None
        self._inflate: Any = None
        self._zin = b""  # compressed input not inflated yet
        self._reading_paused = False
        self._next_turn: Any = None  # the DelayedCall of a yielded pump
        self._access_token: int | None = None  # registered with the watcher
        self._access_expiry: Any = None  # DelayedCall at a grant's end
        self._rechecking = False
        self._greeting_pending = False
        self._counted: str | None = None  # the address counted by the factory
        self._login_deadline: Any = None
        # NOTIFY (RFC 5465): the watcher tokens of the watched folders, the
        # folders that changed since last told, and the delivery in progress.
        self._notify_watch: dict[int, int] = {}
        self._notify_dirty: set[int] = set()
        self._notifying = False
        self._notify_again = False
        # Told when the NOTIFY delivery under way ends (`_notify_settled`).
        self._notify_waiters: list[defer.Deferred[None]] = []
        self._notify_names: list[NameChange] = []  # mailbox events not told yet
        self.names_token: int | None = None  # registered for mailbox events

    # ------------------------------------------------------------ connection

    @property
    def _t(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        addr = self._t.getPeer()
        tls = self.listener.tls is TLSMode.IMPLICIT
        peer = Peer(address=getattr(addr, "host", "?"), port=getattr(addr, "port", 0),
                    listener=self.listener.name or "imap", role=self.listener.role, tls=tls)
        self.session = Session(listener=self.listener, peer=peer, tls=tls,
                               append_limit=self.services.settings.limits.message_size,
                               token_login=self.services.authenticator.tokens_enabled)
        self._counted = peer.address  # refused or not, until connectionLost
        if not self.factory.connection_opened(peer.address):
            self._write(responses.bye("Too many connections from your address"))
            self._close()
            return
        self._t.registerProducer(self, True)
        _no_delay(self._t)
        self.setTimeout(self.services.settings.limits.imap_idle_timeout)  # type: ignore[no-untyped-call]
        # Not reset by activity, unlike the idle timeout.
        self._login_deadline = self.services.reactor.callLater(
            self.services.settings.limits.imap_login_timeout, self._login_expired)
        if tls and isinstance(self._t, TLSMemoryBIOProtocol):
            # The greeting's CAPABILITY offers AUTH=EXTERNAL only to a client
            # that presented a certificate, known once the handshake is over
            # (the greeting could not leave before it anyway).
            self._greeting_pending = True
        else:
            self._greet()

    def _greet(self) -> None:
        self._write(responses.untagged_ok(
            responses.capability_code(self.session.capabilities()),
            f"{self.services.settings.hostname} IMAP4rev1 ready"))

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: after the implicit-TLS or STARTTLS handshake."""
        if self.session is None or self._closing:
            return
        self._refresh_peer()
        if self._greeting_pending:
            self._greeting_pending = False
            self._greet()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._closing = True
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        for call in (self._next_turn, self._access_expiry, self._login_deadline):
            if call is not None and call.active():
                call.cancel()
        self._next_turn = self._access_expiry = self._login_deadline = None
        self._zin = b""
        if self._access_token is not None:
            self.watcher.unwatch_access(self._access_token)
            self._access_token = None
        self._unwatch_notify()
        if self._counted is not None:
            self.factory.connection_closed(self._counted)
            self._counted = None
        if self.session is not None and self.session.view is not None:
            leave_selected(self)
        for waiter in (self._raw_waiter, self._idle_done):
            if waiter is not None and not waiter.called:
                waiter.errback(ConnectionGone())
        self._raw_waiter = self._idle_done = None
        # Release a FETCH waiting in drained(): it sees _closing and stops. Not
        # an errback: the transport pauses us during every TLS handshake, when
        # nobody waits, and an unobserved failure is logged as CRITICAL.
        paused, self._paused = self._paused, None
        if paused is not None and not paused.called:
            paused.callback(None)

    def timeoutConnection(self) -> None:
        self._write(responses.bye("Autologout; idle for too long"))
        # A client that reads nothing would keep a graceful close (which
        # flushes our output first) open forever.
        self._close(abort=self._paused is not None)

    def _login_expired(self) -> None:
        self._login_deadline = None
        if self._closing or self.session.state is not State.NOT_AUTHENTICATED:
            return
        log.info("no login within %.0f s from %s on %s",
                 self.services.settings.limits.imap_login_timeout, self.session.peer.address,
                 self.listener.name)
        self._write(responses.bye("Autologout; no login in time"))
        self._close()

    def _close(self, *, abort: bool = False) -> None:
        self._closing = True
        transport = self._t
        if transport is None:
            return
        if abort:
            transport.abortConnection()
            return
        # A TLS transport waits for the client's close_notify before closing
        # TCP; clients such as mbsync wait for us to close first.
        close_connection(transport, self.services.reactor,
                         self.services.settings.limits.tls_handshake_timeout)

    # ------------------------------------------------------------ producer

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.called:
            paused.callback(None)
        # Commands held while the client was not reading may start now.
        self._pump()
        self._kick_notify()  # and the events held meanwhile may go

    def stopProducing(self) -> None:
        self._closing = True

    # ------------------------------------------------------------ input

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()  # type: ignore[no-untyped-call]
        if self._inflate is not None:
            self._zin += data  # inflated as the reader needs it (`_inflate_more`)
        else:
            self.reader.feed(data)
        self._pump()

    def _stalled(self) -> bool:
        """True while input cannot be processed: a command runs (and waits for
        no line of the client's), the client does not read our replies, or
        this connection's turn on the reactor is over."""
        waiting_raw = self._raw_waiter is not None or self._idle_done is not None
        return ((self._busy and not waiting_raw) or self._paused is not None
                or self._next_turn is not None)

    def _pump(self) -> None:
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        clock = self.services.reactor
        started = clock.seconds()
        try:
            while True:
                self._repump = False
                if self._pump_once():
                    if (clock.seconds() - started > TURN_SECONDS and not self._stalled()
                            and (self.reader.buffered or self._zin)):
                        self._next_turn = self.callLater(0, self._take_turn)  # type: ignore[no-untyped-call]
                        break
                    continue
                if not self._repump and not self._inflate_more():
                    break
        finally:
            self._pumping = False
        self._flow()

    def _take_turn(self) -> None:
        self._next_turn = None
        self._pump()

    def _inflate_more(self) -> bool:
        """Inflates the next piece of compressed input for the reader; False
        when there is none or it cannot be processed now."""
        if not self._zin or self._inflate is None or self._closing or self._stalled():
            return False
        try:
            data = self._inflate.decompress(self._zin, INFLATE_CHUNK)
        except zlib.error:
            self._zin = b""
            self._write(responses.bye("Invalid compressed data"))
            self._close()
            return False
        self._zin = self._inflate.unconsumed_tail
        self.reader.feed(data)
        return True

    def _flow(self) -> None:
        """Stops reading from the socket while input piles up that cannot be
        processed now; reads again as soon as it can be."""
        transport = self.transport
        if transport is None or self._closing:
            return
        stalled = self._stalled()
        if stalled and not self._reading_paused:
            if len(self._zin) + self.reader.buffered > INPUT_HIGH_WATER:
                self._reading_paused = True
                transport.pauseProducing()
        elif not stalled and self._reading_paused:
            self._reading_paused = False
            transport.resumeProducing()

    def _pump_once(self) -> bool:
        if self._closing or self.transport is None or self._stalled():
            return False
        waiting_raw = self._raw_waiter is not None or self._idle_done is not None
        event = self.reader.next_event()
        if event is None:
            return False
        if isinstance(event, RawLine):
            waiter = self._raw_waiter or self._idle_done
            self._raw_waiter = self._idle_done = None
            if waiter is not None:
                waiter.callback(event.data)
        elif isinstance(event, CommandReady):
            self._start(event.command)
        elif isinstance(event, NeedContinuation):
            if self._refuse_anonymous_append(event.tag, self.reader.command_name == "APPEND"):
                # No "+": the client sends nothing more for this command.
                self.reader.reject_literal()
            else:
                self._write(responses.continuation(b"Ready for literal data"))
        elif isinstance(event, LiteralTooLarge):
            if not self._refuse_anonymous_append(event.tag, True):  # only APPEND has these
                reply = APPEND_OVER_LIMIT if event.total else APPEND_TOO_BIG
                self._write(reply.line(event.tag))
        elif isinstance(event, ParseFailure) and event.tag is None and waiting_raw:
            # The continuation line (AUTHENTICATE response, IDLE's DONE) was
            # over max_line: the waiting command ends with a tagged BAD.
            waiter = self._raw_waiter or self._idle_done
            self._raw_waiter = self._idle_done = None
            if waiter is not None:
                waiter.errback(bad(event.message))
        elif isinstance(event, ParseFailure):
            self._write(Reply("BAD", None, event.message).line(event.tag or "*"))
            self._count_failure()
            if event.fatal:
                self._close()
        return True

    def _refuse_anonymous_append(self, tag: str, append: bool) -> bool:
        """APPEND before authentication is answered at once, its literal unread."""
        if not append or self.session.state is not State.NOT_AUTHENTICATED:
            return False
        self._write(not_allowed_now("APPEND").line(tag))
        self._count_failure()
        return True

    def _count_failure(self) -> None:
        self.session.failed_commands += 1
        if self.session.failed_commands >= self.services.settings.limits.bad_commands:
            self._write(responses.bye("Too many invalid commands"))
            self._close()

    # ------------------------------------------------------------ commands

    def _start(self, command: Command) -> None:
        self._busy = True
        d = defer.ensureDeferred(self._execute(command))
        d.addErrback(self._crashed, command)

    def _crashed(self, failure: Failure, command: Command) -> None:
        if not failure.check(ConnectionGone):  # type: ignore[no-untyped-call]
            reply = to_reply(failure.value or Exception(), context=f"{type(command).name} (protocol)")
            self._write(reply.line(command.tag))
        self._busy = False
        self._pump()  # a pipelined command must not wait for more input

    async def _execute(self, command: Command) -> None:
        session = self.session
        state = session.state
        reply: Reply
        if state not in type(command).allowed_states:
            reply = not_allowed_now(type(command).name)
        else:
            if state is State.NOT_AUTHENTICATED and session.tls:
                self._refresh_peer()
            try:
                if state is not State.NOT_AUTHENTICATED and self._access_stale():
                    await self._recheck_access()
                reply = await DISPATCH[type(command)](self, command)
            except ConnectionGone:
                return
            except AccessWithdrawn as exc:
                self._end_withdrawn(exc)
                return
            except Exception as exc:  # every error becomes a reply, never a drop
                reply = to_reply(exc, context=type(command).name)
        if self._closing:
            return
        if reply.status == "BAD":
            self._count_failure()
        elif reply.status == "OK":
            # Only consecutive errors end a session (a long-lived client may
            # hit an occasional BAD over days).
            session.failed_commands = 0
        await self._report_updates(command)
        if self._closing:
            return
        self._write(reply.line(command.tag))
        if session.failed_auth >= self.services.settings.limits.failed_auth:
            self._write(responses.bye("Too many failed authentications"))
            self._close()
            return
        if session.logged_out:
            self._close()
            return
        if state is State.NOT_AUTHENTICATED and session.state is not State.NOT_AUTHENTICATED:
            self.reader.max_literal = self.services.settings.limits.message_size
            self.reader.max_append_total = self.services.settings.limits.imap_append_octets
            if self._access_token is None:
                self._access_token = self.watcher.watch_access(self.on_access_changed)
        self.reader.utf8 = session.utf8  # for the next command's mailbox names
        actions, self._after_reply = self._after_reply, []
        for action in actions:
            action()
        self._busy = False
        self._pump()
        self._kick_notify()

    async def _report_updates(self, command: Command) -> None:
        view = self.session.view
        if view is None or self.session.logged_out:
            return  # nothing may follow BYE but the tagged OK
        try:
            await sync_view(self, force=isinstance(command, _FORCE_SYNC))
        except Exception:
            log.warning("could not refresh the selected view", exc_info=True)
        view = self.session.view
        if view is None:
            return
        allow_expunge = not (isinstance(command, _NO_EXPUNGE) and not getattr(command, "uid", False))
        lines = await self._announce(view, allow_expunge)
        if lines:
            self._write(b"".join(lines))

    async def _announce(self, view: SelectedView, allow_expunge: bool, *,
                        idle: bool = False) -> list[bytes]:
        """What is pending and may be said now (`SelectedView.flush`), with
        the updating contexts' changes around it. `idle`: from IDLE, which
        may end while the contexts are computed; then only their REMOVEFROM
        responses (valid at any time) are returned, the rest waits for the
        end of the command."""
        lines = await self._context_updates(view)
        if self.session.view is not view:
            return []
        if idle and (self._idle_done is None or self._closing):
            return lines
        lines += view.flush(allow_expunge)
        if view.contexts and self.session.view is view and any(
                c.state != view.state() for c in view.contexts.values()):
            # The expunges just told renumbered the messages: a key naming
            # sequence numbers may choose others now.
            lines += await self._context_updates(view)
            lines += view.flush(allow_expunge)
        return lines

    async def _context_updates(self, view: SelectedView) -> list[bytes]:
        """RFC 5267 4.3: the updating contexts' REMOVEFROM responses (their
        ADDTO ones come from `flush`); none when they cannot be computed now
        (they are, at the next moment, the view's state still differing)."""
        if not view.contexts:
            return []
        try:
            return await context_updates(self, view)
        except AccessWithdrawn as exc:
            # Its store calls are guarded like a command's: the session
            # ends, as it would at its next command (found by review: the
            # refusal was swallowed here, and the denial it had recorded
            # then passed for a fresh check).
            self._end_withdrawn(exc)
            return []
        except ConnectionGone:
            return []
        except Exception:  # as a failed sync: the client is told later
            log.warning("could not update the search contexts", exc_info=True)
            return []

    # ------------------------------------------------------------ access

    def _selected_mailbox(self) -> Any:
        place = self.session.selected_place
        return place.mailbox if place is not None else None

    def _selected_folder(self) -> str | None:
        """The selected folder: a grant on that folder alone counts too."""
        place = self.session.selected_place
        return place.folder if place is not None else None

    def _folder_now(self) -> Callable[[Any], str | None]:
        """For a store call that checks the session's access: the selected
        folder's name as it is in the store now, found by its id. Another
        session may have renamed it since SELECT, and folder grants follow
        the folder, not the name: judged by the old name, the session would
        keep a grant moved away with its folder, or gain one given to a new
        folder made under the old name. A folder gone keeps its last name
        (its messages cannot be read any more)."""
        place, view = self.session.selected_place, self.session.view
        if place is None:
            return lambda store: None
        if view is None:
            return lambda store: place.folder
        folder_id, name = view.folder_id, place.folder

        def now(store: Any) -> str | None:
            try:
                return store.get_folder_by_id(folder_id).name  # type: ignore[no-any-return]
            except NotFound:
                return name

        return now

    def _follow_rename(self, name: str | None) -> None:
        """The selected folder was renamed elsewhere: the session goes on
        under its new name (audit events name the folder as it is now)."""
        place = self.session.selected_place
        if place is not None and name is not None and name != place.folder:
            from dataclasses import replace

            self.session.selected_place = replace(place, folder=name)

    def _access_stale(self) -> bool:
        """Must the session's access be checked again before it goes on? When
        it was never checked, when the selected mailbox is not the one it was
        checked for, when the store's access epoch (as the watcher last read
        it) moved, or when a grant reached its end. Costs no I/O."""
        session = self.session
        access = session.access
        if session.identity is None:
            return False
        if access is None or not access.decision.allowed:
            return True  # a refusal recorded is never a pass
        mailbox = self._selected_mailbox()
        if mailbox is not None and access.mailbox_id != mailbox.id:
            return True
        epoch = self.watcher.access_epoch
        if epoch is not None and epoch != access.epoch:
            return True
        until = access.valid_until
        return until is not None and self.services.policy.now() >= until

    def set_access(self, access: SessionAccess) -> None:
        """Records a check of the session's access (login, SELECT, recheck)
        and wakes the session when a grant it relies on ends by itself."""
        self.session.access = access
        if self._access_expiry is not None and self._access_expiry.active():
            self._access_expiry.cancel()
        self._access_expiry = None
        until = access.valid_until
        if until is not None and access.decision.allowed and not self._closing:
            delay = max(0.0, (until - self.services.policy.now()).total_seconds())
            self._access_expiry = self.callLater(delay, self.on_access_changed)  # type: ignore[no-untyped-call]

    async def _recheck_access(self) -> None:
        """Raises AccessWithdrawn when the session lost its access."""
        identity, mailbox, folder_now = (self.session.identity, self._selected_mailbox(),
                                         self._folder_now())
        policy, store = self.services.policy, self.services.store

        def check() -> tuple[SessionAccess, str | None]:
            assert identity is not None  # checked once logged in
            with store.read_scope():
                folder = folder_now(store)
                return policy.session_access(identity, mailbox, folder), folder

        access, folder = await self.run(check)
        self._follow_rename(folder)
        self.set_access(access)
        if not access.decision.allowed:
            raise AccessWithdrawn(access.decision.reason)

    def on_access_changed(self) -> None:
        """The watcher saw the access epoch move (or a grant ended): a session
        between commands or in IDLE checks now, so that an idling session of
        a disabled account ends within the watcher's interval; a session in
        the middle of a command checks at its next store call or command."""
        if self._closing or self.session is None:
            return
        if not self._access_stale():
            self._kick_notify()  # NOTIFY's watched mailboxes are resolved again
            return
        if (self._busy and self._idle_done is None) or self._rechecking:
            return
        self._rechecking = True

        def done(result: object) -> None:
            self._rechecking = False
            if isinstance(result, Failure):
                if result.check(AccessWithdrawn):  # type: ignore[no-untyped-call]
                    self._end_withdrawn(result.value)  # type: ignore[arg-type]
                else:
                    log.warning("access recheck failed: %s", result.getErrorMessage())
            else:
                self._kick_notify()

        defer.ensureDeferred(self._recheck_access()).addBoth(done)

    def _end_withdrawn(self, exc: AccessWithdrawn) -> None:
        if self._closing:
            return
        self._write(exc.bye())
        self._close()

    async def _guarded(self, call: Callable[..., Any], fn: Callable[..., T],
                       args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        session = self.session
        known, identity = session.access, session.identity
        mailbox, folder_now = self._selected_mailbox(), self._folder_now()
        policy, store = self.services.policy, self.services.store
        renamed: list[str | None] = []

        def checked() -> tuple[SessionAccess | None, Any]:
            assert identity is not None  # selected state: logged in
            # The epoch and the call's reads in one transaction (one snapshot:
            # what is read is what the access was checked against).
            with store.read_scope():
                fresh = None
                if (known is None or not known.decision.allowed
                        or (mailbox is not None and known.mailbox_id != mailbox.id)
                        or store.access_epoch() != known.epoch
                        or (known.valid_until is not None
                            and policy.now() >= known.valid_until)):
                    folder = folder_now(store)
                    renamed.append(folder)
                    fresh = policy.session_access(identity, mailbox, folder)
                    if not fresh.decision.allowed:
                        return fresh, None
                return fresh, fn(*args, **kwargs)

        access, result = await call(checked)
        if renamed:
            self._follow_rename(renamed[0])
        if access is not None:
            self.set_access(access)
            if not access.decision.allowed:
                raise AccessWithdrawn(access.decision.reason)
        return result  # type: ignore[no-any-return]

    async def run_selected(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._guarded(self.services.runner.run, fn, args, kwargs)

    async def run_selected_quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._guarded(self.services.runner.run_quick, fn, args, kwargs)

    async def run_write_selected(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._guarded(self.services.runner.run_write, fn, args, kwargs)

    def _refresh_peer(self) -> None:
        tls = self.services.tls
        if tls is None:
            return
        try:
            cert = tls.peer_certificate(self.transport)
            info = tls.tls_info(self.transport)
        except Exception:  # no TLS connection object yet
            log.debug("no TLS information", exc_info=True)
            return
        version, cipher = info if info else (None, None)
        self.session.peer = replace(self.session.peer, tls=True, client_cert=cert,
                                    tls_version=version, cipher=cipher)

    # ------------------------------------------------------------ Context API

    def send(self, data: bytes) -> None:
        if data:
            self._write(data)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await self.services.runner.run(fn, *args, **kwargs)
        return result

    async def run_quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await self.services.runner.run_quick(fn, *args, **kwargs)
        return result

    async def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await self.services.runner.run_write(fn, *args, **kwargs)
        return result

    async def read_line(self, prompt: bytes) -> bytes:
        self._write(responses.continuation(prompt))
        self._raw_waiter = defer.Deferred()
        waiter = self._raw_waiter
        self.reader.next_line_raw()
        self._pump()
        line: bytes = await waiter
        return line

    async def drained(self) -> None:
        while self._paused is not None:
            await self._paused
        if self._closing:
            raise ConnectionGone()

    def start_tls(self) -> None:
        def switch() -> None:
            # Anything pipelined after STARTTLS was sent in plaintext: drop it.
            self.reader.take_buffered()
            factory = self.services.tls.server_context_factory(self.listener)
            self._t.startTLS(factory)
            self.session.tls = True
            self.session.peer = self.session.peer.__class__(
                address=self.session.peer.address, port=self.session.peer.port,
                listener=self.session.peer.listener, role=self.session.peer.role, tls=True)

        if self.services.tls is None or not hasattr(self.transport, "startTLS"):
            raise bad("STARTTLS not available")
        self._after_reply.append(switch)

    def start_compression(self) -> None:
        def switch() -> None:
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._inflate = zlib.decompressobj(-15)
            self.session.compressed = True
            # What the client pipelined after COMPRESS is already compressed.
            self._zin = self.reader.take_buffered()

        self._after_reply.append(switch)

    async def idle(self) -> None:
        limits = self.services.settings.limits
        # An idling client renews IDLE within this (RFC 2177: at least 29 min).
        self.setTimeout(limits.imap_idle_command_timeout)  # type: ignore[no-untyped-call]
        try:
            await self._idle()
        finally:
            if not self._closing:
                self.setTimeout(limits.imap_idle_timeout)  # type: ignore[no-untyped-call]

    async def _idle(self) -> None:
        self._write(responses.continuation(b"idling"))
        self._idle_done = defer.Deferred()
        done = self._idle_done
        self.reader.next_line_raw()
        try:
            try:
                await self._idle_report()
            except Exception:
                # The client idles on regardless (a store hiccup must not end
                # IDLE under it); the next change or DONE syncs again.
                log.warning("IDLE: could not report changes", exc_info=True)
            self._pump()
            line: bytes = await done
        finally:
            if self._idle_done is done:
                # Never leave a waiter behind: the next command line would
                # be swallowed as IDLE's continuation.
                self._idle_done = None
                self.reader.cancel_raw()
        await self._notify_settled()
        if line.strip().upper() != b"DONE":
            raise bad("Expected DONE")

    async def _notify_settled(self) -> None:
        """Waits for a NOTIFY delivery begun during IDLE that is still reading
        the store at DONE: what it tells comes before IDLE's tagged OK, never
        in the middle of the next command (an EXPUNGE during a FETCH, RFC
        3501 7.4.1). Today the watcher's shared query makes the end of IDLE
        wait for it anyway; this does not rely on that."""
        while self._notifying and not self._closing:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._notify_waiters.append(waiter)
            await waiter

    def on_folder_changed(self, folder_id: int) -> None:
        view = self.session.view if self.session is not None else None
        if view is None or view.folder_id != folder_id:
            return
        view.dirty = True
        notify = self.session.notify
        if notify is not None and notify.selected is not None:
            self._kick_notify()  # told as it happens, not only in IDLE
        elif self._idle_done is not None:
            defer.ensureDeferred(self._idle_report()).addErrback(
                lambda f: log.warning("IDLE update failed: %s", f.value)
            )

    async def _idle_report(self) -> None:
        if self._idle_syncing:
            self._idle_again = True
            return
        self._idle_syncing = True
        try:
            while True:
                self._idle_again = False
                if self.session.view is not None:
                    await sync_view(self, force=True)
                view = self.session.view
                if view is not None and self._idle_done is not None and not self._closing:
                    lines = await self._announce(view, True, idle=True)
                    if lines and not self._closing:
                        self._write(b"".join(lines))
                if not self._idle_again:
                    break
        finally:
            self._idle_syncing = False

    # ------------------------------------------------------------ NOTIFY

    def set_notify(self, spec: NotifySpec | None) -> None:
        """RFC 5465: watch the folders of `spec` (None: NOTIFY NONE)."""
        self._unwatch_notify()
        self.session.notify = spec
        if spec is None:
            return
        if any(e in ("MailboxName", "SubscriptionChange") for g in spec.groups for e in g.events):
            self.names_token = self.watcher.watch_names(self._on_name_change)
        for fid in spec.boxes:
            self._notify_watch[fid] = self.watcher.watch(fid, self._on_notify_folder)

    def _watch_boxes(self, spec: NotifySpec) -> None:
        """The folder watches follow `spec.boxes` (resolved again)."""
        for fid in list(self._notify_watch):
            if fid not in spec.boxes:
                self.watcher.unwatch(fid, self._notify_watch.pop(fid))
                self._notify_dirty.discard(fid)
        for fid in spec.boxes:
            if fid not in self._notify_watch:
                self._notify_watch[fid] = self.watcher.watch(fid, self._on_notify_folder)

    def _unwatch_notify(self) -> None:
        for fid, token in self._notify_watch.items():
            self.watcher.unwatch(fid, token)
        self._notify_watch = {}
        self._notify_dirty.clear()
        self._notify_names.clear()
        if self.names_token is not None:
            self.watcher.unwatch_names(self.names_token)
            self.names_token = None

    def _on_name_change(self, change: NameChange) -> None:
        spec = self.session.notify if self.session is not None else None
        if spec is None or self._closing:
            return
        if len(self._notify_names) >= NOTIFY_NAMES_MAX:
            # RFC 5465 5.8: more than the client reads; stop, say so.
            self._write(NOTIFY_OVERFLOW)
            self.set_notify(None)
            return
        ns = self.session.namespaces
        if ns is not None and not (
                (ns.primary is not None and ns.primary.id == change.mailbox_id)
                or any(am.mailbox.id == change.mailbox_id for am in ns.others)):
            return  # a mailbox this session cannot look up: nothing to tell or resolve
        self._notify_names.append(self._with_subscription(spec, change))
        if change.subscribed is None:
            # A folder of a mailbox it may look up came or went: its boxes
            # are resolved again (found by review: any folder created in any
            # mailbox made every NOTIFY session of the process list all of
            # its mailboxes again).
            spec.epoch = None
        self._kick_notify()

    def _imap_prefix(self, mailbox_id: int, name: str) -> str | None:
        """How this session names the folders of `mailbox_id` ("" for its
        own, the namespace prefix of a shared one), or None when it may not
        look up `name` there."""
        ns = self.session.namespaces
        if ns is None:
            return None
        if ns.primary is not None and ns.primary.id == mailbox_id:
            return ""
        for am in ns.others:
            if am.mailbox.id == mailbox_id and "l" in am.rights_on(name):
                return ns.prefix_of(am)
        return None

    def _with_subscription(self, spec: NotifySpec, change: NameChange) -> NameChange:
        """`change` with `was_subscribed` as the session knows its subscription
        lists now (before any later resolution reads them again), which it
        then updates as the store does: SUBSCRIBE and UNSUBSCRIBE, and a
        RENAME moving the subscriptions of the folder and its inferiors (a
        DELETE leaves them, RFC 3501 6.3.4)."""
        prefix = self._imap_prefix(change.mailbox_id, change.old_name or change.name)
        if prefix is None:
            return change
        subs = spec.subscribed
        name = prefix + change.name
        if change.subscribed is not None:
            (subs.add if change.subscribed else subs.discard)(name)
            return change
        if change.old_name is None:
            return replace(change, was_subscribed=name in subs)
        old = prefix + change.old_name
        was = old in subs
        moved = {n for n in subs if n == old or n.startswith(old + SEP)}
        subs.difference_update(moved)
        subs.update(name + n[len(old):] for n in moved)
        return replace(change, was_subscribed=was)

    def _name_lines(self, spec: NotifySpec, changes: list[NameChange]) -> list[bytes]:
        """RFC 5465 5.4, 5.5: the LIST responses for the name changes
        received, as this session names the folders and if it may look them
        up (the namespaces were resolved again if the access epoch moved)."""
        ns = self.session.namespaces
        if ns is None:
            return []
        utf8 = self.session.utf8
        out: list[bytes] = []
        for ch in changes:
            personal = ns.primary is not None and ns.primary.id == ch.mailbox_id
            prefix = self._imap_prefix(ch.mailbox_id, ch.name)
            if prefix is None:
                continue
            name = prefix + ch.name
            subscribed = ch.was_subscribed if ch.subscribed is None else ch.subscribed
            events = spec.events_for(name, personal, subscribed)
            if ch.old_name is not None:
                events |= spec.events_for(prefix + ch.old_name, personal, ch.was_subscribed)
            wire = responses.mailbox(name, utf8)
            if ch.subscribed is not None:
                if "SubscriptionChange" in events:
                    attrs = ["\\Subscribed"] if ch.subscribed else []
                    out.append(responses.list_(attrs, SEP, wire))
                continue
            if "MailboxName" not in events:
                continue
            extra = b""
            if ch.old_name is not None:
                extra = responses.oldname(responses.mailbox(prefix + ch.old_name, utf8))
            out.append(responses.list_(["\\NonExistent"] if ch.deleted else [], SEP, wire, extra))
        return out

    def _on_notify_folder(self, folder_id: int) -> None:
        self._notify_dirty.add(folder_id)
        self._kick_notify()

    def _kick_notify(self) -> None:
        """Sends the NOTIFY events now if the session may: not while a
        command runs (they follow its tagged reply; IDLE excepted), nor while
        the client does not read (the changes wait in the view and in one
        mark per watched folder: bounded, however long it does not read)."""
        if self._closing or self.session is None or self.session.notify is None:
            return
        if self._notifying:
            self._notify_again = True
            return
        idling = self._idle_done is not None
        if (self._busy and not idling) or self._paused is not None:
            return
        self._notifying = True
        if not idling:
            self._busy = True  # pipelined commands wait for the events

        def done(result: object) -> None:
            self._notifying = False
            waiters, self._notify_waiters = self._notify_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            if isinstance(result, Failure):
                if result.check(AccessWithdrawn):  # type: ignore[no-untyped-call]
                    self._end_withdrawn(result.value)  # type: ignore[arg-type]
                elif not result.check(ConnectionGone):  # type: ignore[no-untyped-call]
                    log.warning("NOTIFY delivery failed: %s", result.getErrorMessage())
            if not idling:
                self._busy = False
                self._pump()
            if self._notify_again:
                self._notify_again = False
                self._kick_notify()

        defer.ensureDeferred(self._deliver_notify()).addBoth(done)

    async def _deliver_notify(self) -> None:
        session = self.session
        spec = session.notify
        if spec is None:
            return
        if self._access_stale():
            # Nothing is told about a mailbox the session may no longer read:
            # the selected one ends the session (AccessWithdrawn).
            await self._recheck_access()
        await self._notify_selected(spec)
        if session.notify is not spec or self._closing:
            return
        dirty, self._notify_dirty = self._notify_dirty, set()
        names, self._notify_names = self._notify_names, []
        if not dirty and spec.current(self.watcher.access_epoch, self.services.policy.now()):
            if names:
                self._write(b"".join(self._name_lines(spec, names)))
            return
        assert session.identity is not None
        epoch, resolved, states = await self.run(
            read_boxes, self.services.policy, self.services.store, session.identity, spec,
            sorted(dirty))
        if session.notify is not spec or self._closing:
            return
        if resolved is not None:
            # The access epoch moved: watch what may be looked up now, and
            # say nothing more about what may not (RFC 5465 5.9).
            session.namespaces, boxes, spec.until, spec.subscribed = resolved
            spec.epoch = epoch
            spec.told = {f: k for f, k in spec.told.items() if f in boxes}
            spec.boxes = boxes
            self._watch_boxes(spec)
        out = self._name_lines(spec, names)
        condstore = "CONDSTORE" in session.enabled
        selected = session.view.folder_id if session.view is not None else None
        for fid, st in sorted(states.items()):
            box = spec.boxes.get(fid)
            if box is None:
                continue
            key = status_key(st, box.events, condstore)
            known = spec.told.get(fid)
            spec.told[fid] = key
            if fid == selected or known == key or known is None:
                continue
            out.append(status_line(box, st, condstore, session.utf8))
        if out:
            self._write(b"".join(out))

    async def _notify_selected(self, spec: NotifySpec) -> None:
        """RFC 5465 5.1-5.3 for the selected mailbox: EXISTS (then the FETCH
        MessageNew asks for), EXPUNGE (not with SELECTED-DELAYED: those wait
        for a command that allows them, RFC 5465 6.1.2), FETCH of the flags
        with FlagChange."""
        group = spec.selected
        view = self.session.view
        if group is None or view is None or not view.dirty:
            return
        await sync_view(self)
        view = self.session.view
        if view is None or self.session.notify is not spec or self._closing:
            return
        new = view.uids[view.announced_exists:].tolist()
        # RFC 5465 5.1: a flag change's FETCH carries the UID. IDLE allows
        # expunges, SELECTED-DELAYED or not.
        allow_expunge = not spec.delayed or self._idle_done is not None
        flags = "FlagChange" in group.events
        # The updating searches (RFC 5267) change with the view as in
        # `_announce` (found by review: with NOTIFY on the selected mailbox,
        # IDLE told EXISTS and no ADDTO).
        lines = await self._context_updates(view)
        if self.session.view is not view or self._closing:
            return
        lines += view.flush(allow_expunge, True, flags=flags)
        if view.contexts and any(c.state != view.state() for c in view.contexts.values()):
            lines += await self._context_updates(view)
            if self.session.view is not view or self._closing:
                return
            lines += view.flush(allow_expunge, True, flags=flags)
        if lines:
            self._write(b"".join(lines))
        if not new or not group.fetch:
            return
        if len(new) > NOTIFY_FETCH_MAX:
            self._write(NOTIFY_OVERFLOW)
            self.set_notify(None)
            return
        wanted = SequenceSet(tuple(SeqRange(u, u) for u in new))
        await fetch_handler(self, Fetch("*", wanted, group.fetch, uid=True))

    # ------------------------------------------------------------ output

    def _write(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self._t.write(data)
