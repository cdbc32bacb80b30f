"""Listening ports whose connections send without waiting for the reactor.

Twisted's TCP connection never sends from `write`: it appends to a buffer,
registers the socket for writing (an `epoll_ctl`), and sends on the next turn
of the reactor, when epoll says the socket is writable, then unregisters it (a
second `epoll_ctl`). A mail client waiting for the reply to one command pays
two system calls and one more turn of the loop for every reply, and each of
those calls lets another thread take the GIL (the store's threads), which the
reactor then waits to get back: in `bench/imap_sessions.py` a worker's
reactor thread was found in `send` or waiting after it in a quarter of its
samples.

`DirectServer` sends what was written during one turn of the reactor in one
`send` at the end of that turn (a `callLater(0)`: after the current
callbacks, before the reactor waits again), without registering the socket,
when nothing is waiting to be sent already, no producer is paused and the
connection is not closing: the common case of a reply to a command. Whatever
the socket does not take at once (a full buffer), an error, and every other
case go the usual way (buffered, sent when writable, errors reported by the
reactor as a lost connection). TLS goes through the same
`FileDescriptor.write` -> `startWriting` path: the records of a TLS
connection are sent the same way.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp


class DirectServer(tcp.Server):
    """A server-side TCP connection that sends what was written at the end of
    the reactor's current turn, without registering the socket for writing,
    when the socket takes it (see the module docstring)."""

    _registered = False  # the reactor watches this socket for writability
    _flush_pending = False  # a send at the end of this turn is scheduled

    def _direct(self) -> bool:
        # No producer to resume when the buffer drains (none, or a streaming
        # one that is not paused: the IMAP and SMTP protocols are such
        # producers), no close to finish: doWrite then only sends.
        return bool(self.connected and not self.disconnecting and not self._writeDisconnecting
                and (self.producer is None
                     or (self.streamingProducer and not self.producerPaused)))

    def startWriting(self) -> None:  # noqa: N802 - Twisted's name
        if self._registered:
            return
        if not self._direct():
            self._registered = True
            super().startWriting()  # type: ignore[no-untyped-call]
        elif not self._flush_pending:
            # Every write of this turn (a command's untagged responses and
            # its tagged reply; each TLS record) goes out in one send, after
            # the current callbacks and before the reactor waits again.
            self._flush_pending = True
            self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._registered or not self.connected:
            return
        if not self._direct():
            # Closing or a paused producer since the write: the usual path.
            # loseConnection calls startWriting before it sets
            # `disconnecting`, so that call scheduled this flush and nobody
            # registered the socket: doWrite must run to finish the close.
            self._registered = True
            super().startWriting()  # type: ignore[no-untyped-call]
            return
        # doWrite sends what the socket takes; when that is everything it
        # clears the buffer and calls stopWriting (no system call: never
        # registered). The rest, and an error (a lost connection, which the
        # reactor reports on its next turn), take the usual path.
        failed = self.doWrite()  # type: ignore[no-untyped-call]
        if failed is None and not self.dataBuffer and not self._tempDataLen:
            return
        self._registered = True
        super().startWriting()  # type: ignore[no-untyped-call]

    def stopWriting(self) -> None:  # noqa: N802 - Twisted's name
        self._registered = False
        super().stopWriting()  # type: ignore[no-untyped-call]


class DirectPort(tcp.Port):
    transport = DirectServer


def adopt_port(reactor: Any, sock: socket.socket, factory: Any) -> DirectPort:
    """`reactor.adoptStreamPort` with `DirectServer` connections: listens on a
    copy of the bound, listening `sock` (the caller closes its own)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"not a TCP listening socket: {sock.family!r}")
    port: DirectPort = DirectPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
        reactor, sock.fileno(), sock.family, factory)
    port.startListening()
    return port
