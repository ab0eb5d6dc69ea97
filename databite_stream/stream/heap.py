"""How a worker uses Python's garbage collector (measured on the benchmarks' hot paths).

A worker allocates a few dozen short-lived container objects per run (events, futures, tasks,
dicts) and keeps ~100k long-lived ones (faust, aiokafka, pydantic, the connectors). With
CPython's default thresholds (700, 10, 10) the collector ran ~100 young collections per
second at 3,000 runs/s and a full one every ~2 s at 1,000 runs/s, each full one walking every
long-lived object: 110-160 ms event-loop stalls (the p99 lateness of a 100k-schedule worker)
and 3-15 % of the CPU of a throughput wave.
"""

from __future__ import annotations

import gc

__all__ = ("YOUNG_THRESHOLD", "freeze_heap", "tune_gc")

#: allocations between young collections (CPython's default: 700); most of a run's objects
#: are gone by then, so fewer survive into the older generations
YOUNG_THRESHOLD = 50_000


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
