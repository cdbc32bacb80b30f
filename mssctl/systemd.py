"""Running under systemd (`Type=notify`): readiness, status, watchdog, reload.

The notify protocol is small enough to speak directly (sd_notify(3)): each
message is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). ``$WATCHDOG_USEC`` asks for ``WATCHDOG=1`` at least that often;
``$WATCHDOG_PID``, when set, names the one process that must send it.

Who speaks: the main process only (the units use ``NotifyAccess=main``).
With one worker that is the worker itself, from its reactor. With several,
the supervisor speaks for all of them, from what they write on a
`HealthBoard` (shared memory mapped before the fork, like the connection
counts): when each worker's reactor came up, its last heartbeat, and which
reload it has finished. So ``READY=1`` means every worker has its store open
and its listeners adopted; ``WATCHDOG=1`` goes out only while every worker's
reactor beats, and a stalled reactor makes systemd restart the service;
after SIGHUP, ``RELOADING=1`` and then ``READY=1`` once every worker has
re-read its files. Nothing here imports Twisted: the supervisor never does.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def _address(value: str) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path, or "@name" for the
    abstract namespace (a leading NUL). Other kinds (vsock:) are not spoken."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


class Notifier:
    """Sends sd_notify messages. Never raises: a manager that went away must
    not take the mail server with it (a failure is logged once)."""

    def __init__(self, address: str, watchdog_usec: int | None = None) -> None:
        self.address = address
        # The manager's watchdog timeout (microseconds), or None: no watchdog.
        self.watchdog_usec = watchdog_usec
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     unset: bool = True) -> Notifier | None:
        """The notifier the environment asks for, or None outside systemd.
        `unset`: remove the variables, so that the worker processes and
        anything they run do not speak for the service (sd_notify's
        unset_environment)."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        raw = env.get(ENV_SOCKET, "")
        usec_text = env.get(ENV_WATCHDOG_USEC, "")
        pid_text = env.get(ENV_WATCHDOG_PID, "")
        if unset:
            for name in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(name, None)
        if not raw:
            return None
        address = _address(raw)
        if address is None:
            log.warning("%s=%s: not a socket path or @abstract name; not notifying",
                        ENV_SOCKET, raw)
            return None
        return cls(address, _watchdog_usec(usec_text, pid_text))

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half the manager's timeout (sd_watchdog_enabled)."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def send(self, fields: Mapping[str, object]) -> bool:
        """One message of KEY=VALUE lines; True when it was sent."""
        text = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items()) + "\n"
        try:
            self._sock.sendto(text.encode("utf-8"), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd: cannot notify %r: %s", self.address.lstrip("\0"),
                            exc.strerror or exc)
            return False
        self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send({"READY": 1, "STATUS": status, "MAINPID": os.getpid()})

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match the
        # reload with its request; plain Type=notify ignores it.
        return self.send({"RELOADING": 1, "STATUS": "reloading the files (SIGHUP)",
                          "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000})

    def reloaded(self, status: str) -> bool:
        return self.send({"READY": 1, "STATUS": status})

    def watchdog(self) -> bool:
        return self.send({"WATCHDOG": 1})

    def stopping(self) -> bool:
        return self.send({"STOPPING": 1, "STATUS": "stopping"})

    def close(self) -> None:
        self._sock.close()


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _watchdog_usec(usec_text: str, pid_text: str) -> int | None:
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("%s=%r is not a number: no watchdog", ENV_WATCHDOG_USEC, usec_text)
        return None
    if usec <= 0:
        return None
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None  # the watchdog is some other process's business
        except ValueError:
            return None
    return usec


def reload_status(problems: int) -> str:
    if problems:
        return f"running; the last reload kept the running copy of {problems} file(s)"
    return "running; files reloaded"


# ---------------------------------------------------------------- workers


_STARTED, _BEAT, _RELOADED, _PROBLEMS = range(4)
_FIELDS = 4


class HealthBoard:
    """What each worker tells the supervisor, in shared memory mapped before
    the fork: one row of doubles per worker slot (written only by that
    worker, read by the supervisor) and the number of the last reload the
    supervisor asked for. Times are CLOCK_MONOTONIC, which every process of
    the machine shares."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, (1 + slots * _FIELDS) * 8)
        self._cells = memoryview(self._map).cast("d")
        self.slot = 0

    def _at(self, slot: int, field: int) -> int:
        return 1 + slot * _FIELDS + field

    # -- the supervisor

    def reset_slot(self, slot: int) -> None:
        """Before a worker takes the slot: not started, and (it reads every
        file as it starts) no reload pending for it."""
        self._cells[self._at(slot, _STARTED)] = 0.0
        self._cells[self._at(slot, _BEAT)] = 0.0
        self._cells[self._at(slot, _RELOADED)] = self._cells[0]
        self._cells[self._at(slot, _PROBLEMS)] = 0.0

    def request_reload(self) -> int:
        self._cells[0] += 1
        return int(self._cells[0])

    def started(self, slot: int) -> bool:
        return self._cells[self._at(slot, _STARTED)] > 0

    def last_beat(self, slot: int) -> float:
        return self._cells[self._at(slot, _BEAT)]

    def reload_pending(self, slot: int) -> bool:
        return self._cells[self._at(slot, _RELOADED)] < self._cells[0]

    def problems(self, slot: int) -> int:
        return int(self._cells[self._at(slot, _PROBLEMS)])

    # -- a worker, in its own slot

    def use_slot(self, slot: int) -> None:
        self.slot = slot

    def mark_started(self) -> None:
        """The reactor runs with every file read: that answers any reload
        asked for while it started (it ignores SIGHUP until then)."""
        now = time.monotonic()
        self._cells[self._at(self.slot, _RELOADED)] = self._cells[0]
        self._cells[self._at(self.slot, _BEAT)] = now
        self._cells[self._at(self.slot, _STARTED)] = now

    def beat(self) -> None:
        self._cells[self._at(self.slot, _BEAT)] = time.monotonic()

    def reload_wanted(self) -> float:
        """Read before re-reading the files: the reload this one answers."""
        return self._cells[0]

    def mark_reloaded(self, generation: float, problems: int) -> None:
        self._cells[self._at(self.slot, _PROBLEMS)] = float(problems)
        self._cells[self._at(self.slot, _RELOADED)] = generation


class WorkerHealth:
    """What a worker's reactor reports: to systemd directly (one worker, the
    main process), to the supervisor's `HealthBoard` (several), or nowhere."""

    def __init__(self, notifier: Notifier | None = None, board: HealthBoard | None = None,
                 beat_interval: float | None = None) -> None:
        self.notifier = notifier
        self.board = board
        # How often the reactor calls `beat`; None: never.
        self.beat_interval = beat_interval
        if notifier is not None and beat_interval is None:
            self.beat_interval = notifier.watchdog_interval

    def started(self, status: str) -> None:
        if self.board is not None:
            self.board.mark_started()
        if self.notifier is not None:
            self.notifier.ready(status)

    def beat(self) -> None:
        if self.board is not None:
            self.board.beat()
        if self.notifier is not None and self.notifier.watchdog_usec is not None:
            self.notifier.watchdog()

    def reload_wanted(self) -> float:
        if self.notifier is not None:
            self.notifier.reloading()
        return self.board.reload_wanted() if self.board is not None else 0.0

    def reloaded(self, generation: float, problems: int) -> None:
        if self.board is not None:
            self.board.mark_reloaded(generation, problems)
        if self.notifier is not None:
            self.notifier.reloaded(reload_status(problems))

    def stopping(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()


class SupervisorHealth:
    """The supervisor's side: READY=1 once every worker started, WATCHDOG=1
    while every started worker beats, RELOADING=1 / READY=1 around a reload.
    `tick` is called from the supervisor's wait loop at least every `period`."""

    def __init__(self, notifier: Notifier, board: HealthBoard, status: str) -> None:
        self.notifier = notifier
        self.board = board
        self.status = status
        self.ready_sent = False
        self.reloading = False
        self._last_watchdog = 0.0

    @property
    def worker_beat_interval(self) -> float | None:
        """Workers beat four times per manager timeout, so that a healthy
        one is never older than half of it when the supervisor looks."""
        usec = self.notifier.watchdog_usec
        return None if usec is None else usec / 4e6

    def period(self) -> float | None:
        """The longest the supervisor may wait before the next `tick`."""
        waits: list[float] = []
        if not self.ready_sent or self.reloading:
            waits.append(0.05)
        interval = self.notifier.watchdog_interval
        if interval is not None:
            waits.append(interval / 2)
        return min(waits) if waits else None

    def request_reload(self) -> None:
        self.board.request_reload()
        if self.ready_sent:  # before READY=1, the workers are reading the files anyway
            self.reloading = True
            self.notifier.reloading()

    def tick(self, slots: list[int]) -> None:
        now = time.monotonic()
        if not self.ready_sent and slots and all(self.board.started(s) for s in slots):
            self.ready_sent = True
            self.notifier.ready(self.status)
        if self.reloading and not any(self.board.reload_pending(s) for s in slots):
            self.reloading = False
            self.notifier.reloaded(reload_status(max((self.board.problems(s) for s in slots),
                                                     default=0)))
        interval = self.notifier.watchdog_interval
        if interval is None or now - self._last_watchdog < interval:
            return
        usec = self.notifier.watchdog_usec or 0
        stale = [s for s in slots
                 if self.board.started(s) and now - self.board.last_beat(s) > usec / 2e6]
        if stale:
            # No WATCHDOG=1: systemd restarts the service when its timeout passes.
            log.error("watchdog: worker slot(s) %s stopped beating; not answering "
                      "systemd's watchdog", ", ".join(str(s) for s in stale))
            return
        self._last_watchdog = now
        self.notifier.watchdog()
