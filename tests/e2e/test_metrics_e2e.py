"""The Prometheus endpoint and JSON logs as an operator meets them: `mssctl
serve --workers 2` of a demo instance with `metrics:` and `logging.format:
json`, mail and logins over real sockets, the endpoint scraped with a real
HTTP request and its text parsed with prometheus_client's own parser."""

from __future__ import annotations

import imaplib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    IO_TIMEOUT,
    MARTIN,
    MssInstance,
    make_message,
    run_cli,
    submit,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from policy.metrics import PUBLISH_INTERVAL

pytestmark = pytest.mark.e2e

PEER = "dr.dupont@operateur-pair.test"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_records(inst: MssInstance) -> list[dict[str, Any]]:
    return [json.loads(line) for line in inst.log_since(0).splitlines() if line.strip()]


def audit_events(inst: MssInstance) -> list[dict[str, Any]]:
    return [json.loads(line) for line in inst.audit_text().splitlines() if line.strip()]


def metrics_port(inst: MssInstance) -> int:
    deadline = time.monotonic() + 20
    while True:
        for record in log_records(inst):
            message = record["message"]
            if message.startswith("metrics listening on "):
                return int(message.rsplit(":", 1)[1])
        assert time.monotonic() < deadline, inst.log_tail()
        time.sleep(0.05)  # polling the log the server appends to, bounded


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",  # noqa: S310 - http to loopback
                                timeout=IO_TIMEOUT) as reply:
        return reply.headers["Content-Type"], reply.read().decode("utf-8")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def greet_and_quit(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 ")


def per_process_connections(directory: Path, listener: str) -> dict[str, float]:
    """pid -> connections a worker counted on `listener`, from its own file."""
    out: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        d = MmapedDict(str(path), read_mode=True)
        try:
            for key, val, _ in d.read_all_values():
                metric, name, labels, _help = json.loads(key)
                if name == "mss_connections_total" and labels == {"listener": listener}:
                    out[pid] = out.get(pid, 0.0) + val
        finally:
            d.close()
    return out


def expected_counts(now: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                    base: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    # (start() knocked on every port once, before `base`.)
    for listener, made in (("smtp-mx", 20), ("submission", 4), ("imaps", 2)):
        assert value(now, "mss_connections_total", listener=listener) == \
            value(base, "mss_connections_total", listener=listener) + made
    assert value(now, "mss_connections_open", listener="imaps") == 1
    assert value(now, "mss_connections_open", listener="smtp-mx") == 0
    assert value(now, "mss_messages_received_total") == 4
    assert value(now, "mss_logins_total", method="password", result="allow") == 5
    assert value(now, "mss_logins_total", method="password", result="deny") == 1
    assert value(now, "mss_policy_decisions_total", action="login", result="deny") == 1
    assert value(now, "mss_policy_decisions_total", action="deliver", result="ok") == 4
    assert value(now, "mss_messages_relayed_total", result="deferred") >= 1
    assert value(now, "mss_messages_relayed_total", result="failed") == 1
    assert value(now, "mss_messages_bounced_total") == 1
    assert value(now, "mss_flow_decisions_total", rule="peer-suspended",
                 result="deny") == 1
    assert value(now, "mss_flow_decisions_total", rule="relay-to-trust-space",
                 result="allow") >= 1
    assert value(now, "mss_store_write_seconds_count", kind="single") > 0
    # SQLite: every hold of the shared write lock, its wait and its length.
    holds = value(now, "mss_store_write_lock_seconds_count", phase="held")
    assert holds > 0 and value(now, "mss_store_write_lock_seconds_count", phase="wait") == holds
    assert value(now, "mss_queue_up") == 1
    assert value(now, "mss_queue_entries") == 0  # the entry is gone


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "metrics")
    settings = inst.directory / "mss.yaml"
    text = settings.read_text(encoding="utf-8")
    route = f'routes: {{operateur-pair.test: "127.0.0.1:{_closed_port()}"}}'
    text = text.replace("routes: {}", route).replace("poll_interval: 5", "poll_interval: 0.2")
    text = text.replace("retry_initial: 60", "retry_initial: 0.5")
    text += "metrics: {address: 127.0.0.1, port: 0}\nlogging: {format: json}\n"
    settings.write_text(text, encoding="utf-8")
    stale = inst.directory / "metrics" / "counter_1.db"  # a previous run's: removed at start
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 16)
    inst.serve_args = ("--workers", "2")
    inst.start()
    try:
        yield inst
    finally:
        assert inst.stop() == 0, inst.log_tail()


def test_metrics_sum_both_workers_and_json_logs(served: MssInstance) -> None:
    inst = served
    port = metrics_port(inst)
    assert not (inst.directory / "metrics" / "counter_1.db").exists()
    # What start() did (it knocks on every port) is published by each worker
    # within PUBLISH_INTERVAL: the base must hold all of it.
    time.sleep(2 * PUBLISH_INTERVAL)
    ctype, before = scrape(port)
    assert ctype.startswith("text/plain; version=0.0.4")
    base = samples(before)

    mx = inst.port("smtp-mx")
    for _ in range(20):  # spread by the kernel over both workers (SO_REUSEPORT)
        greet_and_quit(mx)
    for i in range(3):
        submit(inst, DURAND, [CARDIO], make_message(f"Bilan {i}", "texte", sender=DURAND,
                                                    to=[CARDIO]), password_of=DURAND)
    submit(inst, MARTIN, [PEER], make_message("Compte rendu", "texte", sender=MARTIN, to=[PEER]),
           password_of=MARTIN)
    ctx = inst.client_context()
    bad = imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"), ssl_context=ctx, timeout=IO_TIMEOUT)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login(DURAND, "not-the-password")
    bad.logout()
    held = imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"), ssl_context=ctx,
                             timeout=IO_TIMEOUT)
    held.login(DURAND, inst.password(DURAND))
    try:
        # The relay tries the peer (down): deferred; then a rule refuses the
        # flow and the next attempt gives the recipient up (a bounce).
        deadline = time.monotonic() + 20
        while not [e for e in audit_events(inst) if e["action"] == "relay"
                   and e["result"] == "deferred"]:
            assert time.monotonic() < deadline, "the relay never tried"
            time.sleep(0.1)  # polling the file the server appends to, bounded
        flows = inst.directory / "flows.yaml"
        text = flows.read_text(encoding="utf-8")
        flows.write_text(text.replace("\nrules:\n", "\nrules:\n  - id: peer-suspended\n"
                                      "    to: {recipient: operateur-pair.test}\n"
                                      "    action: deny\n", 1), encoding="utf-8")
        code, out = run_cli("policy", "reload", "--config", str(inst.directory / "mss.yaml"))
        assert code == 0, out
        deadline = time.monotonic() + 20
        while not [e for e in audit_events(inst) if e["action"] == "relay"
                   and e["result"] == "fail"]:
            assert time.monotonic() < deadline, "the refused recipient was not given up"
            time.sleep(0.1)  # polling the file the server appends to, bounded

        # Each worker publishes its counts within PUBLISH_INTERVAL (1 s).
        deadline = time.monotonic() + 10
        while True:
            try:
                expected_counts(samples(scrape(port)[1]), base)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # polling the endpoint, bounded
        scrapes = [samples(scrape(port)[1]) for _ in range(6)]  # either worker answers
        for now in scrapes:
            expected_counts(now, base)
        per_pid = per_process_connections(inst.directory / "metrics", "smtp-mx")
        assert len([pid for pid, n in per_pid.items() if n > 0]) == 2, per_pid
        assert sum(per_pid.values()) == value(scrapes[0], "mss_connections_total",
                                              listener="smtp-mx")
        # No person in any label.
        text = scrape(port)[1]
        assert "@" not in text and "hopital" not in text
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(port, "/")
        assert err.value.code == 404
    finally:
        held.logout()

    # Every line the server wrote (both workers, the parent, Twisted) is JSON.
    records = log_records(inst)
    assert records
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}
        assert record["time"].endswith("Z") and "T" in record["time"]
    listening = {r["process"] for r in records if r["message"].startswith("metrics listening")}
    assert len(listening) == 2


def test_queue_gauges_count_what_waits(tmp_path_factory: pytest.TempPathFactory) -> None:
    inst = MssInstance.demo(tmp_path_factory, "metrics-queue")
    settings = inst.directory / "mss.yaml"
    text = settings.read_text(encoding="utf-8")
    route = f'routes: {{operateur-pair.test: "127.0.0.1:{_closed_port()}"}}'
    text = text.replace("routes: {}", route) + "metrics: {port: 0, cache_seconds: 0}\n"
    settings.write_text(text, encoding="utf-8")
    inst.start()
    try:
        port = int(next(line for line in inst.log_since(0).splitlines()
                        if "metrics listening on" in line).rsplit(":", 1)[1])
        assert value(samples(scrape(port)[1]), "mss_queue_entries") == 0
        for i in range(2):
            submit(inst, MARTIN, [PEER], make_message(f"CR {i}", "texte", sender=MARTIN,
                                                      to=[PEER]), password_of=MARTIN)
        now = samples(scrape(port)[1])  # read from the database at the scrape
        assert value(now, "mss_queue_entries") == 2
        assert 0 <= value(now, "mss_queue_oldest_age_seconds") < 120
    finally:
        assert inst.stop() == 0, inst.log_tail()


def test_a_taken_metrics_port_is_refused_by_name(tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    import subprocess

    from mssctl_support import mssctl_cmd

    inst = MssInstance.demo(tmp_path_factory, "metrics-taken")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = inst.directory / "mss.yaml"
        settings.write_text(settings.read_text(encoding="utf-8")
                            + f"metrics: {{port: {port}}}\n", encoding="utf-8")
        done = subprocess.run(mssctl_cmd("serve", "--config", str(settings)),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert (f"metrics cannot listen on 127.0.0.1:{port}: the port is already in use "
            "(is another server running?)") in done.stderr
    assert "Traceback" not in done.stderr
