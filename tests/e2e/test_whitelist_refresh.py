"""`mssctl serve` fetches the whitelist from the agency's HTTPS URL at start
(a real HTTPS server on 127.0.0.1), keeps it as `whitelist_file` and audits
the refresh."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from integration_support import MssInstance
from whitelist_agency import GOOD, Agency

pytestmark = pytest.mark.e2e


def test_serve_fetches_the_whitelist_from_its_url(tmp_path_factory: pytest.TempPathFactory,
                                                   tmp_path: Path) -> None:
    agency = Agency(tmp_path)
    inst = MssInstance.demo(tmp_path_factory, "wlurl")
    config = inst.directory / "mss.yaml"
    text = config.read_text(encoding="utf-8")
    assert "  whitelist_file: whitelist.xml\n" in text
    config.write_text(text.replace(
        "  whitelist_file: whitelist.xml\n",
        f"  whitelist_file: whitelist.xml\n  whitelist_url: {agency.url}\n"
        f"  whitelist_ca_file: {agency.ca_file}\n"), encoding="utf-8")
    try:
        inst.start()
        deadline = time.monotonic() + 20
        while True:
            events = [json.loads(line) for line in inst.audit_text().splitlines() if line]
            done = [e for e in events if e["action"] == "whitelist-refresh"]
            if done:
                break
            assert time.monotonic() < deadline, inst.log_tail()
            time.sleep(0.05)  # polling the audit file the server appends to, bounded
        assert done[0]["result"] == "ok" and done[0]["domains"] == 2, done
        assert (inst.directory / "whitelist.xml").read_bytes() == GOOD
    finally:
        if inst.proc is not None:
            assert inst.stop() == 0, inst.log_tail()
        agency.close()
