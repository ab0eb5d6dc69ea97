"""Per-partition due index: a min-heap of due times with lazy deletion.

Owns "which jobs are due now" for one partition so that a tick costs O(due), never O(jobs).

Layout (chosen for memory and speed at ~10^6 jobs per partition): each known job owns a small
integer *slot*; its current entry is one int ``key = next_run_ms << 32 | slot`` (ints compare
faster than ``(int, str)`` tuples and need no tuple object). ``_keys[slot]`` holds the *same int
object* that is in the heap, so liveness is an identity check that touches neither the job id
nor the dict; ``_key_of`` maps ``job_id -> last key`` (its slot) and ``_ids[slot]`` maps back.

Invariants:

* ``_keys`` is the truth inside the index: a heap entry is live iff ``_keys[slot] is entry``;
  others are stale (superseded, popped or removed) and are skipped when they reach the top. The
  schedules table, not this index, is the truth for the job itself — rebuild the index from the
  table after recovery with :meth:`DueIndex.from_items`.
* ``pop_due`` returns ``(next_run_ms, job_id)`` in non-decreasing time order (ties in slot
  order) and un-indexes those jobs; they keep their slot until :meth:`remove`, so the usual
  re-``upsert`` after planning is one dict lookup and one push. Call ``remove`` for jobs that
  leave the partition (deleted connection, revoked partition: or :meth:`clear`).
* The heap is rebuilt from ``_keys`` when it holds more than ``1 + COMPACT_RATIO`` entries per
  live job, which bounds memory (amortised O(1) per change).

Costs: ``upsert``/``remove`` O(log n) amortised, ``pop_due`` O(k log n) for k popped entries,
``peek_next_ms`` O(1) when the top is live (an idle tick).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Final

__all__ = ("COMPACT_RATIO", "DueIndex")

COMPACT_RATIO: Final = 2
_COMPACT_MIN: Final = 1024  # don't bother compacting tiny heaps
_SLOT_BITS: Final = 32
_SLOT_MASK: Final = (1 << _SLOT_BITS) - 1


class DueIndex:
    """Min-heap of due times for one partition; not thread-safe (one agent owns it)."""

    __slots__ = ("_free", "_heap", "_ids", "_key_of", "_keys", "_live")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._key_of: dict[str, int] = {}
        self._keys: list[int | None] = []
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._live = 0

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, int]]) -> DueIndex:
        """Build from ``(job_id, next_run_ms)`` pairs in O(n) (e.g. in ``on_recover``);
        a job id given twice keeps its last time."""
        index = cls()
        for job, t in items:
            old = index._key_of.get(job)
            if old is None:
                slot = len(index._ids)
                index._ids.append(job)
                index._keys.append(None)
                index._live += 1
            else:
                slot = old & _SLOT_MASK
            key = t << _SLOT_BITS | slot
            index._key_of[job] = key
            index._keys[slot] = key
        index.compact()
        return index

    def __len__(self) -> int:
        """Number of indexed (not yet popped or removed) jobs."""
        return self._live

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, str):
            return False
        return self.get(job_id) is not None

    def get(self, job_id: str) -> int | None:
        """The job's due time, or ``None`` if it is not indexed."""
        key = self._key_of.get(job_id)
        if key is None or self._keys[key & _SLOT_MASK] is not key:
            return None
        return key >> _SLOT_BITS

    def upsert(self, job_id: str, next_run_ms: int) -> None:
        """Index ``job_id`` as due at ``next_run_ms`` (replacing any earlier time)."""
        keys = self._keys
        old = self._key_of.get(job_id)
        if old is None:
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = job_id
            else:
                slot = len(self._ids)
                self._ids.append(job_id)
                keys.append(None)
            self._live += 1
        else:
            slot = old & _SLOT_MASK
            if keys[slot] is old:
                if old >> _SLOT_BITS == next_run_ms:
                    return
            else:
                self._live += 1  # popped earlier: indexed again
        key = next_run_ms << _SLOT_BITS | slot
        self._key_of[job_id] = key
        keys[slot] = key
        heapq.heappush(self._heap, key)
        if len(self._heap) > _COMPACT_MIN and len(self._heap) > (1 + COMPACT_RATIO) * self._live:
            self.compact()

    def remove(self, job_id: str) -> None:
        """Forget ``job_id`` and free its slot (its heap entries become stale). Unknown ids are
        ignored."""
        key = self._key_of.pop(job_id, None)
        if key is None:
            return
        slot = key & _SLOT_MASK
        if self._keys[slot] is key:
            self._live -= 1
        self._keys[slot] = None
        self._ids[slot] = None
        self._free.append(slot)
        if len(self._heap) > _COMPACT_MIN and len(self._heap) > (1 + COMPACT_RATIO) * self._live:
            self.compact()

    def peek_next_ms(self) -> int | None:
        """The earliest due time, or ``None`` when empty (drops stale entries on top)."""
        heap, keys = self._heap, self._keys
        while heap:
            key = heap[0]
            if keys[key & _SLOT_MASK] is key:
                return key >> _SLOT_BITS
            heapq.heappop(heap)
        return None

    def pop_due(self, now_ms: int, limit: int = 1000) -> list[tuple[int, str]]:
        """Un-index and return up to ``limit`` ``(next_run_ms, job_id)`` with time ``<= now_ms``,
        earliest first."""
        heap, keys, ids, pop = self._heap, self._keys, self._ids, heapq.heappop
        bound = (now_ms + 1) << _SLOT_BITS  # keys below this are due
        out: list[tuple[int, str]] = []
        append = out.append
        remaining = limit
        while heap and remaining > 0:
            key = heap[0]
            if key >= bound:
                break
            pop(heap)
            slot = key & _SLOT_MASK
            if keys[slot] is key:
                keys[slot] = None
                job = ids[slot]
                assert job is not None
                append((key >> _SLOT_BITS, job))
                remaining -= 1
        self._live -= len(out)
        return out

    def compact(self) -> None:
        """Drop every stale heap entry (O(n))."""
        self._heap = [k for k in self._keys if k is not None]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        """Forget everything (e.g. when the partition is revoked)."""
        self._heap = []
        self._key_of = {}
        self._keys = []
        self._ids = []
        self._free = []
        self._live = 0
