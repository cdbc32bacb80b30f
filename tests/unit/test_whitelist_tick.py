"""`mssctl.runtime.start_whitelist_refresh`: what a worker's tick logs, run
by a LoopingCall on a test clock with a thread pool that runs inline."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from whitelist_agency import GOOD, Agency

from policy.audit import FileAuditSink
from storage.interface import StoreUnavailable


class InlinePool:
    def callInThreadWithCallback(self, on_result: Any, fn: Any, *args: Any,  # noqa: N802
                                 **kwargs: Any) -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException:  # noqa: BLE001 - handed over, as a ThreadPool does
            on_result(False, Failure())  # type: ignore[no-untyped-call]
        else:
            on_result(True, result)


class InlineReactor(Clock):
    def getThreadPool(self) -> InlinePool:  # noqa: N802
        return InlinePool()

    def callFromThread(self, fn: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        fn(*args, **kwargs)


class DownStore:
    def claim_job(self, *args: Any) -> bool:
        raise StoreUnavailable("database unavailable")

    def shared_file(self, *args: Any) -> None:
        raise StoreUnavailable("database unavailable")


def _services(store: Any, agency: Agency, copy: Path) -> Any:
    policy = SimpleNamespace(whitelist_url=agency.url, whitelist_file=copy,
                             whitelist_ca_file=agency.ca_file, whitelist_refresh=21600.0)
    return SimpleNamespace(settings=SimpleNamespace(policy=policy), store=store,
                           policy=SimpleNamespace(audit=FileAuditSink(None), whitelist=None),
                           reactor=InlineReactor())


def test_ticks_fetch_then_find_nothing_new_every_minute(
        store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mssctl.runtime import WHITELIST_POLL, start_whitelist_refresh

    agency = Agency(tmp_path)
    try:
        services = _services(store, agency, tmp_path / "whitelist.xml")
        with caplog.at_level(logging.INFO, logger="mssctl"):
            loop = start_whitelist_refresh(services)
            assert agency.requests == 1 and (tmp_path / "whitelist.xml").read_bytes() == GOOD
            assert "whitelist: 2 domains from " + agency.url in caplog.text
            caplog.clear()
            services.reactor.advance(WHITELIST_POLL)  # the lease runs: nothing to do
            assert agency.requests == 1 and caplog.text == ""
            loop.stop()
    finally:
        agency.close()


def test_a_store_that_is_down_is_a_warning_not_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mssctl.runtime import start_whitelist_refresh

    agency = Agency(tmp_path)
    try:
        services = _services(DownStore(), agency, tmp_path / "whitelist.xml")
        with caplog.at_level(logging.INFO, logger="mssctl"):
            start_whitelist_refresh(services).stop()
        assert "whitelist: store unavailable (database unavailable); keeping the running " \
               "list" in caplog.text
        assert "Traceback" not in caplog.text and agency.requests == 0
    finally:
        agency.close()
