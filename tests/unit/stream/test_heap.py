"""The worker's garbage-collector settings (databite_stream.stream.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from databite_stream.stream.heap import (
    YOUNG_THRESHOLD,
    freeze_heap,
    release_free_memory,
    rss_bytes,
    tune_gc,
)


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


def test_release_free_memory_gives_freed_heap_pages_back() -> None:
    # 16 KiB blocks come from the C heap (not pymalloc, not mmap); freeing every other one
    # leaves holes that free() keeps: only malloc_trim hands their pages back
    blocks = [bytes(16_384) for _ in range(4_000)]
    del blocks[::2]
    before = rss_bytes()
    assert release_free_memory() is True
    assert rss_bytes() < before - 16 * 2**20  # ~31 MiB were freed; most of it leaves the RSS
    assert len(blocks) == 2_000


def test_rss_bytes_is_this_process() -> None:
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    assert abs(rss_bytes() - kib * 1024) < 64 * 2**20
