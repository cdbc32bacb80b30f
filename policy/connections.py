"""Open connections per client address, counted across the worker processes
of one server (`limits.connections_per_ip`, `limits.imap_connections_per_ip`).

The workers of `mssctl serve` share the listening ports, so the kernel may
hand one address's connections to any of them: a count kept per process would
let each address hold the limit once per worker. The counts therefore live in
anonymous shared memory that the parent maps before it forks
(`mmap.mmap(-1, n)` is MAP_SHARED | MAP_ANONYMOUS on Linux), as one column
of 32-bit counters per worker slot, one counter per bucket:

- a worker writes only its own column (one writer per word, so no lock); the
  limit check adds up the bucket's counter of every column;
- the bucket is a keyed hash (BLAKE2b, key drawn once per server) of the
  listener's name and the address: two addresses sharing a bucket share a
  limit, which can only refuse too early, and nobody outside can choose which
  addresses collide;
- when a worker dies, the supervisor zeroes its column before starting the
  next worker in that slot (`reset_slot`): the kernel closed that worker's
  connections, so its counts must not outlive it.

Two workers accepting from the same address at the same instant may both see
the count before the other's increment: at worst one connection per other
worker over the limit, never a leak.
"""

from __future__ import annotations

import hashlib
import mmap
import secrets

DEFAULT_BUCKETS = 1 << 16  # 256 KiB per worker slot, touched lazily
_COUNT_MAX = 0xFFFFFFFF


class ConnectionCounts:
    """Counts per (scope, address) shared by `slots` processes; each process
    says which slot it writes with `use_slot` (slot 0 by default)."""

    def __init__(self, slots: int = 1, buckets: int = DEFAULT_BUCKETS,
                 key: bytes | None = None) -> None:
        if slots < 1 or buckets < 1:
            raise ValueError("slots and buckets must be positive")
        self.slots = slots
        self.buckets = buckets
        self._key = key if key is not None else secrets.token_bytes(32)
        self._map = mmap.mmap(-1, slots * buckets * 4)
        # Slot-major: one worker's column is contiguous (no false sharing with
        # the other writers, and `reset_slot` is one slice assignment).
        self._counts = memoryview(self._map).cast("I")
        self.slot = 0

    def use_slot(self, slot: int) -> None:
        """In a worker, after the fork: the column this process writes."""
        self._check_slot(slot)
        self.slot = slot

    def reset_slot(self, slot: int) -> None:
        """Forgets the counts of a worker that is gone (call before another
        process takes the slot)."""
        self._check_slot(slot)
        size = self.buckets * self._counts.itemsize
        self._map[slot * size:(slot + 1) * size] = bytes(size)

    def opened(self, scope: str, address: str) -> int:
        """Counts a connection; returns the count for this address, all
        workers together, this connection included."""
        bucket = self._bucket(scope, address)
        index = self.slot * self.buckets + bucket
        value = self._counts[index]
        if value < _COUNT_MAX:
            self._counts[index] = value + 1
        return self._total(bucket)

    def closed(self, scope: str, address: str) -> None:
        """A connection counted by `opened` in this process has ended."""
        index = self.slot * self.buckets + self._bucket(scope, address)
        value = self._counts[index]
        if value > 0:
            self._counts[index] = value - 1

    def count(self, scope: str, address: str) -> int:
        return self._total(self._bucket(scope, address))

    def _total(self, bucket: int) -> int:
        counts = self._counts
        return sum(counts[s * self.buckets + bucket] for s in range(self.slots))

    def _bucket(self, scope: str, address: str) -> int:
        digest = hashlib.blake2b(f"{scope}\0{address}".encode(), key=self._key,
                                 digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.buckets

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is not in 0..{self.slots - 1}")


class ListenerConnections:
    """One listener's view: its scope in the shared counts and its limit."""

    def __init__(self, counts: ConnectionCounts, scope: str, limit: int) -> None:
        self.counts = counts
        self.scope = scope
        self.limit = limit

    def opened(self, address: str) -> bool:
        """Counts the connection; False when the address is over the limit
        (the connection stays counted until `closed`, refused or not)."""
        return self.counts.opened(self.scope, address) <= self.limit

    def closed(self, address: str) -> None:
        self.counts.closed(self.scope, address)

    def count(self, address: str) -> int:
        return self.counts.count(self.scope, address)
