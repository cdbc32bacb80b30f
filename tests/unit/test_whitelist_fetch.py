"""The whitelist fetched from an HTTPS URL (a real HTTPS server on 127.0.0.1
with a trustme certificate): a valid document replaces the last good copy and
the running list; a broken, unreachable or plain-http one keeps both."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme
from pydantic import ValidationError
from whitelist_agency import GOOD, OP_A, Agency, document

from conf.settings import PolicySettings
from policy.audit import FileAuditSink
from policy.whitelist import Whitelist
from policy.whitelist_fetch import refresh_whitelist


@pytest.fixture
def agency(tmp_path: Path) -> Iterator[Agency]:
    a = Agency(tmp_path)
    yield a
    a.close()


def _policy(whitelist: Whitelist | None = None) -> Any:
    return SimpleNamespace(audit=FileAuditSink(None), whitelist=whitelist)


def test_a_valid_document_becomes_the_copy_and_the_running_list(
        agency: Agency, tmp_path: Path) -> None:
    copy = tmp_path / "whitelist.xml"
    policy = _policy()
    result = refresh_whitelist(policy, agency.url, copy, agency.ca_file, timeout=10)
    assert result.ok and result.domains == 2
    assert copy.read_bytes() == GOOD
    assert policy.whitelist.allows("clinique.test", OP_A)
    (event,) = policy.audit.events
    assert (event.actor, event.action, event.target, event.result) == (
        "system", "whitelist-refresh", agency.url, "ok")
    assert event.details["domains"] == 2


@pytest.mark.parametrize("body", [b"<not a whitelist", b"", document()[:40]])
def test_a_broken_document_keeps_the_copy_and_the_list(
        agency: Agency, tmp_path: Path, body: bytes) -> None:
    copy = tmp_path / "whitelist.xml"
    copy.write_bytes(GOOD)
    running = Whitelist.parse(GOOD)
    policy = _policy(running)
    agency.body = body
    result = refresh_whitelist(policy, agency.url, copy, agency.ca_file, timeout=10)
    assert not result.ok and result.reason
    assert copy.read_bytes() == GOOD and policy.whitelist is running
    (event,) = policy.audit.events
    assert event.result == "fail" and event.details["kept"] is True


def test_an_untrusted_or_unreachable_agency_keeps_the_list(agency: Agency,
                                                            tmp_path: Path) -> None:
    copy = tmp_path / "whitelist.xml"
    policy = _policy()
    # The agency's certificate is not trusted without its CA.
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    result = refresh_whitelist(policy, agency.url, copy, other_ca, timeout=10)
    assert not result.ok and "certificate" in result.reason.lower()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = refresh_whitelist(policy, f"https://127.0.0.1:{port}/x.xml", copy,
                               agency.ca_file, timeout=10)
    assert not result.ok and "refused" in result.reason.lower()
    assert not copy.exists() and policy.whitelist is None
    result = refresh_whitelist(policy, "http://127.0.0.1/x.xml", copy, None, timeout=10)
    assert not result.ok and "https" in result.reason


def test_settings_want_https_and_a_copy(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="https"):
        PolicySettings(whitelist_url="http://agency.example/list.xml",
                       whitelist_file=tmp_path / "w.xml")
    with pytest.raises(ValidationError, match="whitelist_file"):
        PolicySettings(whitelist_url="https://agency.example/list.xml")
    ok = PolicySettings(whitelist_url="https://agency.example/list.xml",
                        whitelist_file=tmp_path / "w.xml")
    assert ok.whitelist_refresh == 21600


# ------------------------------------------------- one fetch for every worker and node


def _workers(agency: Agency, store: Any, tmp_path: Path, count: int) -> list[Any]:
    """`count` workers (a node directory each) refreshing through one store."""
    from datetime import timedelta

    from policy.whitelist_fetch import SharedWhitelist

    workers = []
    for i in range(count):
        node = tmp_path / f"node{i}"
        node.mkdir()
        workers.append(SharedWhitelist(_policy(), store, agency.url, node / "whitelist.xml",
                                       agency.ca_file, f"node{i}:1:whitelist",
                                       timedelta(hours=6), timeout=10))
    return workers


def test_one_worker_fetches_and_the_others_take_it_from_the_store(
        agency: Agency, store: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    first, second, third = _workers(agency, store, tmp_path, 3)
    fetched = first.tick(t0)
    assert fetched is not None and fetched.ok and not fetched.shared
    assert agency.requests == 1
    (event,) = first.policy.audit.events
    assert (event.action, event.result) == ("whitelist-refresh", "ok")
    for worker in (second, third):
        taken = worker.tick(t0 + timedelta(seconds=60))
        assert taken is not None and taken.ok and taken.shared and taken.domains == 2
        assert worker.copy.read_bytes() == GOOD
        assert worker.policy.whitelist.allows("clinique.test", OP_A)
        assert worker.policy.audit.events == []  # one audit event per fetch, not per worker
        assert worker.tick(t0 + timedelta(seconds=120)) is None  # nothing newer
    assert first.tick(t0 + timedelta(seconds=60)) is None
    assert agency.requests == 1

    # The next period: whoever ticks first fetches, once; a changed list
    # reaches the others.
    agency.body = document(("clinique.test", OP_A), ("labo.test", OP_A), ("autre.test", OP_A))
    later = t0 + timedelta(hours=6)
    again = third.tick(later)
    assert again is not None and again.ok and again.domains == 3 and not again.shared
    assert first.tick(later) is not None and first.policy.whitelist.allows("autre.test", OP_A)
    assert second.tick(later).domains == 3
    assert agency.requests == 2


def test_a_failed_fetch_shares_nothing_and_a_new_node_starts_from_the_store(
        agency: Agency, store: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    first, second = _workers(agency, store, tmp_path, 2)
    agency.body = b"<not a whitelist"
    failed = first.tick(t0)
    assert failed is not None and not failed.ok
    assert second.tick(t0) is None and second.policy.whitelist is None
    assert not second.copy.exists()
    # A later period's good document; a node whose copy has the same bytes
    # already has nothing to take.
    agency.body = GOOD
    assert second.tick(t0 + timedelta(hours=6)).ok
    from policy.whitelist_fetch import SharedWhitelist

    late = tmp_path / "late.xml"
    late.write_bytes(GOOD)
    same = SharedWhitelist(_policy(), store, agency.url, late, agency.ca_file, "n:2:w",
                           timedelta(hours=6))
    assert same.tick(t0 + timedelta(hours=7)) is None
    assert agency.requests == 2
    # Another URL (the operator changed it): its own lease, nothing of the former one.
    other = SharedWhitelist(_policy(), store, agency.url + "?v=2", tmp_path / "o.xml",
                            agency.ca_file, "n:3:w", timedelta(hours=6), timeout=10)
    assert other.job != first.job and other.name != first.name
    result = other.tick(t0 + timedelta(hours=7))
    assert result is not None and not result.shared and agency.requests == 3
