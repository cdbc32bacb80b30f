"""A small ESMTP client for relaying to other operators. TLS is mandatory.

One connection delivers one queued message to the recipients of one domain:
EHLO, STARTTLS (required: no plaintext fallback), EHLO, MAIL (with SIZE and
the DSN parameters when the peer offers DSN), one RCPT per recipient, DATA.
The outcome says, per recipient, what the peer answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from certs.tls import tls_connection
from mssmtpd import relayerrors
from mssmtpd.parser import encode_xtext
from storage.interface import DSNParams


class RelayFailure(Exception):
    """The whole attempt failed (no per-recipient answer)."""

    def __init__(self, text: str, *, permanent: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class ClientJob:
    sender: str
    recipients: tuple[str, ...]
    body: bytes
    dsn: DSNParams
    helo: str


@dataclass
class Outcome:
    # recipient -> (code, reply text as "250 2.1.5 ...")
    results: dict[str, tuple[int, str]] = field(default_factory=dict)
    peer_dsn: bool = False  # the peer took over DSN duties (RFC 3461 5.2)
    remote_mta: str = ""


def dot_stuff(body: bytes) -> bytes:
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    stuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:]
    return stuffed + b".\r\n"


# What each state waits for, to say which command the peer refused.
_COMMAND = {"greeting": "the connection (greeting)", "ehlo1": "EHLO", "starttls": "STARTTLS",
            "ehlo2": "EHLO after STARTTLS", "mail": "MAIL FROM", "rcpt": "RCPT TO",
            "data": "DATA", "body": "the message (end of DATA)", "quit": "QUIT"}

# `explain_tls(reason, ssl_connection)`: the words for a failed handshake.
TLSExplainer = Callable[[Failure | None, Any], str]
# `check_peer(transport)`: after the handshake, a refusal text or None.
PeerCheck = Callable[[Any], str | None]


class SMTPClientProtocol(LineReceiver):
    transport: Any

    delimiter = b"\r\n"
    MAX_LENGTH = 64 * 1024

    def __init__(self, job: ClientJob, tls_creator: Any, reactor: Any, timeout: float, *,
                 host: str = "peer", explain_tls: TLSExplainer | None = None,
                 check_peer: PeerCheck | None = None) -> None:
        self.job = job
        self.host = host
        self.explain_tls = explain_tls
        self.check_peer = check_peer
        self._ssl: Any = None
        self.tls_creator = tls_creator
        self.reactor = reactor
        self.timeout = timeout
        self.done: defer.Deferred[Outcome] = defer.Deferred()
        self.outcome = Outcome()
        self._lines: list[str] = []
        self._state = "greeting"
        self._tls = False
        self._ext: set[str] = set()
        self._rcpt_index = 0
        self._accepted: list[str] = []
        self._timer: Any = None

    # ------------------------------------------------------------ plumbing

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        else:
            self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._fail(RelayFailure(
            f"451 4.4.2 {self.host} did not answer {_COMMAND[self._state]} "
            f"within {self.timeout:g}s"))
        self.transport.abortConnection()

    def _fail(self, exc: Exception) -> None:
        if not self.done.called:
            self.done.errback(exc)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self.outcome)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._state == "quit":
            self._finish()
            return
        if self._tls and (self._state == "ehlo2" or relayerrors.ssl_reasons(reason)):
            # The handshake failed, or the peer refused us right after it
            # (TLS 1.3 servers judge our certificate after the client's Finished).
            explain = self.explain_tls or (
                lambda r, c: relayerrors.tls_failure(self.host, r, c, None))
            self._fail(RelayFailure(explain(reason, self._ssl)))
            return
        self._fail(RelayFailure(
            f"451 4.4.2 {self.host} closed the connection, waiting for the answer to "
            f"{_COMMAND[self._state]}"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._fail(RelayFailure(f"451 4.5.0 {self.host} sent a reply line too long"))
        self.transport.loseConnection()

    def _send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def lineReceived(self, line: bytes) -> None:
        self._arm()
        text = line.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit():
            self._fail(RelayFailure(f"451 4.5.0 {self.host} sent a malformed reply"))
            self.transport.loseConnection()
            return
        self._lines.append(text)
        if len(text) > 3 and text[3] == "-":
            if len(self._lines) > 200:  # a peer may not make us buffer forever
                self._fail(RelayFailure(f"451 4.5.0 {self.host} sent a reply too long"))
                self.transport.loseConnection()
            return
        lines, self._lines = self._lines, []
        code = int(lines[-1][:3])
        _STATES[self._state](self, code, lines)

    def _quit(self) -> None:
        self._state = "quit"
        self._send("QUIT")
        self.transport.loseConnection()

    def _abort_all(self, code: int, lines: list[str]) -> None:
        text = relayerrors.smtp_refusal(self.host, _COMMAND[self._state], lines)
        self._fail(RelayFailure(text, permanent=code >= 500))
        self._quit()

    # ------------------------------------------------------------ states

    def _on_greeting(self, code: int, lines: list[str]) -> None:
        if code != 220:
            self._abort_all(code, lines)
            return
        self._state = "ehlo1"
        self._send(f"EHLO {self.job.helo}")

    def _parse_ext(self, lines: list[str]) -> None:
        self._ext = {ln[4:].strip().upper() for ln in lines[1:]}
        self._ext |= {e.split(" ")[0] for e in self._ext}

    def _on_ehlo1(self, code: int, lines: list[str]) -> None:
        if code != 250:
            self._abort_all(code, lines)
            return
        self._parse_ext(lines)
        if "STARTTLS" not in self._ext:
            # TLS on every transaction: never fall back to plaintext.
            self._fail(RelayFailure(f"451 4.7.5 {self.host} does not offer STARTTLS"))
            self._quit()
            return
        self._state = "starttls"
        self._send("STARTTLS")

    def _on_starttls(self, code: int, lines: list[str]) -> None:
        if code != 220:
            self._abort_all(code if code < 500 else 454, lines)
            return
        self.transport.startTLS(self.tls_creator)
        self._ssl = tls_connection(self.transport)  # kept to explain a failed handshake
        self._tls = True
        self._state = "ehlo2"
        self._send(f"EHLO {self.job.helo}")

    def _on_ehlo2(self, code: int, lines: list[str]) -> None:
        if code != 250:
            self._abort_all(code, lines)
            return
        if self.check_peer is not None:
            refused = self.check_peer(self.transport)
            if refused is not None:
                self._fail(RelayFailure(refused))
                self._quit()
                return
        self._parse_ext(lines)
        refusal = self._cannot_send()
        if refusal is not None:
            self._fail(RelayFailure(refusal, permanent=True))
            self._quit()
            return
        params = []
        if "SIZE" in self._ext:
            params.append(f"SIZE={len(self.job.body)}")
        # RFC 6152 3: 8-bit content is declared, wherever it is in the body.
        if not self.job.body.isascii() and "8BITMIME" in self._ext:
            params.append("BODY=8BITMIME")
        dsn = self.job.dsn
        self.outcome.peer_dsn = "DSN" in self._ext
        if self.outcome.peer_dsn:
            if dsn.ret:
                params.append(f"RET={dsn.ret}")
            if dsn.envid:
                params.append(f"ENVID={encode_xtext(dsn.envid)}")
        if self._needs_utf8():
            params.append("SMTPUTF8")
        self._state = "mail"
        self._send(" ".join([f"MAIL FROM:<{self.job.sender}>", *params]))

    def _needs_utf8(self) -> bool:
        job = self.job
        return not job.sender.isascii() or not all(r.isascii() for r in job.recipients)

    def _cannot_send(self) -> str | None:
        """A permanent refusal decided from the peer's EHLO, before MAIL."""
        if self._needs_utf8() and "SMTPUTF8" not in self._ext:
            # RFC 6531 3.2: a non-ASCII envelope is never sent without SMTPUTF8.
            return "553 5.6.7 the peer does not support SMTPUTF8 addresses"
        limit = next((e.split(" ", 1)[1] for e in self._ext
                      if e.startswith("SIZE ") and e[5:].strip().isdigit()), "0")
        if int(limit) and len(self.job.body) > int(limit):
            # RFC 1870 5: do not send what the peer declared it will refuse.
            return "552 5.3.4 message exceeds the peer's fixed size limit"
        return None

    def _on_mail(self, code: int, lines: list[str]) -> None:
        if code != 250:
            self._abort_all(code, lines)
            return
        self._state = "rcpt"
        self._next_rcpt()

    def _next_rcpt(self) -> None:
        rcpt = self.job.recipients[self._rcpt_index]
        params = []
        if self.outcome.peer_dsn:
            notify = self.job.dsn.notify.get(rcpt)
            if notify:
                params.append(f"NOTIFY={notify}")
            orcpt = self.job.dsn.orcpt.get(rcpt)
            if orcpt:
                kind, _, addr = orcpt.partition(";")
                params.append(f"ORCPT={kind};{encode_xtext(addr)}")
        self._send(" ".join([f"RCPT TO:<{rcpt}>", *params]))

    def _on_rcpt(self, code: int, lines: list[str]) -> None:
        rcpt = self.job.recipients[self._rcpt_index]
        self.outcome.results[rcpt] = (code, lines[-1])
        if code in (250, 251):
            self._accepted.append(rcpt)
        self._rcpt_index += 1
        if self._rcpt_index < len(self.job.recipients):
            self._next_rcpt()
            return
        if not self._accepted:
            self._quit()
            return
        self._state = "data"
        self._send("DATA")

    def _on_data(self, code: int, lines: list[str]) -> None:
        if code != 354:
            for rcpt in self._accepted:
                self.outcome.results[rcpt] = (code, lines[-1])
            self._quit()
            return
        self._state = "body"
        self.transport.write(dot_stuff(self.job.body))

    def _on_body(self, code: int, lines: list[str]) -> None:
        for rcpt in self._accepted:
            self.outcome.results[rcpt] = (code, lines[-1])
        self._quit()

    def _on_quit(self, code: int, lines: list[str]) -> None:
        self._finish()


_STATES: dict[str, Any] = {
    "greeting": SMTPClientProtocol._on_greeting,
    "ehlo1": SMTPClientProtocol._on_ehlo1,
    "starttls": SMTPClientProtocol._on_starttls,
    "ehlo2": SMTPClientProtocol._on_ehlo2,
    "mail": SMTPClientProtocol._on_mail,
    "rcpt": SMTPClientProtocol._on_rcpt,
    "data": SMTPClientProtocol._on_data,
    "body": SMTPClientProtocol._on_body,
    "quit": SMTPClientProtocol._on_quit,
}
