"""DueIndex against a plain-dict model: order, lazy deletion, compaction, idle peek."""

from __future__ import annotations

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
