"""Job policies: first run, fixed rate, misfire, overlap, run-now, leases, auto-pause, pause."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.schedule import (
    DueRun,
    FirstRun,
    JobState,
    Misfire,
    Overlap,
    Policy,
    PolicyError,
    RunReason,
    create_job,
    on_run_finished,
    parse_schedule,
    pause,
    plan_due,
    request_run_now,
    reschedule,
    resume,
    run_id,
    wake_at_ms,
)

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_000_000  # job creation
EVERY_15M = parse_schedule("15m")


def new_job(policy: Policy, spec: str = "15m") -> JobState:
    return create_job("conn-1", "messages", parse_schedule(spec), T0, policy)


def reasons(runs: list[DueRun]) -> list[tuple[int, RunReason]]:
    return [(r.scheduled_for_ms - T0, r.reason) for r in runs]


def test_first_run_immediate_then_fixed_rate() -> None:
    policy = Policy()
    job = new_job(policy)
    assert job.job_id == "conn-1/messages"
    assert job.next_run_ms == T0
    job, runs = plan_due(job, T0, policy)
    assert runs == [DueRun(run_id(job.job_id, T0), job.job_id, T0, RunReason.SCHEDULE)]
    assert job.next_run_ms == T0 + 15 * MIN
    # a slow run (finishes 14 min later) does not shift the grid
    job, _ = on_run_finished(job, runs[0].run_id, True, T0 + 14 * MIN, policy)
    job, runs = plan_due(job, T0 + 15 * MIN + 300, policy)
    assert reasons(runs) == [(15 * MIN, RunReason.SCHEDULE)]
    assert job.next_run_ms == T0 + 30 * MIN


def test_first_run_on_grid() -> None:
    policy = Policy(first_run=FirstRun.GRID)
    job = new_job(policy)
    assert job.next_run_ms == T0 + 15 * MIN
    assert plan_due(job, T0 + MIN, policy)[1] == []


def test_first_run_respects_start_bound() -> None:
    spec = parse_schedule("15m", start_ms=T0 + HOUR)
    job = create_job("c", "s", spec, T0, Policy())
    assert job.next_run_ms == T0 + HOUR


def test_not_due_yet_is_a_no_op() -> None:
    policy = Policy(first_run=FirstRun.GRID)
    job = new_job(policy)
    assert plan_due(job, T0 + 15 * MIN - 1, policy) == (job, [])


def _late_job(policy: Policy) -> JobState:
    job = new_job(policy)  # due at T0; we come back 2 h + 5 min later
    return job


def test_misfire_run_once() -> None:
    policy = Policy(misfire=Misfire.RUN_ONCE)
    job, runs = plan_due(_late_job(policy), T0 + 2 * HOUR + 5 * MIN, policy)
    assert reasons(runs) == [(0, RunReason.CATCH_UP)]
    assert job.next_run_ms == T0 + 2 * HOUR + 15 * MIN  # back on the grid


def test_misfire_within_grace_is_on_time() -> None:
    policy = Policy(misfire_grace_ms=MIN)
    _, runs = plan_due(_late_job(policy), T0 + 30_000, policy)
    assert reasons(runs) == [(0, RunReason.SCHEDULE)]


def test_misfire_skip() -> None:
    policy = Policy(misfire=Misfire.SKIP)
    job, runs = plan_due(_late_job(policy), T0 + 2 * HOUR + 5 * MIN, policy)
    assert runs == []
    assert job.next_run_ms == T0 + 2 * HOUR + 15 * MIN


def test_misfire_run_all_window_and_cap_with_allow() -> None:
    policy = Policy(
        misfire=Misfire.RUN_ALL, catch_up_window_ms=HOUR, catch_up_max=3, overlap=Overlap.ALLOW
    )
    now = T0 + 2 * HOUR + 5 * MIN
    job, runs = plan_due(_late_job(policy), now, policy)
    # missed: every 15 min from T0; only those within the last hour, earliest first, at most 3
    assert reasons(runs) == [
        (75 * MIN, RunReason.CATCH_UP),
        (90 * MIN, RunReason.CATCH_UP),
        (105 * MIN, RunReason.CATCH_UP),
    ]
    assert len(job.in_flight) == 3
    assert job.next_run_ms == T0 + 135 * MIN


def test_misfire_run_all_serialised_without_allow() -> None:
    policy = Policy(misfire=Misfire.RUN_ALL, catch_up_window_ms=HOUR, catch_up_max=3)
    now = T0 + 2 * HOUR + 5 * MIN
    job, runs = plan_due(_late_job(policy), now, policy)
    assert reasons(runs) == [(75 * MIN, RunReason.CATCH_UP)]
    assert [p.scheduled_for_ms - T0 for p in job.pending] == [90 * MIN, 105 * MIN]
    job, runs = on_run_finished(job, runs[0].run_id, True, now + MIN, policy)
    assert reasons(runs) == [(90 * MIN, RunReason.CATCH_UP)]
    job, runs = on_run_finished(job, runs[0].run_id, True, now + 2 * MIN, policy)
    assert reasons(runs) == [(105 * MIN, RunReason.CATCH_UP)]
    job, runs = on_run_finished(job, runs[0].run_id, True, now + 3 * MIN, policy)
    assert runs == []
    assert job.pending == ()


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 20),  # catch_up_max
    st.integers(0, 10 * 24 * HOUR),  # downtime
    st.integers(0, 48 * HOUR),  # window
    st.sampled_from(list(Overlap)),
    st.sampled_from(["30s", "15m", "1h", "*/5 * * * *", "0 9 * * mon-fri"]),
)
def test_catch_up_never_exceeds_cap(
    cap: int, downtime: int, window: int, overlap: Overlap, spec: str
) -> None:
    policy = Policy(
        misfire=Misfire.RUN_ALL, catch_up_max=cap, catch_up_window_ms=window, overlap=overlap
    )
    job = new_job(policy, spec)
    now = T0 + downtime
    job, runs = plan_due(job, now, policy)
    assert len(runs) + len(job.pending) <= max(cap, 1)
    assert all(now - window - policy.misfire_grace_ms <= r.scheduled_for_ms <= now for r in runs)
    assert len({r.run_id for r in runs}) == len(runs)
    assert job.next_run_ms is not None
    assert job.next_run_ms > now


def _busy_job(policy: Policy) -> tuple[JobState, DueRun]:
    job, runs = plan_due(new_job(policy), T0, policy)
    return job, runs[0]


def test_overlap_skip() -> None:
    policy = Policy(overlap=Overlap.SKIP)
    job, first = _busy_job(policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert runs == []
    assert job.skipped_runs == 1
    assert job.next_run_ms == T0 + 30 * MIN
    job, runs = on_run_finished(job, first.run_id, True, T0 + 16 * MIN, policy)
    assert runs == []


def test_overlap_buffer_one() -> None:
    policy = Policy(overlap=Overlap.BUFFER_ONE)
    job, first = _busy_job(policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert runs == []
    job, runs = plan_due(job, T0 + 30 * MIN, policy)  # second one while buffered: skipped
    assert runs == []
    assert [p.scheduled_for_ms - T0 for p in job.pending] == [15 * MIN]
    assert job.skipped_runs == 1
    job, runs = on_run_finished(job, first.run_id, True, T0 + 31 * MIN, policy)
    assert reasons(runs) == [(15 * MIN, RunReason.SCHEDULE)]
    assert job.in_flight[0].started_ms == T0 + 31 * MIN


def test_overlap_allow() -> None:
    policy = Policy(overlap=Overlap.ALLOW)
    job, _ = _busy_job(policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert reasons(runs) == [(15 * MIN, RunReason.SCHEDULE)]
    assert len(job.in_flight) == 2


@pytest.mark.parametrize(
    ("overlap", "emitted", "pending"),
    [(Overlap.SKIP, 0, 0), (Overlap.BUFFER_ONE, 0, 1), (Overlap.ALLOW, 1, 0)],
)
def test_run_now_obeys_overlap(overlap: Overlap, emitted: int, pending: int) -> None:
    policy = Policy(overlap=overlap)
    job, _ = _busy_job(policy)
    job, runs = request_run_now(job, T0 + MIN, policy)
    assert len(runs) == emitted
    assert len(job.pending) == pending
    assert all(r.reason is RunReason.RUN_NOW for r in runs)


def test_run_now_when_idle_and_redelivered() -> None:
    policy = Policy(first_run=FirstRun.GRID)
    job = new_job(policy)
    job, runs = request_run_now(job, T0 + MIN, policy)
    assert reasons(runs) == [(MIN, RunReason.RUN_NOW)]
    assert runs[0].run_id == run_id(job.job_id, T0 + MIN)
    job, _ = on_run_finished(job, runs[0].run_id, True, T0 + 2 * MIN, policy)
    again, runs = request_run_now(job, T0 + MIN, policy)  # the same command, re-delivered
    assert runs == []
    assert again == job
    assert job.next_run_ms == T0 + 15 * MIN  # run-now does not move the grid


def test_run_now_allowed_while_paused() -> None:
    policy = Policy()
    job = pause(new_job(policy))
    job, runs = request_run_now(job, T0 + MIN, policy)
    assert len(runs) == 1
    assert job.paused


def test_lease_expiry_declares_run_lost() -> None:
    policy = Policy(lease_ms=10 * MIN)
    job, first = _busy_job(policy)
    assert wake_at_ms(job) == T0 + 10 * MIN  # the lease, before the next run
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert reasons(runs) == [(15 * MIN, RunReason.SCHEDULE)]  # the job could run again
    assert job.lost_runs == 1
    assert job.consecutive_failures == 1
    assert job.last_result is not None
    assert job.last_result.startswith("lost")
    # the lost run's late completion is stale and ignored
    late, more = on_run_finished(job, first.run_id, True, T0 + 16 * MIN, policy)
    assert (late, more) == (job, [])


def test_lease_expiry_releases_buffered_run() -> None:
    policy = Policy(lease_ms=20 * MIN, overlap=Overlap.BUFFER_ONE)
    job, _ = _busy_job(policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert runs == []
    assert wake_at_ms(job) == T0 + 20 * MIN
    job, runs = plan_due(job, T0 + 20 * MIN, policy)
    assert reasons(runs) == [(15 * MIN, RunReason.SCHEDULE)]


def test_stale_and_duplicate_completion_ignored() -> None:
    policy = Policy()
    job, first = _busy_job(policy)
    assert on_run_finished(job, "conn-1/messages@1", True, T0, policy) == (job, [])
    done, _ = on_run_finished(job, first.run_id, False, T0 + MIN, policy, result="HTTP 500")
    assert done.consecutive_failures == 1
    assert done.last_result == "HTTP 500"
    assert done.last_finished_run_id == first.run_id
    assert on_run_finished(done, first.run_id, False, T0 + 2 * MIN, policy) == (done, [])


def test_auto_pause_after_failures_and_resume() -> None:
    policy = Policy(auto_pause_after=3)
    job = new_job(policy)
    now = T0
    for i in range(3):
        job, runs = plan_due(job, now, policy)
        assert len(runs) == 1, i
        job, _ = on_run_finished(job, runs[0].run_id, False, now + 1000, policy)
        now = job.next_run_ms or 0
    assert job.paused
    assert job.pause_reason == "auto: 3 consecutive failures"
    assert plan_due(job, now + 5 * HOUR, policy)[1] == []
    assert wake_at_ms(job) is None
    job = resume(job, now + 5 * HOUR + 1)
    assert not job.paused
    assert job.consecutive_failures == 0
    assert job.next_run_ms is not None
    assert job.next_run_ms > now + 5 * HOUR


def test_success_resets_failures() -> None:
    policy = Policy(auto_pause_after=2)
    job, first = _busy_job(policy)
    job, _ = on_run_finished(job, first.run_id, False, T0 + 1, policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    job, _ = on_run_finished(job, runs[0].run_id, True, T0 + 16 * MIN, policy)
    assert job.consecutive_failures == 0
    assert job.last_success is True


def test_pause_resume_no_catch_up_burst() -> None:
    policy = Policy(misfire=Misfire.RUN_ALL)
    job, first = _busy_job(policy)
    job, _ = on_run_finished(job, first.run_id, True, T0 + MIN, policy)
    job = pause(job)
    assert pause(job) is job
    job = resume(job, T0 + 5 * HOUR + 7 * MIN)
    assert job.next_run_ms == T0 + 5 * HOUR + 15 * MIN
    assert resume(job, T0 + 6 * HOUR) is job
    job, runs = plan_due(job, T0 + 5 * HOUR + 15 * MIN, policy)
    assert reasons(runs) == [(5 * HOUR + 15 * MIN, RunReason.SCHEDULE)]


def test_pause_drops_pending() -> None:
    policy = Policy(overlap=Overlap.BUFFER_ONE)
    job, _ = _busy_job(policy)
    job, _ = plan_due(job, T0 + 15 * MIN, policy)
    assert job.pending
    assert pause(job).pending == ()


def test_reschedule_replans_on_same_anchor() -> None:
    policy = Policy()
    job, _ = _busy_job(policy)
    job = reschedule(job, parse_schedule("1h"), T0 + 20 * MIN)
    assert job.next_run_ms == T0 + HOUR
    assert reschedule(job, parse_schedule("1h"), T0 + 30 * MIN) is job
    cron = reschedule(job, parse_schedule("0 * * * *"), T0)
    assert cron.next_run_ms == (T0 // HOUR + 1) * HOUR


def test_schedule_end_exhausts_job() -> None:
    policy = Policy()
    spec = parse_schedule("15m", end_ms=T0 + 20 * MIN)
    job = create_job("c", "s", spec, T0, policy)
    job, runs = plan_due(job, T0, policy)
    job, _ = on_run_finished(job, runs[0].run_id, True, T0 + 1, policy)
    job, runs = plan_due(job, T0 + 15 * MIN, policy)
    assert len(runs) == 1
    assert job.next_run_ms is None
    job, _ = on_run_finished(job, runs[0].run_id, True, T0 + 16 * MIN, policy)
    assert wake_at_ms(job) is None
    assert plan_due(job, T0 + 10 * HOUR, policy) == (job, [])


def test_replayed_tick_is_deterministic() -> None:
    policy = Policy()
    job = new_job(policy)
    assert plan_due(job, T0 + 3 * HOUR, policy) == plan_due(job, T0 + 3 * HOUR, policy)
    # catch-up run ids depend on the state, not on when the tick arrived
    a = plan_due(job, T0 + 3 * HOUR, policy)[1]
    b = plan_due(job, T0 + 4 * HOUR, policy)[1]
    assert [r.run_id for r in a] == [r.run_id for r in b]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lease_ms": 0},
        {"catch_up_max": -1},
        {"misfire_grace_ms": -5},
        {"auto_pause_after": 0},
    ],
)
def test_bad_policy(kwargs: dict[str, int]) -> None:
    with pytest.raises(PolicyError, match="Policy"):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_states_are_immutable() -> None:
    job = new_job(Policy())
    with pytest.raises(AttributeError):
        job.paused = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del job.paused
    with pytest.raises(TypeError):
        job[6] = True  # type: ignore[index]


def test_fast_replace_matches_the_named_tuples_replace() -> None:
    """job.replace (positional, for speed) must agree with ``_replace`` on every field."""
    from databite_stream.schedule import job as job_module

    state = new_job(Policy())
    for name in JobState._fields:
        value: Any = ("changed",) if name in ("in_flight", "pending") else 123
        if name in ("job_id", "connection_id", "sync_name", "pause_reason"):
            value = "changed"
        got = job_module.replace(state, **{name: value})
        assert type(got) is JobState
        assert got == state._replace(**{name: value})
        assert getattr(got, name) == value
    with pytest.raises(KeyError):
        job_module.replace(state, no_such_field=1)
