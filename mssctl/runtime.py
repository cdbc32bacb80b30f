"""Building the run-time `Services` from `Settings`, once per worker process.

Everything here opens files or connections, so it runs in the worker *after*
the fork: a SQLite connection or an OpenSSL context must never cross a fork.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from conf.settings import ListenerRole, ListenerSettings, Settings, TLSMode
from policy.audit import FileAuditSink, record_certificate_refusal
from policy.auth import Authenticator
from policy.connections import ConnectionCounts
from policy.decisions import Policy
from policy.services import Services
from policy.whitelist import Whitelist, WhitelistError
from storage.interface import MessageStore, StoreUnavailable
from storage.threaded import runner_for

log = logging.getLogger(__name__)

# Which module builds the protocol factory of each listener role. Imported
# lazily so that `mssctl` admin commands never pay for the protocol code.
FACTORY_MODULES: dict[ListenerRole, str] = {
    ListenerRole.MX: "mssmtpd.server",
    ListenerRole.SUBMISSION: "mssmtpd.server",
    ListenerRole.IMAP: "imapd.server",
    ListenerRole.AUTOCONFIG: "mssctl.autoconfig.server",
}


class RuntimeProblem(Exception):
    """The server cannot start with these settings; the message says why."""


def load_whitelist(settings: Settings) -> Whitelist | None:
    path = settings.policy.whitelist_file
    if path is None:
        return None
    if not path.is_file():
        log.warning("whitelist file %s not found: relaying is not restricted by it", path)
        return None
    try:
        return Whitelist.load(path)
    except WhitelistError as exc:
        raise RuntimeProblem(f"policy.whitelist_file: {exc}") from None


def load_flows(settings: Settings) -> Any:
    """The flow matrix (`policy.flows_file`) in a `FlowMatrixHolder`, or None
    when none is configured. A matrix with problems stops the start: the
    message lists each one as file:line: rule ID: problem."""
    path = settings.policy.flows_file
    if path is None:
        return None
    from policy.flows import FlowMatrixError, FlowMatrixHolder, listener_roles

    try:
        holder = FlowMatrixHolder.load(path, listener_roles(settings))
    except FlowMatrixError as exc:
        raise RuntimeProblem("policy.flows_file: the flow matrix is invalid:\n  "
                             + "\n  ".join(str(p) for p in exc.problems)) from None
    log.info("flow matrix %s: %s", path, holder.matrix.summary())
    return holder


def build_tls(settings: Settings) -> Any:
    """certs.tls.ServerTLS, or None when no listener uses TLS."""
    if all(lst.tls is TLSMode.NONE for lst in settings.listeners):
        return None
    try:
        from certs.tls import ServerTLS
    except ImportError as exc:
        raise RuntimeProblem(f"TLS support is not available ({exc})") from None
    try:
        return ServerTLS(settings.tls)
    except Exception as exc:
        # The certificate files are named by the operator: say which one failed.
        raise RuntimeProblem(f"tls: cannot load certificates: {exc}") from None


# Threads asking the identity provider (HTTPS): its own pool, so that a slow
# provider never holds the store's threads.
PROVIDER_THREADS = 2


def build_authenticator(policy: Policy, runner: Any, reactor: Any) -> Authenticator:
    """The portal; token logins when `identity_provider` is configured;
    directory binds (method "ldap") on `ldap.bind_pool_size` threads of
    their own when `ldap` is configured."""
    from storage.threaded import StoreRunner

    ldap = policy.settings.ldap
    binder_runner = (StoreRunner(reactor, ldap.bind_pool_size, name="ldap")
                     if ldap is not None else None)
    settings = policy.settings.identity_provider
    if settings is None:
        return Authenticator(policy, runner, binder_runner=binder_runner)
    from policy.idp import IdentityProvider

    try:
        provider = IdentityProvider(settings)
    except OSError as exc:
        raise RuntimeProblem(f"identity_provider: cannot read {exc.filename}: "
                             f"{exc.strerror}") from None
    return Authenticator(policy, runner, provider=provider,
                         provider_runner=StoreRunner(reactor, PROVIDER_THREADS, name="idp"),
                         binder_runner=binder_runner)


def build_services(settings: Settings, reactor: Any,
                   connections: ConnectionCounts | None = None) -> Services:
    """Opens the store and wires policy, audit, authentication and TLS.
    `connections`: the per-address counts shared with the other workers
    (made by the parent before the fork); None = this process's own."""
    from storage import open_store

    store = open_store(
        settings.database.url, settings.key_file, pool_size=settings.database.pool_size
    )
    try:
        verify_keys(settings, store)
        audit = FileAuditSink(settings.audit.path, store)
        policy = Policy(settings, store, audit, load_whitelist(settings),
                        flows=load_flows(settings))
        # Quick reads run on the reactor thread: only while recording an
        # audit event never waits for the database there, and while the
        # pool (pool_size, and twice as many more on SQLite) always has a
        # connection for it beside the store threads, the writer lane and
        # the audit mirror.
        db = settings.database
        runner = runner_for(reactor, store, db.threads,
                            quick_reads=audit.nonblocking and db.threads + 3 <= 3 * db.pool_size,
                            hold=audit.held)
        services = Services(
            settings=settings,
            store=store,
            policy=policy,
            audit=audit,
            runner=runner,
            authenticator=build_authenticator(policy, runner, reactor),
            reactor=reactor,
            tls=build_tls(settings),
            connections=connections if connections is not None else ConnectionCounts(),
        )
        if settings.metrics is not None:
            services.metrics = attach_metrics(services)
        if services.tls is not None:
            services.tls.on_refusal = lambda event: record_certificate_refusal(
                audit, runner.run, event)
    except BaseException:
        store.close()
        raise
    return services


def attach_metrics(services: Services) -> Any:
    """This process's `policy.metrics.Metrics`, told of every audit event
    and every store write transaction."""
    from policy.metrics import Metrics

    metrics = Metrics()
    observer = getattr(services.audit, "observer", False)
    if observer is None:
        services.audit.observer = metrics.audit_event  # type: ignore[attr-defined]
    if hasattr(services.store, "write_observer"):
        services.store.write_observer = metrics.store_write
    gate = getattr(services.store, "write_gate", None)
    if gate is not None:
        gate.observer = metrics.store_write_lock
    publisher = metrics.start_publishing()
    if publisher is not None:
        services.reactor.addSystemEventTrigger("after", "shutdown", publisher.stop)
    return metrics


def factory_builder(listener: ListenerSettings) -> Any:
    """The `build_factory(services, listener)` function for a listener's role."""
    name = FACTORY_MODULES[listener.role]
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeProblem(
            f"listener {listener.name}: {name} is not available ({exc})"
        ) from None
    return module.build_factory


def proxied(services: Services, listener: ListenerSettings, factory: Any) -> Any:
    """The listener's factory behind the PROXY protocol when it is enabled
    (`listeners[].proxy_protocol`): refusals are audited as connections
    denied (reason proxy-untrusted, proxy-header, proxy-timeout)."""
    if not listener.proxy_protocol:
        return factory
    from policy.proxy import ProxyProtocolFactory

    def refused(host: str, reason: str, detail: str) -> None:
        services.record_audit(host, "connection", listener.name, "deny", reason=reason,
                              listener=listener.name, peer=host, detail=detail)

    return ProxyProtocolFactory(factory, listener=listener.name, networks=listener.proxy_from,
                                clock=services.reactor, refused=refused)


def preload(settings: Settings) -> None:
    """Imports, in the parent, everything the workers will need, so that each
    forked worker starts in milliseconds instead of re-importing SQLAlchemy,
    OpenSSL and the protocols. Never imports the reactor (see serve.py)."""
    modules = {"storage.store", "mssmtpd.relay"}
    if any(lst.tls is not TLSMode.NONE for lst in settings.listeners):
        modules.add("certs.tls")
    for lst in settings.listeners:
        factory_builder(lst)  # imports the protocol, or says which is missing
    for name in sorted(modules):
        try:
            importlib.import_module(name)
        except ImportError:
            log.debug("preload: %s not importable", name)


def check_store(settings: Settings) -> None:
    """Opens and closes the store once: a database that needs `mssctl db
    upgrade`, or a bad key file (one that cannot read the stored data
    either), is reported once, before any fork."""
    from storage import open_store

    store = open_store(settings.database.url, settings.key_file, pool_size=1)
    try:
        verify_keys(settings, store)
    finally:
        store.close()


def verify_keys(settings: Settings, store: MessageStore) -> None:
    """Refuses to serve a database the key file cannot read (restored
    without its own key file): every message would fail at its first
    FETCH. Raises KeyFileError naming what is wrong and what to do."""
    from storage.crypto import KeyFileError

    problems = store.check_keys()
    if problems:
        raise KeyFileError(
            f"key_file {settings.key_file} cannot read this database: " + "; ".join(problems)
            + ". Put back the key file saved with this database (README: Backup and restore)")


def relay_service(services: Services) -> Any | None:
    """mssmtpd.relay.RelayService for this worker, or None if not installed."""
    try:
        from mssmtpd.relay import RelayService
    except ImportError as exc:
        log.warning("outbound relay not available (%s): queued mail will wait", exc)
        return None
    return RelayService(services)


# ---------------------------------------------------------------- while running

AUDIT_PURGE_INTERVAL = 3600.0  # seconds


def purge_old_audit(services: Services) -> Any:
    """Deletes stored audit events older than `audit.retention_days` (off the
    reactor); returns the Deferred. The JSON-lines file is left to the
    system's log rotation."""
    from datetime import UTC, datetime, timedelta

    cutoff = datetime.now(UTC) - timedelta(days=services.settings.audit.retention_days)

    def done(count: int) -> None:
        if count:
            log.info("audit: purged %d event(s) older than %s", count, cutoff.date())

    def failed(failure: Any) -> None:
        log.warning("audit: purge failed: %s", failure.getErrorMessage())

    d = services.runner.run(services.store.purge_audit, cutoff)
    d.addCallbacks(done, failed)
    return d


def purge_login_failures(services: Services) -> Any:
    """Deletes the login-throttle states the lockout rule has forgotten (off
    the reactor); returns the Deferred."""

    def failed(failure: Any) -> None:
        log.warning("login throttle: purge failed: %s", failure.getErrorMessage())

    d = services.runner.run(services.policy.throttle.purge)
    d.addErrback(failed)
    return d


# Every worker of every node asks for the housekeeping leases this often; the
# one that takes a lease runs that job, and nobody runs it again before the
# lease (AUDIT_PURGE_INTERVAL) ends: a worker or node that died holding it
# delays the job by at most one tick past the lease.
HOUSEKEEPING_TICK = 300.0


def lease_holder() -> str:
    """Who holds a job lease, for the table and the logs: host and pid."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def run_leased(services: Services, job: str, period: float, fn: Any,
               *, now: Any = None) -> Any:
    """Runs ``fn(services)`` (which returns a Deferred) if this worker takes
    the lease of `job` for `period` seconds (`MessageStore.claim_job`, off the
    reactor): with several workers and nodes on one database, one of them
    runs each job once per period. Returns a Deferred fired when done."""
    from datetime import UTC, datetime, timedelta

    start = now if now is not None else datetime.now(UTC)
    d = services.runner.run(services.store.claim_job, job, lease_holder(), start,
                            start + timedelta(seconds=period))

    def claimed(won: bool) -> Any:
        if not won:
            return None
        log.debug("%s: this worker runs it (lease of %.0f s)", job, period)
        return fn(services)

    def failed(failure: Any) -> None:
        log.warning("%s: cannot take the job lease: %s", job, failure.getErrorMessage())

    d.addCallbacks(claimed, failed)
    return d


def housekeeping(services: Services) -> Any:
    """One round of the periodic tasks, each run by whichever worker (of any
    node) takes its lease; returns a Deferred fired when done."""
    from twisted.internet import defer

    return defer.DeferredList([
        run_leased(services, "audit-purge", AUDIT_PURGE_INTERVAL, purge_old_audit),
        run_leased(services, "login-throttle-purge", AUDIT_PURGE_INTERVAL,
                   purge_login_failures),
    ])


def start_housekeeping(services: Services) -> Any:
    """Periodic tasks of a worker; returns the LoopingCall (stop it at shutdown)."""
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(housekeeping, services)
    loop.clock = services.reactor
    loop.start(HOUSEKEEPING_TICK, now=True)
    return loop


# How often a worker looks for a whitelist another worker fetched (and tries
# the fetch's lease): a new list reaches every worker of every node within it.
WHITELIST_POLL = 60.0


def start_whitelist_refresh(services: Services) -> Any:
    """When `policy.whitelist_url` is set: every worker ticks now and every
    WHITELIST_POLL seconds (or `policy.whitelist_refresh`, if shorter), on the
    reactor's thread pool (never the store's, never the reactor). The one
    that takes the fetch's job lease (`policy.whitelist_refresh` long)
    fetches the URL and keeps the document in the store; the others take it
    from there (`policy.whitelist_fetch.SharedWhitelist`). Returns the
    LoopingCall, or None."""
    policy_settings = services.settings.policy
    url, copy = policy_settings.whitelist_url, policy_settings.whitelist_file
    if url is None or copy is None:
        return None
    from datetime import UTC, datetime, timedelta

    from twisted.internet import threads
    from twisted.internet.task import LoopingCall

    from mssctl.ldap import holder_name
    from policy.whitelist_fetch import SharedWhitelist

    shared = SharedWhitelist(services.policy, services.store, url, copy,
                             policy_settings.whitelist_ca_file, holder_name("whitelist"),
                             timedelta(seconds=policy_settings.whitelist_refresh))

    def once() -> Any:
        d = threads.deferToThreadPool(
            services.reactor, services.reactor.getThreadPool(), shared.tick,
            datetime.now(UTC))

        def done(result: Any) -> None:
            if result is None:
                return
            source = "the store (fetched by another worker)" if result.shared else url
            if result.ok:
                log.info("whitelist: %d domains from %s (generated %s)", result.domains,
                         source, result.generated)
            else:
                log.warning("whitelist: cannot refresh from %s: %s; keeping the running list",
                            source, result.reason)

        def failed(failure: Any) -> None:
            if failure.check(StoreUnavailable):  # the lease and the shared copy live there
                log.warning("whitelist: store unavailable (%s); keeping the running list",
                            failure.value)
            else:
                log.error("whitelist refresh failed: %s", failure.getTraceback())

        d.addCallbacks(done, failed)
        return d

    loop = LoopingCall(once)
    loop.clock = services.reactor
    loop.start(min(WHITELIST_POLL, policy_settings.whitelist_refresh), now=True)
    return loop


def start_ldap_sync(services: Services) -> Any:
    """When `ldap` is configured with a `sync_interval`: synchronise with the
    directory now and every `sync_interval` seconds, on the reactor's thread
    pool (LDAP and the store block). Every worker of every node tries; the
    database lease lets one run at a time, and only when no run started
    within the last 0.9 interval. Returns the LoopingCall, or None."""
    ldap = services.settings.ldap
    if ldap is None or not ldap.sync_interval:
        return None
    from twisted.internet import threads
    from twisted.internet.task import LoopingCall

    from mssctl.ldap import holder_name
    from policy.ldapsync import sync_with_lease

    holder = holder_name("serve")

    def once() -> Any:
        d = threads.deferToThreadPool(
            services.reactor, services.reactor.getThreadPool(), sync_with_lease,
            ldap, services.store, services.audit, holder, min_interval=ldap.sync_interval * 0.9,
            started_by="system")

        def done(run: Any) -> None:
            if run.skipped is not None:
                log.debug("ldap sync: skipped: %s", run.skipped)
            elif run.error is not None:
                log.warning("ldap sync: %s", run.error)
            else:
                log.info("ldap sync: %d change(s), %d people, %d groups, %.1f s",
                         len(run.report.changes), run.report.people, run.report.groups,
                         run.report.duration)

        d.addCallbacks(done, lambda f: log.error("ldap sync failed: %s", f.getTraceback()))
        return d

    loop = LoopingCall(once)
    loop.clock = services.reactor
    loop.start(ldap.sync_interval, now=True)
    return loop


def reload_files(services: Services) -> list[str]:
    """SIGHUP: reopen the audit log (log rotation), re-read the CA files,
    CRLs, certificates and keys (`ServerTLS.reload`) and the whitelist, keeping the running copies of whatever
    is broken; returns the problems (also logged). One "reload" audit
    event, in the new audit file, says what was reloaded and how."""
    import os

    problems: list[str] = []
    details: dict[str, Any] = {"signal": "SIGHUP", "pid": os.getpid()}
    reopen = getattr(services.audit, "reopen", None)
    if reopen is not None:
        details["audit_log_reopened"] = bool(reopen())
        if not details["audit_log_reopened"]:
            problems.append(f"audit log {services.settings.audit.path} not reopened")
    if services.tls is not None:
        problems += list(services.tls.reload())
        status = services.tls.trust.status()
        details.update(ca_certificates=status.anchors, crls=status.crls,
                       **{f"tls_{k}": v for k, v in services.tls.reloaded.items()})
    path = services.settings.policy.whitelist_file
    if path is not None and path.is_file():
        try:
            services.policy.whitelist = Whitelist.load(path)
        except WhitelistError as exc:
            problems.append(f"{exc}; keeping the previous whitelist")
    flows = services.policy.flows
    if flows is not None:
        result = flows.reload()
        details.update(flow_rules=result.rules, flow_checksum=result.checksum,
                       flow_matrix_changed=result.changed)
        if result.ok:
            log.info("reload: %s", result.summary())
        else:
            problems.append(result.summary())
            problems += [f"  {p}" for p in result.problems]
    whitelist = services.policy.whitelist
    if whitelist is not None:
        details.update(whitelist_domains=len(whitelist.domains),
                       whitelist_generated=whitelist.generated)
    for problem in problems:
        log.warning("reload: %s", problem)
    log.info("reload: done%s", f" with {len(problems)} problem(s)" if problems else "")
    services.record_audit("system", "reload", services.settings.hostname,
                          "partial" if problems else "ok", problems=problems, **details)
    return problems
