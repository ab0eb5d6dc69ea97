"""How a worker uses Python's garbage collector (measured on the benchmarks' hot paths).

A worker allocates a few dozen short-lived container objects per run (events, futures, tasks,
dicts) and keeps ~100k long-lived ones (faust, aiokafka, pydantic, the connectors). With
CPython's default thresholds (700, 10, 10) the collector ran ~100 young collections per
second at 3,000 runs/s and a full one every ~2 s at 1,000 runs/s, each full one walking every
long-lived object: 110-160 ms event-loop stalls (the p99 lateness of a 100k-schedule worker)
and 3-15 % of the CPU of a throughput wave.

What a young collection costs is the young objects it walks, and at load most of them are
alive: the runs in flight (task, coroutine frames, due job, connection, lock, slot) and the
scheduler's rows in flight. With the young threshold below that working set, every
collection walks it, finds nothing to free (``collected 0``) and promotes it, and the next
older collection walks it again: at 10,000 runs/s the net count of young objects swung between
10k and 110k, and a threshold of 50,000 cost 11 % of each worker's CPU (0.8-1.1 s of CPU per
10 s, measured with ``gc.callbacks`` and ``time.thread_time``) and left the two workers
unable to drain the start-up backlog. Above the working set, collections run only when
objects outlive it (cycles, lasting growth): none in minutes of that load.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path

__all__ = ("YOUNG_THRESHOLD", "freeze_heap", "release_free_memory", "rss_bytes", "tune_gc")

#: net allocations between young collections (CPython's default: 700): above the objects of
#: the runs in flight at 10,000 runs/s (up to ~110k) with room to spare; cyclic garbage
#: waits at most this many objects for its collection (none accumulated at that load)
YOUNG_THRESHOLD = 500_000


def tune_gc() -> None:
    """Collect the young generation less often (at worker start)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_heap() -> None:
    """Move every object alive now out of the collector's reach (``gc.freeze``): full
    collections then walk only what was created since. Called once the state is recovered
    (after every rebalance: unfreezing first lets a full collection free what became garbage
    since the last call)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    release_free_memory()


def _libc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``). A recovery
    frees what it read (fetch buffers, decoded records) in pieces scattered over the heap;
    without this the RSS kept them. Python has no API for it (``gc`` frees objects, not
    pages), hence ctypes. Returns whether anything was released."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of ``pid`` (default: this process), from Linux ``/proc``; 0
    elsewhere or when the process is gone."""
    try:
        status = Path(f"/proc/{'self' if pid is None else pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
