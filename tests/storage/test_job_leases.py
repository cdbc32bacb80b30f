"""`claim_job` (the `job_leases` table): one runner per periodic job across
every worker and node, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_first_claim_wins_until_the_lease_lapses(any_store: Any) -> None:
    store = any_store
    assert store.job_lease("audit-purge") is None
    assert store.claim_job("audit-purge", "node-a:1", T0, T0 + HOUR)
    assert store.job_lease("audit-purge") == ("node-a:1", T0 + HOUR)
    # Taken: nobody gets it before its end, its holder neither (no renewal).
    assert not store.claim_job("audit-purge", "node-b:2", T0 + HOUR / 2, T0 + 2 * HOUR)
    assert not store.claim_job("audit-purge", "node-a:1", T0 + HOUR / 2, T0 + 2 * HOUR)
    assert store.job_lease("audit-purge") == ("node-a:1", T0 + HOUR)
    # Another job is another lease.
    assert store.claim_job("throttle-purge", "node-b:2", T0, T0 + HOUR)
    # A holder that died: its lease lapses at its end, and another takes it.
    assert store.claim_job("audit-purge", "node-b:2", T0 + HOUR, T0 + 2 * HOUR)
    assert store.job_lease("audit-purge") == ("node-b:2", T0 + 2 * HOUR)


def test_bad_arguments(any_store: Any) -> None:
    with pytest.raises(ValueError):
        any_store.claim_job("", "h", T0, T0 + HOUR)
    with pytest.raises(ValueError):
        any_store.claim_job("x" * 65, "h", T0, T0 + HOUR)
    with pytest.raises(ValueError):
        any_store.claim_job("job", "h", T0, T0)
    # A long holder name is cut, not refused.
    assert any_store.claim_job("job", "h" * 400, T0, T0 + HOUR)
    assert any_store.job_lease("job")[0] == "h" * 255


@pytest.mark.parametrize("first_claim", [True, False], ids=["insert", "update"])
def test_concurrent_claims_from_several_stores_one_winner(
    open_any: Callable[..., Any], first_claim: bool
) -> None:
    """Eight stores (eight processes' worth of connections) ask at once,
    several times: each round exactly one of them gets the lease, whether
    the row is new (INSERT race) or lapsed (UPDATE race)."""
    stores = [open_any() for _ in range(8)]
    rounds = 6
    if not first_claim:
        assert stores[0].claim_job("race", "seed", T0 - 2 * HOUR, T0 - HOUR)
    for r in range(rounds):
        start = T0 + r * HOUR
        barrier = threading.Barrier(len(stores))
        won: list[int] = []
        errors: list[BaseException] = []

        def claim(i: int, s: Any, start: datetime = start,
                  barrier: threading.Barrier = barrier, won: list[int] = won,
                  errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait(10)
                if s.claim_job("race", f"w{i}", start, start + HOUR):
                    won.append(i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(won) == 1, (r, won)
        assert stores[0].job_lease("race") == (f"w{won[0]}", start + HOUR)


def test_a_shared_file_is_kept_replaced_and_skipped_when_known(
    any_store: Any, open_any: Callable[..., Any]
) -> None:
    """What one worker fetched is there for every other store on the same
    database; asked with the digest it already has, a reader gets None."""
    import hashlib

    store = any_store
    assert store.shared_file("whitelist") is None
    first = store.put_shared_file("whitelist", b"<liste v1/>", T0)
    assert first == hashlib.sha256(b"<liste v1/>").hexdigest()
    other = open_any()  # another process's store on the same database
    got = other.shared_file("whitelist")
    assert (got.data, got.digest, got.fetched_at) == (b"<liste v1/>", first, T0)
    assert other.shared_file("whitelist", unless_digest=first) is None
    second = store.put_shared_file("whitelist", b"<liste v2/>", T0 + HOUR)
    got = other.shared_file("whitelist", unless_digest=first)
    assert (got.data, got.digest, got.fetched_at) == (b"<liste v2/>", second, T0 + HOUR)
    assert other.shared_file("another") is None
    with pytest.raises(ValueError):
        store.put_shared_file("", b"x", T0)
    with pytest.raises(ValueError):
        store.put_shared_file("x" * 65, b"x", T0)
