"""`mssctl serve`: every configured listener, in one or several worker processes.

The parent opens the listening sockets itself (so a taken port is reported
once, clearly, before anything forks), then either runs the reactor itself
(one worker) or forks workers that each adopt their own SO_REUSEPORT copy of
every socket with `mssctl.ports.adopt_port`, so the kernel spreads connections
across them. The per-address connection counts (`policy.connections`) are
shared memory mapped by the parent before the fork, one column per worker
slot, so the limits hold for the server as a whole. The parent never imports the Twisted reactor: a reactor (epoll
descriptor, threads) must not cross a fork. Shutdown: SIGTERM or SIGINT stops
the reactor of each worker (the parent forwards the signal and waits).
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from conf.settings import ListenerRole, ListenerSettings, LogFormat, Settings, TLSMode
from mssctl.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    config_path,
    load,
)
from mssctl.systemd import HealthBoard, Notifier, SupervisorHealth, WorkerHealth
from policy.connections import ConnectionCounts

log = logging.getLogger("mssctl.serve")

BACKLOG = 1024
STOP_GRACE = 10.0  # seconds a worker gets to finish before SIGKILL
DEMO_LOGINS_FILE = "demo-logins.txt"  # written by `mssctl init --demo`
MAX_RESPAWNS_PER_MINUTE = 5


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the SMTP and IMAP listeners",
        description="Run every listener of the settings file until SIGTERM or SIGINT.",
    )
    add_config_option(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: `workers` of the settings)")
    p.add_argument("--banner", action="store_true",
                   help="print how to connect (ports, CA file, demo logins)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


# ---------------------------------------------------------------- logging


class _QuietTwisted(logging.Filter):
    """Drops Twisted's per-factory chatter ("Starting factory ...")."""

    _NOISE = ("Starting factory", "Stopping factory")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO
                    and record.getMessage().startswith(self._NOISE))


def setup_logging(level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """Every log line of the daemon on stderr, as text or (`logging.format:
    json`) one JSON object per line (`mssctl.logformat`)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        force=True,
    )
    if log_format is LogFormat.JSON:
        from mssctl.logformat import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    # Alembic announces its plugins at INFO each time the schema revision is read.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietTwisted())


def _route_twisted_logs() -> None:
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    observer: Any = STDLibLogObserver(name="twisted")  # provides ILogObserver
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False, discardBuffer=True)


# ---------------------------------------------------------------- sockets


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _bind_error(listener: ListenerSettings, port: int, exc: OSError) -> CliError:
    where = f"listener {listener.name} ({listener.role.value}) cannot listen on {listener.address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "the port is already in use (is another server running?)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "the address is not one of this machine's"
    else:
        why = exc.strerror or str(exc)
    return CliError(f"{where}: {why}", EXIT_USAGE)


def _new_socket(listener: ListenerSettings, port: int, *, reuseport: bool) -> socket.socket:
    sock = socket.socket(_family(listener.address), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _bind_error(listener, port, exc) from None
    return sock


def _probe(listener: ListenerSettings) -> None:
    """Fails if anyone listens on the port, even with SO_REUSEPORT: a second
    server would otherwise silently share the port with the first."""
    sock = socket.socket(_family(listener.address), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.address, listener.port))
    except OSError as exc:
        raise _bind_error(listener, listener.port, exc) from None
    finally:
        sock.close()


@dataclass
class BoundListener:
    settings: ListenerSettings
    port: int  # the actual port (differs from settings.port when that is 0)


def open_listeners(
    listeners: list[ListenerSettings], copies: int, *, probe: bool = True
) -> tuple[list[BoundListener], list[list[socket.socket]]]:
    """Binds every listener `copies` times (SO_REUSEPORT); returns the bound
    listeners and, per copy, one socket per listener (same order). `probe`
    first checks that nobody else listens on the port."""
    bound: list[BoundListener] = []
    per_copy: list[list[socket.socket]] = [[] for _ in range(copies)]
    try:
        for lst in listeners:
            if probe and lst.port != 0:
                _probe(lst)
            first = _new_socket(lst, lst.port, reuseport=True)
            port = int(first.getsockname()[1])
            per_copy[0].append(first)
            for i in range(1, copies):
                per_copy[i].append(_new_socket(lst, port, reuseport=True))
            bound.append(BoundListener(lst, port))
    except BaseException:
        for socks in per_copy:
            for s in socks:
                s.close()
        raise
    return bound, per_copy


def open_metrics(settings: Settings, copies: int, port: int | None = None
                 ) -> list[socket.socket]:
    """`copies` SO_REUSEPORT sockets of the metrics endpoint (none when
    `metrics` is not set); `port`: the one already bound (a respawn)."""
    metrics = settings.metrics
    if metrics is None:
        return []
    socks: list[socket.socket] = []
    try:
        for _ in range(copies):
            sock = socket.socket(_family(metrics.address), socket.SOCK_STREAM)
            socks.append(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if port is None and metrics.port != 0:
                    _probe_address(metrics.address, metrics.port)
                sock.bind((metrics.address, metrics.port if port is None else port))
                sock.listen(BACKLOG)
                sock.setblocking(False)
            except OSError as exc:
                raise _metrics_bind_error(metrics.address, metrics.port, exc) from None
            port = int(sock.getsockname()[1])
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _probe_address(address: str, port: int) -> None:
    probe = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
    finally:
        probe.close()


def _metrics_bind_error(address: str, port: int, exc: OSError) -> CliError:
    why = ("the port is already in use (is another server running?)"
           if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
    return CliError(f"metrics cannot listen on {address}:{port}: {why}", EXIT_USAGE)


# ---------------------------------------------------------------- banner


_ROLE_TEXT = {
    ListenerRole.MX: "SMTP (mx, between operators)",
    ListenerRole.SUBMISSION: "SMTP submission",
    ListenerRole.IMAP: "IMAP",
    ListenerRole.AUTOCONFIG: "HTTPS client autoconfiguration (Thunderbird, Outlook)",
}
_TLS_TEXT = {
    TLSMode.NONE: "no TLS",
    TLSMode.STARTTLS: "STARTTLS",
    TLSMode.IMPLICIT: "TLS from the first byte",
}


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def banner(settings: Settings, bound: list[BoundListener], config: Path, workers: int,
           metrics_port: int | None = None) -> str:
    lines = [
        f"MSS mail server for {', '.join(settings.domains)} "
        f"(settings {config}, {workers} worker{'s' if workers != 1 else ''})",
        "",
        "Listening:",
    ]
    width = max(len(b.settings.name) for b in bound)
    for b in bound:
        lst = b.settings
        lines.append(
            f"  {lst.name:<{width}}  {lst.address}:{b.port:<5}  {_ROLE_TEXT[lst.role]}, "
            f"{_TLS_TEXT[lst.tls]}, client certificate {lst.client_cert.value}"
        )
    if settings.metrics is not None and metrics_port is not None:
        lines += ["", f"Metrics (Prometheus): http://{_host(settings.metrics.address)}:"
                      f"{metrics_port}/metrics"]
    lines += ["", "CA file to trust (import it as an authority in the mail client):"]
    lines += [f"  {p}" for p in settings.tls.ca_files] or ["  (none configured)"]
    demo = config.resolve().parent / DEMO_LOGINS_FILE
    if demo.is_file():
        lines += ["", demo.read_text(encoding="utf-8").rstrip()]
    lines += ["", "Stop with Ctrl-C."]
    return "\n".join(lines)


# ---------------------------------------------------------------- worker

# Set by a stop signal that arrives while a worker is still starting (the
# sockets already accept, so a user may well press Ctrl-C then): the worker
# then stops as soon as its reactor runs, cleanly, instead of dying mid-import.
_stop_requested = False


def _early_stop(signum: int, frame: FrameType | None) -> None:
    global _stop_requested
    _stop_requested = True


def install_early_stop() -> None:
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)
    # A reload asked for during start-up is moot: the files are being read now.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def freeze_startup_heap() -> int:
    """Moves every object alive now (the modules, the services, SQLAlchemy's
    metadata: about 130,000 in a worker) out of reach of the garbage
    collector's scans (`gc.freeze`): most live as long as the process, and
    a full collection then scans only what serving made. Measured under
    bench/imap_sessions.py, a full collection stopped a worker's reactor
    113-130 ms, and 23-26 ms with the start-up heap frozen. Called again
    after a reload: what was frozen before is scanned once more (the trust
    anchors, flows and whitelist a reload replaced, and what they held in
    cycles, are freed), then what lives is frozen. Returns how many objects
    are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def listening_status(bound: list[BoundListener]) -> str:
    """One line for systemd's STATUS=: what is served where."""
    return "serving " + ", ".join(
        f"{b.settings.name} {b.settings.address}:{b.port}" for b in bound)


def run_worker(settings: Settings, bound: list[BoundListener], socks: list[socket.socket],
               connections: ConnectionCounts | None = None,
               health: WorkerHealth | None = None,
               metrics_sock: socket.socket | None = None) -> int:
    """Runs one reactor with every listener; returns the exit status.
    `health` hears when the reactor runs with every listener and the store
    open, beats from the reactor, and hears of reloads (see mssctl.systemd).
    `metrics_sock`: this worker's copy of the metrics endpoint's socket."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from mssctl.ports import adopt_port
    from mssctl.runtime import (
        RuntimeProblem,
        build_services,
        factory_builder,
        proxied,
        relay_service,
        reload_files,
        start_housekeeping,
        start_ldap_sync,
        start_whitelist_refresh,
    )
    from storage.crypto import KeyFileError
    from storage.interface import StoreError

    _route_twisted_logs()
    r: Any = reactor
    try:
        services = build_services(settings, r, connections)
    except (RuntimeProblem, KeyFileError) as exc:
        print(f"mssctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"mssctl: cannot open the store: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        for b, sock in zip(bound, socks, strict=True):
            factory = proxied(services, b.settings,
                              factory_builder(b.settings)(services, b.settings))
            adopt_port(r, sock, factory)
            sock.close()  # adopt_port duplicated the descriptor
            log.info("%s listening on %s:%d", b.settings.name, b.settings.address, b.port)
    except RuntimeProblem as exc:
        print(f"mssctl: {exc}", file=sys.stderr)
        services.store.close()
        return EXIT_FAILURE
    if metrics_sock is not None and services.metrics is not None:
        from mssctl.metrics_http import metrics_site

        r.adoptStreamPort(metrics_sock.fileno(), metrics_sock.family, metrics_site(services))
        address, port = metrics_sock.getsockname()[:2]
        metrics_sock.close()
        log.info("metrics listening on %s:%d", address, port)
    relay = relay_service(services)
    if relay is not None:
        r.callWhenRunning(relay.start)
        r.addSystemEventTrigger("before", "shutdown", relay.stop)
    housekeeping = start_housekeeping(services)
    r.addSystemEventTrigger("before", "shutdown", housekeeping.stop)
    refresh = start_whitelist_refresh(services)
    if refresh is not None:
        r.addSystemEventTrigger("before", "shutdown", refresh.stop)
    directory_sync = start_ldap_sync(services)
    if directory_sync is not None:
        r.addSystemEventTrigger("before", "shutdown", directory_sync.stop)

    health = health or WorkerHealth()
    r.callWhenRunning(health.started, listening_status(bound))
    if health.beat_interval is not None:
        # From the reactor thread: a reactor that stalls stops beating.
        beat = LoopingCall(health.beat)
        beat.clock = r
        r.callWhenRunning(beat.start, health.beat_interval, now=False)

    stopping = False

    def stop_once() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log.info("stopping")
            health.stopping()
            r.stop()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        r.callFromThread(stop_once)

    def reload_and_report() -> None:
        generation = health.reload_wanted()
        problems = reload_files(services)
        log.info("heap frozen again after the reload: %d objects", freeze_startup_heap())
        health.reloaded(generation, sum(1 for p in problems if not p.startswith(" ")))

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        r.callFromThread(reload_and_report)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    if _stop_requested:
        r.callWhenRunning(stop_once)
    log.info("start-up heap frozen: %d objects left out of the collector's scans",
             freeze_startup_heap())
    r.run(installSignalHandlers=False)
    services.store.close()
    close = getattr(services.audit, "close", None)
    if close is not None:
        close()
    return EXIT_OK


# ---------------------------------------------------------------- supervisor


class Supervisor:
    """Forks the workers, forwards stop signals, respawns a crashed worker."""

    def __init__(
        self, settings: Settings, bound: list[BoundListener], socks: list[list[socket.socket]],
        connections: ConnectionCounts | None = None, notifier: Notifier | None = None,
        metrics_socks: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.bound = bound
        self.socks: list[list[socket.socket] | None] = list(socks)
        # One copy of the metrics socket per slot (None: metrics off, or
        # handed to the slot's worker).
        self.metrics_socks: list[socket.socket | None] = (
            list(metrics_socks) if metrics_socks else [None] * len(socks))
        self.metrics_port = (int(metrics_socks[0].getsockname()[1]) if metrics_socks
                             else None)
        self.connections = connections or ConnectionCounts(slots=len(socks))
        self.children: dict[int, int] = {}  # pid -> slot
        self.pidfds: dict[int, int] = {}  # pid -> pidfd (readable once it exited)
        self.stopping = False
        self.status = EXIT_OK
        self.respawns: list[float] = []
        # The workers' readiness, heartbeats and reloads (shared memory), and
        # systemd's view of them when it runs us.
        self.board = HealthBoard(len(socks))
        self.health = (SupervisorHealth(notifier, self.board, f"{len(socks)} workers, "
                                        + listening_status(bound))
                       if notifier is not None else None)

    def spawn(self, slot: int) -> None:
        socks = self.socks[slot]
        if socks is None:
            # A new copy joins the sockets the other workers still hold.
            fixed = [b.settings.model_copy(update={"port": b.port}) for b in self.bound]
            _, fresh = open_listeners(fixed, 1, probe=False)
            socks = fresh[0]
            if self.metrics_port is not None:
                self.metrics_socks[slot] = open_metrics(self.settings, 1,
                                                        self.metrics_port)[0]
        metrics_sock = self.metrics_socks[slot]
        # The previous worker of this slot (if any) is gone, and with it
        # every connection it counted.
        self.connections.reset_slot(slot)
        self.board.reset_slot(slot)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = EXIT_FAILURE
            try:
                install_early_stop()
                self.connections.use_slot(slot)
                self.board.use_slot(slot)
                for other in self.socks:
                    if other is not None and other is not socks:
                        for s in other:
                            s.close()
                for other_metrics in self.metrics_socks:
                    if other_metrics is not None and other_metrics is not metrics_sock:
                        other_metrics.close()
                for fd in self.pidfds.values():
                    os.close(fd)
                health = WorkerHealth(board=self.board, beat_interval=(
                    self.health.worker_beat_interval if self.health is not None else None))
                code = run_worker(self.settings, self.bound, socks, self.connections, health,
                                  metrics_sock)
            except BaseException:
                log.exception("worker failed")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for s in socks:  # the worker owns them now
            s.close()
        self.socks[slot] = None
        if metrics_sock is not None:
            metrics_sock.close()
            self.metrics_socks[slot] = None
        self.children[pid] = slot
        try:
            self.pidfds[pid] = os.pidfd_open(pid)
        except OSError:  # an old kernel: the wait loop polls instead
            pass

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("stopping %d worker(s)", len(self.children))
            if self.health is not None:
                self.health.notifier.stopping()
            signal.signal(signal.SIGALRM, self._kill_all)
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def forward_hangup(self, signum: int, frame: FrameType | None = None) -> None:
        if self.health is not None and not self.stopping:
            self.health.request_reload()
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def _kill_all(self, signum: int, frame: FrameType | None) -> None:
        for pid in list(self.children):
            log.error("worker %d did not stop in %.0f s: killing it", pid, STOP_GRACE)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.status = EXIT_FAILURE

    def run(self, workers: int) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.forward_hangup)
        for slot in range(workers):
            self.spawn(slot)
        if _stop_requested:  # a signal came while the sockets were being opened
            self.request_stop(signal.SIGTERM)
        while self.children:
            try:
                pid, wait_status = self._wait_child()
            except ChildProcessError:
                break
            if pid == 0:  # time to look at the workers' health
                if self.health is not None:
                    self.health.tick(list(self.children.values()))
                continue
            fd = self.pidfds.pop(pid, None)
            if fd is not None:
                os.close(fd)
            slot = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if self.metrics_port is not None:
                from policy.metrics import process_exited

                process_exited(pid)  # its open connections no longer count
            if self.stopping:
                if code not in (EXIT_OK, -signal.SIGTERM, -signal.SIGINT):
                    self.status = max(self.status, EXIT_FAILURE)
                continue
            if code in (EXIT_FAILURE, EXIT_USAGE):
                # run_worker only returns these when it cannot start (bad
                # certificate, store unreachable): the others will not either.
                # Its own message is already on stderr.
                self.status = code
                self.request_stop(signal.SIGTERM)
                continue
            log.error("worker %d exited with status %d: starting another", pid, code)
            now = time.monotonic()
            self.respawns = [t for t in self.respawns if now - t < 60] + [now]
            if len(self.respawns) > MAX_RESPAWNS_PER_MINUTE:
                log.error("workers keep dying: giving up")
                self.status = EXIT_FAILURE
                self.request_stop(signal.SIGTERM)
                continue
            try:
                self.spawn(slot)
            except CliError as exc:
                log.error("cannot restart worker: %s", exc.message)
                self.status = EXIT_FAILURE
                self.request_stop(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, 0)
        return self.status

    def _wait_child(self) -> tuple[int, int]:
        """The next worker that exited, as os.waitpid gives it, or (0, 0)
        when `health` wants a tick first. Waits on the workers' pidfds with
        select, which a signal interrupts only to run its handler."""
        timeout = self.health.period() if self.health is not None else None
        if timeout is None and len(self.pidfds) == len(self.children):
            return os.waitpid(-1, 0)
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, wait_status
        if len(self.pidfds) == len(self.children):
            select.select(list(self.pidfds.values()), [], [], timeout)
        else:
            time.sleep(min(timeout or 0.5, 0.5))
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        return pid, wait_status


# ---------------------------------------------------------------- command


def _prepare_fork(settings: Settings) -> None:
    from mssctl.runtime import RuntimeProblem, check_store, preload
    from storage.crypto import KeyFileError
    from storage.interface import StoreError

    try:
        preload(settings)
    except RuntimeProblem as exc:  # a protocol module is missing: installation problem
        raise CliError(str(exc)) from None
    try:
        check_store(settings)
    except KeyFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except StoreError as exc:
        raise CliError(f"cannot open the store: {exc}") from None
    if "twisted.internet.reactor" in sys.modules:
        # A reactor (its epoll descriptor) shared by forked workers misroutes events.
        raise CliError("internal error: the Twisted reactor was imported before forking")


PID_FILE = "mss.pid"  # beside the settings file: `mssctl policy reload` signals it


def pid_file(config: Path) -> Path:
    """Where `serve` records the pid that takes SIGHUP (the parent, which
    forwards it to every worker)."""
    return config.resolve().parent / PID_FILE


def _write_pid(path: Path) -> None:
    try:
        path.write_text(f"{os.getpid()}\n", encoding="ascii")
    except OSError as exc:  # a read-only directory: reload by SIGHUP still works
        log.warning("cannot write %s: %s", path, exc.strerror or exc)


def _remove_pid(path: Path) -> None:
    try:
        if path.read_text(encoding="ascii").strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def run(args: argparse.Namespace) -> int:
    pid_path = pid_file(config_path(args))
    # Read (and removed from the environment) first, before any fork: only
    # this process speaks to systemd (NotifyAccess=main).
    notifier = Notifier.from_environ()
    try:
        return _run(args, pid_path, notifier)
    except CliError as exc:
        if notifier is not None:  # `systemctl status` then says why it did not start
            notifier.send({"STATUS": f"cannot start: {exc.message}"})
        raise
    finally:
        _remove_pid(pid_path)  # only ours: a second serve refused at bind leaves it


def _run(args: argparse.Namespace, pid_path: Path, notifier: Notifier | None) -> int:
    settings = load(args, check_files=True)
    workers = args.workers if args.workers is not None else settings.workers
    if not 1 <= workers <= 64:
        raise CliError("--workers: expected an integer from 1 to 64", EXIT_USAGE)
    setup_logging(args.log_level, settings.logging.format)
    bound, socks = open_listeners(list(settings.listeners), workers)
    metrics_socks = open_metrics(settings, workers)
    if settings.metrics is not None:
        assert settings.metrics.directory is not None  # the loader's default
        from policy.metrics import enable_multiprocess

        try:
            enable_multiprocess(settings.metrics.directory)  # before any fork
        except OSError as exc:
            raise CliError(f"metrics.directory: cannot use {settings.metrics.directory}: "
                           f"{exc.strerror or exc}", EXIT_USAGE) from None
    metrics_port = int(metrics_socks[0].getsockname()[1]) if metrics_socks else None
    connections = ConnectionCounts(slots=workers)  # before any fork: shared
    install_early_stop()
    _write_pid(pid_path)
    if workers > 1:
        _prepare_fork(settings)
    if args.banner:
        print(banner(settings, bound, config_path(args), workers, metrics_port), flush=True)
    if workers == 1:
        return run_worker(settings, bound, socks[0], connections, WorkerHealth(notifier),
                          metrics_socks[0] if metrics_socks else None)
    return Supervisor(settings, bound, socks, connections, notifier, metrics_socks).run(workers)
