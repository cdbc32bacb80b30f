"""The ESMTP server protocol on `twisted.internet.protocol.Protocol`.

Bytes go through `framing` (lines, DATA), lines through `parser`, the state
check through `session.sequence_error`, then one handler per command type
(`HANDLERS`). Every decision is asked of `services.policy` (through
`services.runner`), every login of `services.authenticator`. One command is
processed at a time: while a handler waits for the store, later pipelined
input stays buffered, so replies keep their order (RFC 2920).

Flow control, so that one client can neither grow a worker's memory nor hold
its reactor: the protocol is the transport's streaming producer, and no command
is processed while the client does not read our replies; while input cannot be
processed and more than `INPUT_HIGH_WATER` octets of it wait, the socket is not
read; and one connection's pipelined commands yield the reactor after
`TURN_SECONDS`.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.tlsconn import close_connection
from conf.settings import BareLineEndings, ListenerRole, TLSMode
from mssmtpd import parser as p
from mssmtpd.delivery import (
    Job,
    TraceInfo,
    from_mailboxes,
    message_id,
    success_dsn_recipients,
    with_sender,
)
from mssmtpd.framing import (
    MAX_HOPS,
    ChunkReader,
    DataReader,
    DataResult,
    Line,
    LineReader,
    LineTooLong,
    received_count,
)
from mssmtpd.replies import R, Reply, flow_reply, format_reply, local_error, reply_for_reason
from mssmtpd.session import Envelope, Recipient, Session, sequence_error
from mssmtpd.tlsinfo import is_tls, peer_certificate, tls_info
from policy import sasl
from policy.auth import (
    CertificateCredentials,
    LoginRefused,
    PasswordCredentials,
    TokenCredentials,
)
from policy.decisions import Decision, FromDecision, Identity, Peer, RcptDecision, Verdict
from policy.flows.model import FlowDecision
from policy.reasons import Reason
from storage.interface import DSNParams, StoreUnavailable

if TYPE_CHECKING:
    from mssmtpd.server import SMTPFactory

log = logging.getLogger(__name__)

Handler = Callable[["SMTPServerProtocol", Any], "defer.Deferred[None] | None"]

# Bytes of message data that count as activity for the idle timer.
DATA_PROGRESS = 4096
# Unprocessed input held while the connection cannot process it; past this,
# the socket is not read until it can (the client's sends then block).
INPUT_HIGH_WATER = 256 * 1024
# How long one connection's pipelined commands may hold the reactor before
# the others get their turn.
TURN_SECONDS = 0.02


@implementer(IHandshakeListener, IPushProducer)
class SMTPServerProtocol(Protocol):
    transport: Any  # ITransport, ITLSTransport once STARTTLS is possible

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        self.services = factory.services
        self.listener = factory.listener
        limits = self.services.settings.limits
        self.limits = limits
        # Room for the longest command (a SASL response); each command's own
        # limit is checked once its line is complete (`p.line_limit`).
        self._reader = LineReader(p.SASL_LINE_MAX)
        self._data: DataReader | None = None
        # BDAT: the chunk being read, whether it is the last, and the reply
        # to give instead of accepting it (the octets must be read anyway).
        self._chunks: ChunkReader | None = None
        self._chunk_reading = False
        self._chunk_last = False
        self._chunk_refusal: Reply | None = None
        self._busy = False
        self._draining = False
        self._closing = False
        self._sasl: sasl.Mechanism | None = None  # an exchange waiting for a response
        self._progress = 0
        self._timer: Any = None
        self._last_activity = 0.0
        self._out: list[bytes] | None = None  # replies held until the batch ends
        self._tls_known = False
        self._ip = ""
        self._counted = False  # in the factory's per-address count
        self._out_full = False  # the transport asked us to stop producing
        self._reading_paused = False
        self._next_turn: Any = None  # the DelayedCall of a yielded drain
        self.session: Session

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._ip = getattr(peer, "host", "") or ""
        port = int(getattr(peer, "port", 0) or 0)
        implicit = self.listener.tls is TLSMode.IMPLICIT
        self.session = Session(
            peer=Peer(self._ip, port, self.listener.name, self.listener.role, tls=implicit),
            listener=self.listener,
            tls=implicit,
        )
        self._counted = True  # counted even when refused, until it closes
        self.transport.registerProducer(self, True)
        if not self.factory.connection_opened(self._ip):
            self._refuse_connection(R.TOO_MANY_CONNECTIONS, "too-many-connections")
            return
        self._arm_timer()
        hostname = self.services.settings.hostname
        self._send(R.GREETING.with_text(f"{hostname} ESMTP ready"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closing = True
        for call in (self._timer, self._next_turn):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._next_turn = None
        if self._counted:
            self._counted = False
            self.factory.connection_closed(self._ip)

    def handshakeCompleted(self) -> None:
        self._refresh_tls_peer()

    def _refresh_tls_peer(self) -> None:
        if not is_tls(self.transport):
            return
        info = tls_info(self.transport, self.services.tls)
        if info is None:
            return
        cert = peer_certificate(self.transport, self.services.tls)
        old = self.session.peer
        self.session.peer = Peer(
            old.address, old.port, old.listener, old.role, tls=True,
            tls_version=info[0], cipher=info[1], client_cert=cert,
        )
        self.session.tls = True
        self._tls_known = True

    # ------------------------------------------------------------ timers

    def _arm_timer(self) -> None:
        """Notes activity. The timer itself is moved lazily, when it fires
        (`_on_idle`): resetting a DelayedCall on every line was a measurable
        cost of the hot path."""
        reactor = self.services.reactor
        if reactor is None or self._closing:
            return
        self._last_activity = reactor.seconds()
        if self._timer is None:
            self._timer = reactor.callLater(self.limits.smtp_idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        reactor = self.services.reactor
        timeout = self.limits.smtp_idle_timeout
        if self._busy:
            # Waiting for the store is our delay, not the client's idleness:
            # a timeout now would drop a message that may still commit.
            self._timer = reactor.callLater(timeout, self._on_idle)
            return
        left = self._last_activity + timeout - reactor.seconds()
        if left > 0:
            self._timer = reactor.callLater(left, self._on_idle)
            return
        log.info("idle timeout from %s", self._ip)
        self._refuse_connection(R.IDLE_TIMEOUT, "idle-timeout")

    # ------------------------------------------------------------ output

    def _send(self, reply: Reply) -> None:
        if self.transport is not None and not self._closing:
            if reply.code == 421:
                # RFC 5321 4.2.3 / 3.8: a closing 421 names the server.
                reply = reply.with_text(f"{self.services.settings.hostname} {reply.text}")
            self._write(reply.to_bytes())

    def _send_lines(self, code: int, lines: list[str]) -> None:
        if self.transport is not None and not self._closing:
            self._write(format_reply(code, None, lines))

    def _write(self, data: bytes) -> None:
        # Replies to a pipelined batch leave in one write (RFC 2920 4: the
        # server may buffer them); `_drain` flushes at the end of the batch.
        if self._out is not None:
            self._out.append(data)
        else:
            self.transport.write(data)

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            if self.transport is not None:
                self.transport.write(b"".join(out))

    def _actor(self) -> str:
        identity = getattr(getattr(self, "session", None), "identity", None)
        return identity.name if identity is not None else self._ip

    def _audit(self, action: str, target: str, result: str, **details: Any) -> None:
        """A decision taken here (limits, framing), not by the policy. The sink
        may write to the store: off the reactor, and never fatal."""

        def record() -> None:
            self.services.audit.record(self._actor(), action, target, result,
                                       listener=self.listener.name, peer=self._ip, **details)

        if getattr(self.services.audit, "nonblocking", False):
            d: defer.Deferred[None] = defer.maybeDeferred(record)
        else:
            d = self.services.runner.run(record)
        d.addErrback(lambda f: log.warning("audit event lost: %s", f.getErrorMessage()))

    def _refuse_connection(self, reply: Reply, reason: str) -> None:
        self._audit("connection", self.listener.name, "deny", reason=reason)
        self._close(reply)

    def _close(self, reply: Reply | None = None) -> None:
        if self._closing:
            return
        if reply is not None:
            self._send(reply)
        self._closing = True
        if self.transport is not None:
            self._flush()
            # A registered producer would keep the connection open.
            self.transport.unregisterProducer()
            # Closes TCP even when TLS waits for a handshake or a close_notify.
            close_connection(self.transport, self.services.reactor,
                             self.limits.tls_handshake_timeout)
            reactor = self.services.reactor
            if reactor is not None and self._out_full:
                # A client that reads nothing would hold a graceful close
                # (which flushes our replies first) open for ever.
                self._timer = reactor.callLater(self.limits.smtp_idle_timeout, self._abort)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abortConnection()

    # ------------------------------------------------------------ producer

    def pauseProducing(self) -> None:
        """The transport's buffer is full: the client is not reading."""
        self._out_full = True

    def resumeProducing(self) -> None:
        self._out_full = False
        if not self._draining and not self._closing:
            self._drain()

    def stopProducing(self) -> None:
        self._closing = True

    def _stalled(self) -> bool:
        return self._busy or self._out_full or self._next_turn is not None

    def _take_turn(self) -> None:
        self._next_turn = None
        self._drain()

    def _flow(self) -> None:
        """Stops reading from the socket while input piles up that cannot be
        processed now; reads again as soon as it can be."""
        if self.transport is None or self._closing:
            return
        stalled = self._stalled()
        if stalled and not self._reading_paused:
            if self._reader.buffered > INPUT_HIGH_WATER:
                self._reading_paused = True
                self.transport.pauseProducing()
        elif not stalled and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    # ------------------------------------------------------------ input

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._data is not None or self._chunk_reading:
            # A slow DATA transfer is progress, a trickle is not: the idle
            # timer restarts only after DATA_PROGRESS bytes.
            self._progress += len(data)
            if self._progress >= DATA_PROGRESS:
                self._progress = 0
                self._arm_timer()
        self._reader.feed(data)
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        self._out = []
        try:
            self._drain_input()
        finally:
            self._draining = False
            self._flush()
            self._out = None
        self._flow()

    def _drain_input(self) -> None:
        reactor = self.services.reactor
        started = reactor.seconds() if reactor is not None else 0.0
        while not self._stalled() and not self._closing:
            if (reactor is not None and reactor.seconds() - started > TURN_SECONDS
                    and self._reader.pending()):
                self._next_turn = reactor.callLater(0, self._take_turn)
                return
            if self._chunk_reading:
                assert self._chunks is not None
                if self._chunks.remaining:
                    chunk = self._reader.take()
                    if not chunk:
                        return
                    rest = self._chunks.feed(chunk)
                    if rest is None:
                        return
                    self._reader.unread(rest)
                self._chunk_reading = False
                self._run(self._end_chunk())
                continue
            if self._data is not None:
                chunk = self._reader.take()
                if not chunk:
                    return
                rest = self._data.feed(chunk)
                if rest is None:
                    return
                self._reader.unread(rest)
                self._run(self._end_data())
                continue
            item = self._reader.next_line()
            if item is None:
                return
            self._arm_timer()  # only complete lines count as activity
            self._run(self._handle_line(item))

    def _run(self, d: defer.Deferred[None] | None) -> None:
        if d is None:
            return
        if d.called:
            d.addErrback(self._unexpected)
            return
        # While busy the idle timer re-arms itself (`_on_idle`).
        self._busy = True
        d.addErrback(self._unexpected)
        d.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self._busy = False
        self._arm_timer()
        if not self._draining:
            self._drain()

    def _unexpected(self, failure: Failure) -> None:
        ref = secrets.token_hex(6)
        log.error("unexpected error ref=%s peer=%s: %s", ref, self._ip, failure.getTraceback())
        if isinstance(failure.value, StoreUnavailable):
            self._send(R.STORE_UNAVAILABLE)
        else:
            self._send(local_error(ref))

    def _bad_command(self, reply: Reply) -> None:
        self.session.bad_commands += 1
        if self.session.bad_commands >= self.limits.bad_commands:
            self._send(reply)
            self._refuse_connection(R.TOO_MANY_ERRORS, "too-many-bad-commands")
        else:
            self._send(reply)

    def _handle_line(self, item: Line | LineTooLong) -> defer.Deferred[None] | None:
        if isinstance(item, LineTooLong):
            in_sasl = self._sasl is not None or item.head[:5].upper() == b"AUTH "
            self._sasl = None
            self._bad_command(R.AUTH_LINE_TOO_LONG if in_sasl else R.LINE_TOO_LONG)
            return None
        if item.bare and self.limits.bare_line_endings is BareLineEndings.REJECT:
            self._sasl = None
            self._bad_command(R.BARE_LINE_ENDING)
            return None
        if self.session.tls and not self._tls_known:
            self._refresh_tls_peer()
        if self._sasl is not None:
            return self._sasl_response(item.text)
        if len(item.text) + 2 > p.line_limit(item.text):
            self._bad_command(R.LINE_TOO_LONG)
            return None
        command = p.parse_command(item.text)
        if isinstance(command, p.ParseError):
            self._bad_command(command.reply)
            return None
        refusal = sequence_error(self.session, command)
        if refusal is not None:
            if isinstance(command, p.Bdat):
                # RFC 3030 2: the chunk's octets are read even when refused,
                # or they would be taken for commands.
                self._read_chunk(command, refusal)
                return None
            self._bad_command(refusal)
            return None
        # Only commands outside a transaction count: a message sent in many
        # BDAT chunks (or after many RCPTs) is not a client wasting our time.
        if self.session.envelope is None and not isinstance(command, p.MailFrom | p.Quit):
            self.session.commands_without_mail += 1
            if self.session.commands_without_mail > self.limits.commands_before_mail:
                self._refuse_connection(R.TOO_MANY_COMMANDS, "too-many-commands")
                return None
        handler = HANDLERS[type(command)]
        return handler(self, command)

    # ------------------------------------------------------------ simple commands

    def _ehlo_lines(self) -> list[str]:
        s = self.session
        hostname = self.services.settings.hostname
        lines = [f"{hostname} Hello {s.helo}", "PIPELINING",
                 f"SIZE {self.limits.message_size}", "8BITMIME", "ENHANCEDSTATUSCODES",
                 "DSN", "SMTPUTF8", "CHUNKING"]
        if self.listener.tls is TLSMode.STARTTLS and not s.tls:
            lines.append("STARTTLS")
        if s.auth_offered and s.identity is None:
            mechs = sasl.advertised(passwords=True,
                                    tokens=self.services.authenticator.tokens_enabled,
                                    external=s.peer.client_cert is not None)
            lines.append("AUTH " + " ".join(mechs))
        return lines

    def on_ehlo(self, cmd: p.Ehlo) -> None:
        self.session.helo = cmd.domain
        self.session.esmtp = True
        self.session.reset_transaction()
        self._send_lines(250, self._ehlo_lines())

    def on_helo(self, cmd: p.Helo) -> None:
        self.session.helo = cmd.domain
        self.session.esmtp = False
        self.session.reset_transaction()
        self._send(R.HELO_OK.with_text(f"{self.services.settings.hostname} Hello {cmd.domain}"))

    def on_noop(self, cmd: p.Noop) -> None:
        self._send(R.NOOP)

    def on_rset(self, cmd: p.Rset) -> None:
        self.session.reset_transaction()
        self._send(R.RESET)

    def on_quit(self, cmd: p.Quit) -> None:
        self._close(R.BYE)

    def on_help(self, cmd: p.Help) -> None:
        self._send(R.HELP)

    def on_vrfy(self, cmd: p.Vrfy) -> None:
        # Never confirm addresses: it would let anyone probe the directory.
        self._send(R.VRFY_DISABLED)

    def on_expn(self, cmd: p.Expn) -> None:
        self._send(R.NOT_IMPLEMENTED)

    def on_bdat(self, cmd: p.Bdat) -> None:
        env = self.session.envelope
        assert env is not None
        first = not env.chunked
        env.chunked = True
        self._read_chunk(cmd, None, fresh=first)

    def _read_chunk(self, cmd: p.Bdat, refusal: Reply | None, *, fresh: bool = True) -> None:
        if fresh or self._chunks is None:
            normalise = self.limits.bare_line_endings is BareLineEndings.NORMALISE
            self._chunks = ChunkReader(max_size=self.limits.message_size,
                                       max_line=self.limits.line_length, normalise=normalise)
        self._chunks.start_chunk(cmd.size)
        self._chunk_last = cmd.last
        self._chunk_refusal = refusal
        self._chunk_reading = True

    def _end_chunk(self) -> defer.Deferred[None] | None:
        reader = self._chunks
        assert reader is not None
        if self._chunk_refusal is not None:
            self._chunks = None
            self._bad_command(self._chunk_refusal)
            return None
        if reader.error is not None and not self._chunk_last:
            self._send(reader.error)
            return None
        if not self._chunk_last:
            self._send(R.BDAT_OK.with_text(f"{reader.size} octets received"))
            return None
        self._chunks = None
        return self._finish_message(reader.result(), reader.size)

    # ------------------------------------------------------------ STARTTLS

    def on_starttls(self, cmd: p.StartTls) -> None:
        tls = self.services.tls
        if tls is None or not hasattr(self.transport, "startTLS"):
            self._send(R.TLS_NOT_AVAILABLE)
            return
        try:
            context = tls.server_context_factory(self.listener)
        except Exception:  # noqa: BLE001 - misconfiguration: say so without details
            log.exception("cannot build the TLS context for %s", self.listener.name)
            self._send(R.TLS_NOT_AVAILABLE)
            return
        self._send(R.START_TLS)
        # RFC 3207 4.2 / CVE-2011-0411: whatever the client pipelined after
        # STARTTLS was sent in plaintext and must never be executed.
        injected = self._reader.clear()
        if injected:
            log.warning("discarded %d plaintext bytes after STARTTLS from %s", injected, self._ip)
            self._audit("starttls", self.listener.name, "deny",
                        reason="plaintext-after-starttls", bytes=injected)
        self._flush()  # the 220 goes in plaintext, before the handshake
        self.transport.startTLS(context)
        self.session.restart_after_tls(self.session.peer)
        self._tls_known = False

    # ------------------------------------------------------------ AUTH

    def on_auth(self, cmd: p.Auth) -> defer.Deferred[None] | None:
        mech = sasl.mechanism(cmd.mechanism)
        if mech is None or (mech.kind is sasl.Kind.TOKEN
                            and not self.services.authenticator.tokens_enabled):
            self._bad_command(R.AUTH_MECH_UNKNOWN)
            return None
        return self._sasl_step(mech, mech.start(cmd.initial))

    def _sasl_response(self, line: bytes) -> defer.Deferred[None] | None:
        mech = self._sasl
        assert mech is not None
        response = sasl.decode_response(line)
        if isinstance(response, sasl.Failed):
            return self._sasl_step(mech, response)
        return self._sasl_step(mech, mech.respond(response))

    def _sasl_step(self, mech: sasl.Mechanism,
                   outcome: sasl.Outcome) -> defer.Deferred[None] | None:
        """Acts on what the mechanism made of the client's input."""
        if isinstance(outcome, sasl.Challenge):
            self._sasl = mech
            self._send(R.AUTH_CHALLENGE.with_text(sasl.encode_challenge(outcome).decode()))
            return None
        self._sasl = None
        peer = self.session.peer
        if isinstance(outcome, sasl.Failed):
            return self._sasl_failed(mech, outcome)
        if isinstance(outcome, sasl.PasswordLogin):
            return self._login(PasswordCredentials(peer, outcome.authcid, outcome.password))
        if isinstance(outcome, sasl.ExternalLogin):
            return self._login(CertificateCredentials(peer, outcome.authzid))
        return self._login(TokenCredentials(peer, outcome.token, outcome.user, mech.name), mech)

    def _sasl_failed(self, mech: sasl.Mechanism,
                     failure: sasl.Failed) -> defer.Deferred[None] | None:
        kind = failure.kind
        if kind is sasl.FailureKind.CANCELLED:
            self._end_auth(R.AUTH_CANCELLED)
            return None
        if kind is sasl.FailureKind.BAD_BASE64:
            self._bad_command(R.AUTH_BAD_BASE64)
            return None
        if kind is sasl.FailureKind.TOKEN_REFUSED:
            self._end_auth(R.AUTH_FAILED)  # counted when the token was refused
            return None
        # Malformed input or another authzid: a refusal the policy records.
        self.session.failed_auth += 1
        d = self.services.runner.run(self.services.policy.refuse_sasl,
                                     self.session.peer, mech.name, failure)
        d.addErrback(lambda f: log.warning("audit event lost: %s", f.getErrorMessage()))
        return d.addCallback(lambda _: self._end_auth(R.AUTH_FAILED))

    def _login(self, credentials: Any,
               mech: sasl.Mechanism | None = None) -> defer.Deferred[None]:
        d: defer.Deferred[Identity] = self.services.authenticator.login(credentials)

        def ok(identity: Identity) -> None:
            self.session.identity = identity
            self._send(R.AUTH_OK)

        def failed(failure: Failure) -> None:
            refusal = failure.value
            if isinstance(refusal, LoginRefused):
                if refusal.decision.verdict is Verdict.TEMPFAIL:
                    # The identity provider cannot answer: never "wrong password".
                    self._send(R.AUTH_TEMPFAIL)
                    return
                self.session.failed_auth += 1
                if mech is not None and mech.kind is sasl.Kind.TOKEN:
                    # RFC 7628 3.2.2: the error status, then the client's %x01.
                    self._sasl_step(mech, mech.refuse(
                        self.services.authenticator.openid_configuration))
                    return
                self._end_auth(R.AUTH_FAILED)
            elif isinstance(refusal, StoreUnavailable):
                self._send(R.AUTH_TEMPFAIL)
            else:
                ref = secrets.token_hex(6)
                log.error("auth error ref=%s: %s", ref, failure.getTraceback())
                self._send(R.AUTH_TEMPFAIL.with_text(f"Temporary authentication failure (ref {ref})"))

        return d.addCallbacks(ok, failed)

    def _end_auth(self, reply: Reply) -> None:
        """The final reply of an exchange; too many failures close the connection."""
        self._send(reply)
        if self.session.failed_auth >= self.limits.failed_auth:
            self._refuse_connection(R.TOO_MANY_ERRORS, "too-many-failed-logins")

    # ------------------------------------------------------------ MAIL / RCPT

    def _decision(self, fn: Callable[..., Any], *args: Any, rcpt: str | None = None,
                  sender: str | None = None, inline: bool = False) -> defer.Deferred[Any]:
        """Ask the policy off the reactor, unless it says it can decide from
        its per-process cache without store I/O (`inline`): a thread hop per
        MAIL and RCPT was the largest cost of SMTP ingest (~1 ms CPU per
        message)."""
        if inline and self.services.policy.decides_without_store(self.session.peer, rcpt,
                                                                 sender):
            return defer.maybeDeferred(fn, *args)
        return self.services.runner.run(fn, *args)

    def on_mail(self, cmd: p.MailFrom) -> defer.Deferred[None] | None:
        if cmd.params.size is not None and cmd.params.size > self.limits.message_size:
            self._audit("mail", cmd.sender or "<>", "deny", reason="declared-size",
                        size=cmd.params.size)
            self._send(R.MESSAGE_TOO_BIG)
            return None
        session = self.session
        policy = self.services.policy

        def decide() -> tuple[Decision, bool]:
            """The decision, and whether it is the peer operator's check."""
            decision: Decision = policy.check_sender(session.peer, session.identity, cmd.sender)
            if decision.allowed and session.role is ListenerRole.MX:
                # A null sender (DSN) is checked against every listed domain.
                decision = policy.check_peer_operator(
                    session.peer, cmd.sender.rpartition("@")[2].lower())
                if not decision.allowed:
                    return decision, True
            if decision.allowed:
                # The flow matrix, when a rule on the source alone decides.
                decision = policy.check_sender_flow(session.peer, session.identity,
                                                    cmd.sender, cmd.params.size)
            return decision, False

        def done(answer: tuple[Decision, bool]) -> None:
            decision, peer_check = answer
            if decision.reason is Reason.ACCOUNT_DISABLED:
                self._close(R.ACCOUNT_DISABLED)
                return
            if not decision.allowed and decision.flow is not None:
                self._flow_refused(decision.flow, f"mail from {cmd.sender or '<>'}")
                return
            if decision.allowed:
                session.envelope = Envelope(cmd.sender, cmd.params)
                session.commands_without_mail = 0
                self._send(R.SENDER_OK)
            else:
                self._send(reply_for_reason(decision.reason,
                                            temporary=decision.verdict is Verdict.TEMPFAIL,
                                            default=R.SENDER_DENIED, peer=peer_check))

        return self._decision(decide, inline=True).addCallbacks(done, self._store_failure)

    def _flow_refused(self, flow: FlowDecision, what: str) -> None:
        """The flow matrix refused: the operator's rule gives the reply, and
        the log line names the rule."""
        reply = flow_reply(flow)
        log.info("%s refused by flow rule %s (%s %s %s)", what, flow.rule, reply.code,
                 reply.status, reply.text)
        self._send(reply)

    def _store_failure(self, failure: Failure) -> None:
        if isinstance(failure.value, StoreUnavailable):
            self._send(R.STORE_UNAVAILABLE)
            return
        failure.raiseException()

    def on_rcpt(self, cmd: p.RcptTo) -> defer.Deferred[None] | None:
        env = self.session.envelope
        assert env is not None
        if len(env.recipients) >= self.limits.recipients:
            env.excess_recipients += 1
            if env.excess_recipients == 1:
                self._audit("rcpt", cmd.recipient, "deny", reason="too-many-recipients")
            self._send(R.TOO_MANY_RECIPIENTS)
            return None
        if not cmd.recipient.isascii() and not env.params.smtputf8:
            self._send(R.SMTPUTF8_REQUIRED)
            return None
        address = self.services.policy.recipient_address(cmd.recipient)
        if any(r.address.lower() == address.lower() for r in env.recipients):
            self._send(R.RCPT_OK)  # the same recipient twice gets one copy
            return None
        session = self.session

        def done(result: RcptDecision) -> None:
            decision = result.decision
            if not decision.allowed and result.flow is not None:
                self._flow_refused(result.flow, f"rcpt {address} from {env.sender or '<>'}")
                return
            if not decision.allowed:
                self._send(reply_for_reason(decision.reason,
                                            temporary=decision.verdict is Verdict.TEMPFAIL,
                                            default=R.RELAY_DENIED))
                return
            if session.envelope is not env:
                return  # the transaction was reset meanwhile
            env.recipients.append(Recipient(address, cmd.params, result.mailbox, result.remote))
            self._send(R.RCPT_RELAY_OK if result.remote else R.RCPT_OK)

        d = self._decision(self.services.policy.check_rcpt,
                           session.peer, session.identity, env.sender, address,
                           env.params.size, rcpt=address, sender=env.sender, inline=True)
        return d.addCallbacks(done, self._store_failure)

    # ------------------------------------------------------------ DATA

    def on_data(self, cmd: p.Data) -> None:
        normalise = self.limits.bare_line_endings is BareLineEndings.NORMALISE
        self._data = DataReader(max_size=self.limits.message_size,
                                max_line=self.limits.line_length, normalise=normalise)
        self._send(R.START_DATA)

    def _end_data(self) -> defer.Deferred[None] | None:
        reader = self._data
        assert reader is not None
        self._data = None
        return self._finish_message(reader.result(), reader.size)

    def _finish_message(self, result: DataResult, size: int) -> defer.Deferred[None] | None:
        env = self.session.envelope
        self.session.reset_transaction()
        if result.error is not None or result.content is None or env is None:
            reply = result.error or R.TRANSACTION_FAILED
            self._audit("data", env.sender if env else "-", "deny",
                        reason=f"{reply.code} {reply.status}", size=size)
            self._send(reply)
            return None
        content = result.content
        if received_count(content) > MAX_HOPS:
            self._audit("data", env.sender or "<>", "deny", reason="mail-loop", size=size)
            self._send(R.TOO_MANY_HOPS)
            return None
        flows = self.services.policy.flows
        if flows is not None and flows.matrix.uses_size:
            return self._check_size(env, content)
        return self._check_from(env, content)

    def _check_size(self, env: Envelope, content: bytes) -> defer.Deferred[None]:
        """The flow matrix's max_size rules, decided again on the real size."""
        session = self.session
        recipients = [r.address for r in env.recipients]

        def after(decision: Decision) -> defer.Deferred[None] | None:
            if decision.allowed:
                return self._check_from(env, content)
            if decision.flow is not None:
                self._flow_refused(decision.flow, f"message from {env.sender or '<>'} "
                                                  f"({len(content)} bytes)")
            else:
                self._send(reply_for_reason(decision.reason,
                                            temporary=decision.verdict is Verdict.TEMPFAIL,
                                            default=R.TRANSACTION_FAILED))
            return None

        d: defer.Deferred[Decision] = self._decision(
            self.services.policy.check_message_size, session.peer, session.identity,
            env.sender, recipients, len(content))
        return d.addCallbacks(after, self._store_failure)

    def _check_from(self, env: Envelope, content: bytes) -> defer.Deferred[None] | None:
        """Submission: the From: header against what the agent may send as."""
        session = self.session
        identity = session.identity
        if session.role is not ListenerRole.SUBMISSION or identity is None:
            return self._commit(env, content)
        mailboxes = from_mailboxes(content)
        if mailboxes == [] or mailboxes == [identity.account.login]:
            # No From: (the envelope sender, decided at MAIL, stands), or the
            # agent's own address: no decision to make.
            return self._commit(env, content)
        policy = self.services.policy

        def check_from() -> FromDecision:
            return policy.check_from_header(session.peer, identity, mailboxes,
                                            message_id(content))

        def after(result: FromDecision) -> defer.Deferred[None] | None:
            decision = result.decision
            if not decision.allowed:
                self._send(reply_for_reason(decision.reason,
                                            temporary=decision.verdict is Verdict.TEMPFAIL,
                                            default=R.FROM_NOT_OWNED))
                return None
            if result.sender is not None:
                return self._commit(env, with_sender(content, result.sender))
            return self._commit(env, content)

        return self._decision(check_from).addCallbacks(after, self._store_failure)

    def _commit(self, env: Envelope, content: bytes) -> defer.Deferred[None]:
        session = self.session
        identity = session.identity
        peer = session.peer
        trace = TraceInfo(
            hostname=self.services.settings.hostname,
            helo=session.helo or "unknown",
            peer_ip=peer.address,
            esmtp=session.esmtp,
            tls=(peer.tls_version or "TLS", peer.cipher or "unknown") if session.tls else None,
            authenticated=identity.name if identity else None,
            auth_method=identity.method if identity else None,
            cert_subject=_subject(peer.client_cert),
            utf8=env.params.smtputf8,
            transaction_id=_transaction_id(),
        )
        local_ids: list[int] = []
        local_addrs: list[str] = []
        for r in env.local:
            assert r.mailbox is not None
            local_addrs.append(r.address)
            if r.mailbox.id not in local_ids:
                local_ids.append(r.mailbox.id)
        remote = tuple(r.address for r in env.remote)
        dsn = DSNParams(
            ret=env.params.ret,
            envid=env.params.envid,
            notify={r.address: ",".join(r.params.notify) for r in env.recipients
                    if r.params.notify},
            orcpt={r.address: r.params.orcpt for r in env.recipients if r.params.orcpt},
        )
        job = Job(
            sender=env.sender,
            local_mailbox_ids=tuple(local_ids),
            local_addresses=tuple(local_addrs),
            remote=remote,
            content=content,
            trace=trace,
            dsn=dsn,
            actor=identity.name if identity else peer.address,
            success_dsn_for=success_dsn_recipients(dsn, local_addrs),
            origin=self.services.policy.flow_origin(peer, identity) if remote else None,
        )
        self.session.messages += 1
        committed: defer.Deferred[Reply] = self.factory.delivery.commit(job)
        return committed.addCallback(self._send)


class _TransactionIds:
    """Unique ids for the Received header and the logs: a random per-process
    prefix and a counter (one urandom call per process, not one per message;
    re-drawn in a forked child so workers never share a prefix)."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter: Iterator[int] = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_transaction_id = _TransactionIds()
os.register_at_fork(after_in_child=_transaction_id.reseed)


def _subject(cert: Any) -> str | None:
    if cert is None:
        return None
    try:
        from certs.identity import rfc4514_subject

        return str(rfc4514_subject(cert))
    except Exception:  # noqa: BLE001 - fall back to cryptography's own rendering
        return str(cert.subject.rfc4514_string())


# One handler per command type (STYLE rule 2); tests check it is complete.
HANDLERS: dict[type, Handler] = {
    p.Ehlo: SMTPServerProtocol.on_ehlo,
    p.Helo: SMTPServerProtocol.on_helo,
    p.MailFrom: SMTPServerProtocol.on_mail,
    p.RcptTo: SMTPServerProtocol.on_rcpt,
    p.Data: SMTPServerProtocol.on_data,
    p.Bdat: SMTPServerProtocol.on_bdat,
    p.Rset: SMTPServerProtocol.on_rset,
    p.Noop: SMTPServerProtocol.on_noop,
    p.Quit: SMTPServerProtocol.on_quit,
    p.Vrfy: SMTPServerProtocol.on_vrfy,
    p.Expn: SMTPServerProtocol.on_expn,
    p.Help: SMTPServerProtocol.on_help,
    p.StartTls: SMTPServerProtocol.on_starttls,
    p.Auth: SMTPServerProtocol.on_auth,
}
