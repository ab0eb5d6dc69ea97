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

Far tier (optional, ``horizon_ms``): a job due at or after ``near_until`` (about ``horizon_ms``
ahead of the last :meth:`advance`) costs ~106 bytes in the heap (its int key, its dict entry,
three list slots) but only one list slot in a *far bucket* (``BUCKET_MS`` wide) holding its id.
A worker with 1M hourly schedules keeps almost all of them there. Far entries are not
maintained: a later upsert or remove leaves them behind, and :meth:`advance` checks each one
against the caller's truth (``wake_of(job_id)``: the job's wake time in the table now) when its
bucket comes within the horizon, indexing only those whose time falls in or before the bucket.
So ``get``/``in`` answer for near jobs only and ``len`` counts far entries (superseded ones
included) until their bucket comes up. ``pin=True`` keeps a job near whatever its time (a run
in flight, whose wake time is its lease expiry: it would leave a stale far entry per run).

A list slot is cheap only when the id string is shared with something that keeps it anyway (a
``memory://`` table's dict key). When the table lives elsewhere (RocksDB), every far entry
would own a ~70-byte ``str`` of its own; ``packed_far=True`` stores a bucket as one
``bytearray`` instead: each id's UTF-8 bytes followed by their length in 4 bytes (read back from
the end), ~24 bytes for a 20-character id.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ("BUCKET_MS", "COMPACT_RATIO", "DueIndex")

COMPACT_RATIO: Final = 2
BUCKET_MS: Final = 10_000  # width of a far bucket
_ADVANCE_LIMIT: Final = 20_000  # far entries checked per advance (bounds one call's work)
_COMPACT_MIN: Final = 1024  # don't bother compacting tiny heaps
_SLOT_BITS: Final = 32
_SLOT_MASK: Final = (1 << _SLOT_BITS) - 1
_LEN_BYTES: Final = 4  # a packed far entry's length suffix


def _take_packed(bucket: bytearray, limit: int) -> list[str]:
    """Remove and return up to ``limit`` ids from the end of a packed far bucket."""
    out: list[str] = []
    end = len(bucket)
    while end and len(out) < limit:
        size = int.from_bytes(bucket[end - _LEN_BYTES : end], "little")
        start = end - _LEN_BYTES - size
        out.append(bucket[start : end - _LEN_BYTES].decode())
        end = start
    del bucket[end:]
    return out


def _take_listed(bucket: list[str], limit: int) -> list[str]:
    """Remove and return up to ``limit`` ids from the end of a far bucket (what stays is a
    prefix of the list: nothing is moved)."""
    cut = max(0, len(bucket) - limit)
    out = bucket[cut:]
    del bucket[cut:]
    return out


class DueIndex:
    """Min-heap of due times for one partition; not thread-safe (one agent owns it)."""

    __slots__ = (
        "_far",
        "_far_count",
        "_far_order",
        "_free",
        "_heap",
        "_horizon_ms",
        "_ids",
        "_key_of",
        "_keys",
        "_live",
        "_near_until",
        "_packed",
    )

    def __init__(
        self, horizon_ms: int | None = None, now_ms: int = 0, *, packed_far: bool = False
    ) -> None:
        self._heap: list[int] = []
        self._key_of: dict[str, int] = {}
        self._keys: list[int | None] = []
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._live = 0
        self._horizon_ms = horizon_ms
        #: jobs due before this are near (in the heap); the far tier holds the others
        self._near_until = now_ms + horizon_ms if horizon_ms is not None else None
        #: bucket -> job ids (some superseded): a list, or packed bytes (see the module doc)
        self._far: dict[int, list[str] | bytearray] = {}
        self._far_order: list[int] = []  # heap of the buckets in _far
        self._far_count = 0
        self._packed = packed_far

    @classmethod
    def from_items(
        cls,
        items: Iterable[tuple[str, int]],
        *,
        horizon_ms: int | None = None,
        now_ms: int = 0,
        packed_far: bool = False,
    ) -> DueIndex:
        """Build from ``(job_id, next_run_ms)`` pairs in O(n) (e.g. in ``on_recover``);
        a job id given twice keeps its last time. With ``horizon_ms``, jobs due
        ``horizon_ms`` or more after ``now_ms`` go to the far tier."""
        index = cls(horizon_ms, now_ms, packed_far=packed_far)
        for job, t in items:
            index.load(job, t)
        index.compact()
        return index

    def load(self, job_id: str, next_run_ms: int) -> None:
        """Add one job of a bulk load in O(1), without keeping the heap in order: call
        :meth:`compact` once the last one is in, before anything else (what
        :meth:`from_items` does). Saves building a list of every pair first."""
        near_until = self._near_until
        if near_until is not None and next_run_ms >= near_until:
            self._add_far(job_id, next_run_ms)
            return
        old = self._key_of.get(job_id)
        if old is None:
            slot = len(self._ids)
            self._ids.append(job_id)
            self._keys.append(None)
            self._live += 1
        else:
            slot = old & _SLOT_MASK
        key = next_run_ms << _SLOT_BITS | slot
        self._key_of[job_id] = key
        self._keys[slot] = key

    def __len__(self) -> int:
        """Number of indexed (not yet popped or removed) jobs, plus the far tier's entries."""
        return self._live + self._far_count

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

    def upsert(self, job_id: str, next_run_ms: int, *, pin: bool = False) -> None:
        """Index ``job_id`` as due at ``next_run_ms`` (replacing any earlier time); in the far
        tier if that is beyond the horizon, unless ``pin``."""
        near_until = self._near_until
        if near_until is not None and next_run_ms >= near_until and not pin:
            self.remove(job_id)
            self._add_far(job_id, next_run_ms)
            return
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
        """The earliest due time, or ``None`` when empty (drops stale entries on top). With a
        far tier: or the time at which :meth:`advance` brings in the next far bucket, if that
        is earlier."""
        heap, keys = self._heap, self._keys
        nxt = None
        while heap:
            key = heap[0]
            if keys[key & _SLOT_MASK] is key:
                nxt = key >> _SLOT_BITS
                break
            heapq.heappop(heap)
        if self._far_order:
            assert self._horizon_ms is not None
            far = self._far_order[0] * BUCKET_MS - self._horizon_ms
            return far if nxt is None else min(nxt, far)
        return nxt

    def _add_far(self, job_id: str, t: int) -> None:
        bucket = t // BUCKET_MS
        jobs = self._far.get(bucket)
        if jobs is None:
            jobs = self._far[bucket] = bytearray() if self._packed else []
            heapq.heappush(self._far_order, bucket)
        if isinstance(jobs, bytearray):
            data = job_id.encode()
            jobs += data
            jobs += len(data).to_bytes(_LEN_BYTES, "little")
        else:
            jobs.append(job_id)
        self._far_count += 1

    def advance(self, now_ms: int, wake_of: Callable[[str], int | None]) -> int:
        """Bring the far buckets that start by ``now_ms + horizon_ms`` into the heap:
        each entry's job is indexed at ``wake_of(job)`` (its time now; None: nothing to index)
        if that falls in or before its bucket; later times have an entry in a later bucket.
        Checks at most ``_ADVANCE_LIMIT`` entries (the rest stay, and :meth:`peek_next_ms`
        says they are due); returns how many it checked. A no-op without a far tier."""
        if self._horizon_ms is None or self._near_until is None:
            return 0
        target = now_ms + self._horizon_ms
        order, far, checked = self._far_order, self._far, 0
        while order and order[0] * BUCKET_MS <= target and checked < _ADVANCE_LIMIT:
            bucket = order[0]
            end = (bucket + 1) * BUCKET_MS
            jobs = far[bucket]
            if isinstance(jobs, bytearray):
                taken = _take_packed(jobs, _ADVANCE_LIMIT - checked)
            else:
                taken = _take_listed(jobs, _ADVANCE_LIMIT - checked)
            for job in taken:
                t = wake_of(job)
                if t is not None and t < end:
                    self.upsert(job, t, pin=True)
            checked += len(taken)
            self._far_count -= len(taken)
            if jobs:
                break  # the rest of this bucket next time; near_until stays before it
            heapq.heappop(order)
            del far[bucket]
            self._near_until = max(self._near_until, end)
        if not order or order[0] * BUCKET_MS > target:
            self._near_until = max(self._near_until, target)
        return checked

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
        self._far, self._far_order, self._far_count = {}, [], 0
