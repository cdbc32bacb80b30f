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
