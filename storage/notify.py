"""Changes pushed by PostgreSQL (LISTEN/NOTIFY) to the processes of every node.

Triggers (migration 0014) NOTIFY in the transaction that changes a folder
(channel `mss_folder`, payload the folder id) or the access epoch (channel
`mss_access`, payload its new value), and (migration 0017) that records a
folder name event (channel `mss_names`, payload its id: `storage.names`); PostgreSQL delivers a notification
only when, and only if, that transaction commits, in commit order.

`PgChangeFeed` keeps one dedicated connection per process in LISTEN, on a
thread of its own (never the reactor): it waits in select() on the
connection's socket and a stop pipe, drains every notification that came in
one go and hands them to its `ChangeListener` (folder ids deduplicated, only
the newest epoch). A connection that fails (the server restarted, the network
dropped: TCP keepalives and a probe every `probe_interval` seconds of silence
find out) is reported (`feed_state(False)`: the listener polls meanwhile) and
opened again with exponential backoff; once it listens again,
`feed_state(True)` tells the listener to read the state once, since what
committed in between was not notified to anybody.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from storage.interface import ChangeListener

log = logging.getLogger(__name__)

FOLDER_CHANNEL = "mss_folder"
ACCESS_CHANNEL = "mss_access"
NAMES_CHANNEL = "mss_names"

# libpq's TCP settings for the listening connection: a peer that vanished
# without a word is noticed within about 15 s even with no traffic.
KEEPALIVE_PARAMS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
    "application_name": "mss-change-feed",
}


class PgChangeFeed:
    """See the module docstring. `connect` opens a new DB-API (psycopg2)
    connection; the feed owns it."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        probe_interval: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self._connect = connect
        self.probe_interval = probe_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._live = False
        self._conn: Any = None

    @property
    def live(self) -> bool:
        return self._live

    def start(self, listener: ChangeListener) -> None:
        if self._thread is not None:
            raise RuntimeError("the change feed is already started")
        self._thread = threading.Thread(
            target=self._run, args=(listener,), name="mss-change-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10.0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def break_connection(self) -> None:
        """Closes the listening connection under the thread's feet, as a lost
        network would (tests: the feed must reconnect)."""
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001, S110 - whatever state it is in, it is gone
                pass

    # ------------------------------------------------------------ the thread

    def _run(self, listener: ChangeListener) -> None:
        delay = self.backoff_initial
        failures = 0  # in a row: a long outage is logged once a minute, not per attempt
        while not self._stopping.is_set():
            try:
                self._conn = self._connect()
                self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute(f"LISTEN {FOLDER_CHANNEL}; LISTEN {ACCESS_CHANNEL}; "
                                f"LISTEN {NAMES_CHANNEL}")
                self._set_live(listener, True)
                delay = self.backoff_initial
                self._listen(self._conn, listener)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if not self._stopping.is_set() and (self._live or failures % 12 == 0):
                    log.warning("change feed: connection lost (%s: %s); polling until it "
                                "is back", type(exc).__name__, str(exc).strip()[:200])
                failures = 0 if self._live else failures + 1
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001, S110 - already broken
                        pass
            if self._live:
                self._set_live(listener, False)
            if self._stopping.is_set():
                break
            self._sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _set_live(self, listener: ChangeListener, live: bool) -> None:
        self._live = live
        if live:
            log.info("change feed: listening for folder and access changes")
        try:
            listener.feed_state(live)
        except Exception:
            log.exception("change feed: listener failed")

    def _sleep(self, seconds: float) -> None:
        """Waits, or less if stopped."""
        select.select([self._wake_r], [], [], seconds)

    def _listen(self, conn: Any, listener: ChangeListener) -> None:
        """Until stopped (returns) or the connection fails (raises)."""
        fd = conn.fileno()
        while not self._stopping.is_set():
            ready, _, _ = select.select([fd, self._wake_r], [], [], self.probe_interval)
            if self._wake_r in ready:
                return
            if fd in ready:
                conn.poll()
            else:  # silence: is the server still there?
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            self._drain(conn, listener)
            if conn.closed:
                raise ConnectionError("listening connection closed")

    @staticmethod
    def _drain(conn: Any, listener: ChangeListener) -> None:
        notes = conn.notifies
        if not notes:
            return
        taken = list(notes)
        del notes[:]
        folders: set[int] = set()
        epoch: int | None = None
        names: int | None = None
        for note in taken:
            try:
                value = int(note.payload)
            except ValueError:
                log.warning("change feed: unexpected payload on %s", note.channel)
                continue
            if note.channel == FOLDER_CHANNEL:
                folders.add(value)
            elif note.channel == ACCESS_CHANNEL:
                epoch = value  # commit order: the last one is the newest
            elif note.channel == NAMES_CHANNEL:
                names = value if names is None else max(names, value)
        try:
            if folders:
                listener.folders_changed(frozenset(folders))
            if epoch is not None:
                listener.access_changed(epoch)
            if names is not None:
                listener.names_changed(names)
        except Exception:
            log.exception("change feed: listener failed")


def pg_connector(engine: Any) -> Callable[[], Any]:
    """A function opening a new connection with the engine's parameters (not
    from its pool: this one stays in LISTEN for the life of the process)."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    params = {**cparams, **KEEPALIVE_PARAMS}

    def connect() -> Any:
        return engine.dialect.dbapi.connect(*cargs, **params)

    return connect
