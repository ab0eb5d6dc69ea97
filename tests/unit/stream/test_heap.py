"""The worker's garbage-collector settings (databite_stream.stream.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from databite_stream.stream.heap import YOUNG_THRESHOLD, freeze_heap, tune_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_raises_only_the_young_threshold() -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)


def test_freeze_heap_freezes_what_is_alive_and_frees_cycles_frozen_before() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    alive = [Node()]
    freeze_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    # a cycle frozen earlier that became garbage is freed by the next call
    gc.unfreeze()
    cycle = Node()
    gc.freeze()
    count_with_cycle = gc.get_freeze_count()
    del cycle
    freeze_heap()
    assert gc.get_freeze_count() < count_with_cycle
    assert alive[0].me is alive[0]
