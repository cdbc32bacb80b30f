"""The Prometheus endpoint of `mssctl serve` (`metrics:` in mss.yaml).

Every worker serves `GET /metrics` on its own SO_REUSEPORT copy of one
socket (bound by the parent like the mail listeners), and each answer is the
whole server's: the sum of every worker's values, read from the
multiprocess directory (`policy.metrics.exposition`), plus the queue gauges
read from the database by the answering worker. Neither read runs on the
reactor: the database one on a store thread (and cached for
`metrics.cache_seconds`), the files on the reactor's thread pool.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from twisted.internet import threads
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from policy.metrics import Metrics, QueueGauges, exposition
from policy.services import Services

log = logging.getLogger(__name__)

PATH = b"/metrics"
REQUEST_TIMEOUT = 30  # seconds an idle scrape connection is kept


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, services: Services, metrics: Metrics, cache_seconds: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.services = services
        self.metrics = metrics
        self.queue = QueueGauges(services.store.queue_stats, cache_seconds)

    def render_GET(self, request: Any) -> Any:
        if request.path != PATH:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: the metrics are at /metrics\n"
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        reactor = self.services.reactor
        d = self.services.runner.run(self.queue.refresh)
        d.addCallback(lambda _: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), exposition, self.metrics, [self.queue]))

        def write(body: bytes) -> None:
            if gone:
                return
            request.setHeader(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            log.error("metrics: scrape failed: %s", failure.getTraceback())
            if gone:
                return
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(b"metrics could not be collected (see the server log)\n")
            request.finish()

        d.addCallbacks(write, failed)
        return server.NOT_DONE_YET


class _QuietSite(server.Site):
    """No access log line per scrape (every 15 s from each Prometheus)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def metrics_site(services: Services) -> server.Site:
    settings = services.settings.metrics
    assert settings is not None and services.metrics is not None
    resource = MetricsResource(services, services.metrics, settings.cache_seconds)
    return _QuietSite(resource, timeout=REQUEST_TIMEOUT)  # type: ignore[no-untyped-call]
