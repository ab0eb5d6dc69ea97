"""DueIndex against a plain-dict model: order, lazy deletion, compaction, idle peek."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.schedule import DueIndex
from databite_stream.schedule.due_index import COMPACT_RATIO

JOBS = st.sampled_from([f"job-{i}" for i in range(8)])
TIMES = st.integers(0, 50)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), JOBS, TIMES),
        st.tuples(st.just("remove"), JOBS, st.just(0)),
        st.tuples(st.just("pop"), st.integers(1, 5).map(str), TIMES),
        st.tuples(st.just("peek"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


def _check_pop(model: dict[str, int], got: list[tuple[int, str]], now: int, limit: int) -> None:
    """``got`` must be the ``limit`` earliest due entries; ties may come in any order."""
    expected_times = sorted(t for t in model.values() if t <= now)[:limit]
    assert [t for t, _ in got] == expected_times
    assert len({j for _, j in got}) == len(got)
    for t, j in got:
        assert model.pop(j) == t  # live, current (never removed or superseded)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_matches_dict_model(ops: list[tuple[str, str, int]]) -> None:
    index, model = DueIndex(), {}
    for op, arg, value in ops:
        if op == "upsert":
            index.upsert(arg, value)
            model[arg] = value
        elif op == "remove":
            index.remove(arg)
            model.pop(arg, None)
        elif op == "pop":
            _check_pop(model, index.pop_due(value, int(arg)), value, int(arg))
        else:
            assert index.peek_next_ms() == min(model.values(), default=None)
        assert len(index) == len(model)
        assert all(index.get(j) == t for j, t in model.items())
    # draining returns everything left, in order, and nothing removed or superseded
    _check_pop(model, index.pop_due(10**9, 10**9), 10**9, 10**9)
    assert model == {}
    assert len(index) == 0
    assert index.peek_next_ms() is None


def test_compaction_bounds_heap() -> None:
    index = DueIndex()
    for round_ in range(2000):
        for j in range(10):
            index.upsert(f"job-{j}", round_ * 10 + j)
    assert len(index) == 10
    assert len(index._heap) <= max(1024, (1 + COMPACT_RATIO) * len(index)) + 1
    assert index.pop_due(10**9) == [(19_990 + j, f"job-{j}") for j in range(10)]


def test_slot_reuse_does_not_resurrect_stale_entries() -> None:
    index = DueIndex()
    index.upsert("a", 10)
    index.remove("a")  # heap still holds a's entry for slot 0
    index.upsert("b", 10)  # b reuses slot 0 at the same time: same key
    index.upsert("c", 5)
    assert index.pop_due(10) == [(5, "c"), (10, "b")]
    assert index.pop_due(100) == []
    index.upsert("d", 3)
    index.upsert("d", 20)
    assert index.peek_next_ms() == 20


def test_negative_and_far_future_times() -> None:
    index = DueIndex.from_items([("past", -5_000), ("future", 2**45), ("now", 0)])
    assert index.pop_due(0) == [(-5_000, "past"), (0, "now")]
    assert index.get("future") == 2**45
    assert index.pop_due(2**45) == [(2**45, "future")]


def test_remove_then_reinsert_same_time() -> None:
    index = DueIndex()
    index.upsert("a", 5)
    index.remove("a")
    index.upsert("a", 5)
    index.upsert("a", 5)  # no-op, no duplicate
    assert index.pop_due(5) == [(5, "a")]
    assert index.pop_due(5) == []


def test_from_items_and_clear() -> None:
    index = DueIndex.from_items([("b", 2), ("a", 1), ("c", 3)])
    assert "a" in index
    assert index.peek_next_ms() == 1
    assert index.pop_due(2, limit=10) == [(1, "a"), (2, "b")]
    index.clear()
    assert len(index) == 0
    assert index.peek_next_ms() is None


def test_limit_leaves_rest() -> None:
    index = DueIndex.from_items((f"j{i}", i) for i in range(10))
    assert [j for _, j in index.pop_due(100, limit=3)] == ["j0", "j1", "j2"]
    assert index.peek_next_ms() == 3
    assert len(index) == 7


# -- far tier --------------------------------------------------------------------------------
FAR_TIMES = st.integers(0, 200_000)
FAR_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), JOBS, FAR_TIMES, st.booleans()),
        st.tuples(st.just("remove"), JOBS, st.just(0), st.just(False)),
        st.tuples(st.just("pop"), st.integers(1, 5).map(str), FAR_TIMES, st.just(False)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(FAR_OPS, st.sampled_from([1, 3, 20_000]), st.booleans())
def test_far_tier_matches_dict_model(
    ops: list[tuple[str, str, int, bool]], limit: int, packed: bool
) -> None:
    """With a far tier (listed or packed), advancing to ``now`` and popping returns exactly
    what the model says is due, however entries were superseded, removed or pinned."""
    import databite_stream.schedule.due_index as due_index

    saved = due_index._ADVANCE_LIMIT
    due_index._ADVANCE_LIMIT = limit  # type: ignore[misc]  # partial advances too
    try:
        index, model = DueIndex(horizon_ms=30_000, now_ms=0, packed_far=packed), {}
        for op, arg, value, pin in ops:
            if op == "upsert":
                index.upsert(arg, value, pin=pin)
                model[arg] = value
            elif op == "remove":
                index.remove(arg)
                model.pop(arg, None)
            else:
                while index.advance(value, model.get):
                    pass
                _check_pop(model, index.pop_due(value, int(arg)), value, int(arg))
            # never later than the model's earliest; a far bucket of superseded entries may
            # be announced although nothing is left in it
            nxt = index.peek_next_ms()
            assert nxt is not None if model else True
            assert nxt is None or nxt <= min(model.values(), default=nxt)
            assert len(index) >= len(model)
        while index.advance(10**9, model.get):
            pass
        _check_pop(model, index.pop_due(10**9, 10**9), 10**9, 10**9)
        assert model == {}
        assert index.peek_next_ms() is None
        assert len(index) == 0
    finally:
        due_index._ADVANCE_LIMIT = saved  # type: ignore[misc]


@pytest.mark.parametrize("packed", [False, True])
def test_far_jobs_cost_a_list_slot_until_their_bucket_comes_up(packed: bool) -> None:
    index = DueIndex.from_items(
        [(f"job-{i}", 3_600_000 + i) for i in range(1000)] + [("soon", 5_000)],
        horizon_ms=60_000,
        now_ms=0,
        packed_far=packed,
    )
    assert len(index._key_of) == 1
    assert len(index) == 1001
    assert "soon" in index
    assert "job-7" not in index
    assert index.peek_next_ms() == 5_000
    assert index.pop_due(5_000) == [(5_000, "soon")]
    # the far bucket is announced one horizon before it starts, and checked against the truth
    assert index.peek_next_ms() == 3_600_000 - 60_000
    truth = {f"job-{i}": 3_600_000 + i for i in range(1000) if i % 2 == 0}  # odd ones gone
    assert index.advance(3_600_000 - 60_000, truth.get) == 1000
    assert len(index) == 500
    assert index.get("job-2") == 3_600_002
    assert "job-3" not in index
    assert index.pop_due(3_600_010) == [(3_600_000 + i, f"job-{i}") for i in range(0, 11, 2)]


@pytest.mark.parametrize("packed", [False, True])
def test_pinned_jobs_stay_near_and_moved_jobs_leave_no_duplicate(packed: bool) -> None:
    index = DueIndex(horizon_ms=60_000, now_ms=0, packed_far=packed)
    index.upsert("running", 900_000, pin=True)  # a lease expiry: kept in the heap
    assert index.get("running") == 900_000
    assert len(index._far) == 0
    index.upsert("moved", 500_000)  # far ...
    index.upsert("moved", 1_000)  # ... then near: its far entry is left behind
    index.upsert("gone", 400_000)
    index.remove("gone")
    truth = {"running": 900_000, "moved": 1_000}
    assert index.pop_due(1_000) == [(1_000, "moved")]
    del truth["moved"]  # popped: not indexed until the caller upserts it again
    while index.advance(10**6, truth.get):
        pass
    assert index.pop_due(10**6) == [(900_000, "running")]
    assert len(index) == 0
    assert index.peek_next_ms() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=30), st.integers(1, 7))
def test_packed_far_bucket_gives_back_every_id(ids: list[str], limit: int) -> None:
    """Any id (empty, non-ASCII, a separator character) comes back from a packed bucket as
    it went in, whatever the batch size of the advance."""
    import databite_stream.schedule.due_index as due_index

    saved = due_index._ADVANCE_LIMIT
    due_index._ADVANCE_LIMIT = limit  # type: ignore[misc]
    try:
        index = DueIndex(horizon_ms=1_000, now_ms=0, packed_far=True)
        for i, job in enumerate(ids):
            index.upsert(job, 50_000 + i)
        seen: list[str] = []

        def gone(job: str) -> None:  # record the id; the job no longer exists
            seen.append(job)

        while index.advance(10**6, gone):
            pass
        assert sorted(seen) == sorted(ids)
        assert len(index) == 0
    finally:
        due_index._ADVANCE_LIMIT = saved  # type: ignore[misc]


def test_packed_far_tier_is_smaller_than_its_strings() -> None:
    """The reason for packing: 1,000 far ids of 20 characters held as bytes cost less than a
    third of the strings they would otherwise keep alive."""
    ids = [f"conn-{i:07d}/records" for i in range(1000)]
    index = DueIndex.from_items(
        ((job, 3_600_000) for job in ids), horizon_ms=60_000, now_ms=0, packed_far=True
    )
    (bucket,) = index._far.values()
    assert isinstance(bucket, bytearray)
    strings = sum(sys.getsizeof(job) + 8 for job in ids)  # the str and its list slot
    assert sys.getsizeof(bucket) * 3 < strings
