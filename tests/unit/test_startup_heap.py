"""`mssctl serve` freezes a worker's start-up heap before it serves."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from mssctl.serve import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_what_lives_at_start_up_leaves_the_scans_and_what_serving_makes_does_not(
        thawed: None) -> None:
    at_start_up = Node()
    frozen = freeze_startup_heap()
    assert frozen > 1000 and gc.get_freeze_count() == frozen
    scanned = gc.get_objects()
    assert not any(o is at_start_up for o in scanned)
    # A cycle made while serving is still found and freed.
    a, b = Node(), Node()
    a.other, b.other = b, a
    assert any(o is a for o in gc.get_objects())
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
    assert len(gc.get_objects()) < len(scanned) + frozen


def test_freezing_again_frees_what_died_in_a_cycle_since_the_last_freeze(
        thawed: None) -> None:
    # A reload replaces objects frozen at start-up (the trust anchors, the
    # flows); held in a cycle, they would never be freed if the next
    # freeze did not scan them again first.
    a, b = Node(), Node()
    a.other, b.other = b, a
    freeze_startup_heap()
    replaced = weakref.ref(a)
    del a, b
    gc.collect()
    assert replaced() is not None  # frozen: out of the collector's reach
    freeze_startup_heap()
    assert replaced() is None
