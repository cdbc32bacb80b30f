"""A small launcher for the SMTP listeners alone: e2e tests and the benchmark.

    python -m mssmtpd.devserve --settings settings.json --ports-file ports.json
        [--workers N] [--relay]

Reads `Settings` as JSON, opens every SMTP listener (port 0 allowed) with one
SO_REUSEPORT socket per worker, writes {listener name: port} to the ports
file once listening, forks the workers, each adopting its sockets with
`mssctl.ports.adopt_port` (the same shape as `mssctl serve`, which is what
production uses). SIGTERM stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from conf.settings import ListenerRole, Settings
from policy.connections import ConnectionCounts

log = logging.getLogger("mssmtpd.devserve")


def open_sockets(settings: Settings, workers: int) -> tuple[dict[str, int], list[list[socket.socket]]]:
    """Per worker, one socket per SMTP listener (all on the same port): the
    sockets of `mssctl serve`, for the SMTP listeners only."""
    from mssctl.serve import open_listeners

    smtp = [x for x in settings.listeners if x.role in (ListenerRole.MX, ListenerRole.SUBMISSION)]
    bound, per_worker = open_listeners(smtp, workers, probe=False)
    return {b.settings.name: b.port for b in bound}, per_worker


def run_worker(settings: Settings, socks: list[socket.socket], relay: bool,
               audit_mirror: bool = True, stats_file: Path | None = None,
               connections: ConnectionCounts | None = None) -> int:
    from twisted.internet import reactor

    from mssctl.ports import adopt_port
    from mssctl.runtime import build_services
    from mssmtpd.relay import RelayService
    from mssmtpd.server import build_factory

    r: Any = reactor
    services = build_services(settings, r, connections)
    if not audit_mirror:
        # Diagnostic only (bench): audit events to the file, not to the store.
        from policy.audit import FileAuditSink

        services.audit = FileAuditSink(settings.audit.path, None)
        services.policy.audit = services.audit
    smtp = [x for x in settings.listeners if x.role in (ListenerRole.MX, ListenerRole.SUBMISSION)]
    factories = []
    for lst, sock in zip(smtp, socks, strict=True):
        factory = build_factory(services, lst)
        factories.append(factory)
        adopt_port(r, sock, factory)
        sock.close()
    if relay:
        service = RelayService(services)
        r.callWhenRunning(service.start)
        r.addSystemEventTrigger("before", "shutdown", service.stop)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        r.callFromThread(r.stop)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    r.run(installSignalHandlers=False)
    # The audit sink first: its store mirror flushes what is still queued.
    close = getattr(services.audit, "close", None)
    if close is not None:
        close()
    services.store.close()
    if stats_file is not None:
        _write_stats(stats_file, factories)
    return 0


def _write_stats(path: Path, factories: list[Any]) -> None:
    """Group-commit figures of this worker, for the benchmark: one JSON line
    appended per worker."""
    commits = messages = 0
    for factory in factories:
        delivery = getattr(factory, "delivery", None)
        commits += getattr(delivery, "commits", 0)
        messages += getattr(delivery, "committed", 0)
    line = json.dumps({"pid": os.getpid(), "commits": commits, "messages": messages})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mssmtpd.devserve")
    ap.add_argument("--settings", required=True, type=Path)
    ap.add_argument("--ports-file", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--relay", action="store_true")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-audit-mirror", action="store_true",
                    help="diagnostic: do not mirror audit events into the store")
    ap.add_argument("--stats-file", type=Path,
                    help="append each worker's group-commit counts (JSON) at exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = Settings.model_validate_json(args.settings.read_text())
    if settings.metrics is not None and settings.metrics.directory is not None:
        # Counted as `mssctl serve` counts (no endpoint here): the bench's
        # figure with metrics on.
        from policy.metrics import enable_multiprocess

        enable_multiprocess(settings.metrics.directory)
    ports, per_worker = open_sockets(settings, args.workers)
    connections = ConnectionCounts(slots=args.workers)  # shared by the workers
    tmp = args.ports_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.rename(args.ports_file)
    if args.workers == 1:
        return run_worker(settings, per_worker[0], args.relay, not args.no_audit_mirror,
                          args.stats_file, connections)
    children: list[int] = []
    for w in range(args.workers):
        pid = os.fork()
        if pid == 0:
            for other, socks in enumerate(per_worker):
                if other != w:
                    for s in socks:
                        s.close()
            code = 1
            try:
                connections.use_slot(w)
                code = run_worker(settings, per_worker[w], args.relay and w == 0,
                                  not args.no_audit_mirror, args.stats_file, connections)
            finally:
                os._exit(code)
        children.append(pid)
    for socks in per_worker:
        for s in socks:
            s.close()

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                status = status or os.waitstatus_to_exitcode(st)
                break
            except InterruptedError:
                continue
    return status


if __name__ == "__main__":
    sys.exit(main())
