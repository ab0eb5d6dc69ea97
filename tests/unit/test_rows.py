"""Table rows: job rows round-trip in both formats, and rows.job_wake agrees with
schedule.wake_at_ms (the due-index rebuild relies on it)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from databite_stream.schedule import (
    DueRun,
    InFlight,
    JobState,
    Policy,
    RunReason,
    create_job,
    parse_schedule,
    wake_at_ms,
)
from databite_stream.stream.rows import (
    ConnectionRow,
    JobRow,
    decode_connection_row,
    decode_job_row,
    encode_job_row,
    job_wake,
)
from databite_stream.testing.fixtures import echo_connection

NOW = 1_700_000_000_000


@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("next_run", [None, NOW + 5_000])
@pytest.mark.parametrize("leases", [(), (NOW + 9_000,), (NOW + 9_000, NOW + 1_000)])
def test_job_wake_matches_wake_at_ms(
    paused: bool, next_run: int | None, leases: tuple[int, ...]
) -> None:
    state = create_job("conn-1", "records", parse_schedule("1h"), NOW, Policy())
    in_flight = tuple(
        InFlight(f"conn-1/records@{i}", NOW, RunReason.SCHEDULE, NOW, lease)
        for i, lease in enumerate(leases)
    )
    state = dataclasses.replace(state, paused=paused, next_run_ms=next_run, in_flight=in_flight)
    assert job_wake(encode_job_row(JobRow(5, state))) == (5, wake_at_ms(state))


def _busy_state() -> JobState:
    """A job with every field away from its default."""
    state = create_job("conn/1", "records", parse_schedule("*/5 * * * * *"), NOW, Policy())
    return dataclasses.replace(
        state,
        paused=True,
        pause_reason="manual",
        last_scheduled_ms=NOW - 5_000,
        last_run_id="conn%2F1/records@1",
        last_finished_run_id="conn%2F1/records@0",
        last_finished_ms=NOW - 4_000,
        last_success=False,
        last_result="HTTP 503",
        consecutive_failures=2,
        in_flight=(InFlight("conn%2F1/records@1", NOW, RunReason.RUN_NOW, NOW, NOW + 60_000),),
        pending=(DueRun("conn%2F1/records@2", state.job_id, NOW + 5_000, RunReason.SCHEDULE),),
        skipped_runs=3,
        lost_runs=1,
    )


@pytest.mark.parametrize(
    "row",
    [
        JobRow(0, create_job("conn-1", "records", parse_schedule("1h"), NOW, Policy())),
        JobRow(7, _busy_state(), checkpoint={"cursor": "abc", "page": 3}),
        JobRow(2, dataclasses.replace(_busy_state(), lost_runs=0, skipped_runs=0)),
        JobRow(2, dataclasses.replace(_busy_state(), consecutive_failures=0, in_flight=())),
    ],
)
def test_job_row_round_trips(row: JobRow) -> None:
    raw = encode_job_row(row)
    assert decode_job_row(raw) == row
    assert job_wake(raw) == (row.partition, wake_at_ms(row.state))


def test_never_run_job_row_is_small() -> None:
    # every schedule's row is held in memory: defaults and field names are left out
    row = JobRow(3, create_job("conn-0000001", "records", parse_schedule("1h"), NOW, Policy()))
    assert len(encode_job_row(row)) < 80


def test_format_1_job_rows_still_decode() -> None:
    """A changelog written before format 2 (an object with every field named)."""
    state = _busy_state()
    legacy = {
        "p": 4,
        "job_id": state.job_id,
        "connection_id": state.connection_id,
        "sync_name": state.sync_name,
        "schedule": str(state.schedule),
        "anchor_ms": state.anchor_ms,
        "next_run_ms": state.next_run_ms,
        "paused": state.paused,
        "pause_reason": state.pause_reason,
        "last_scheduled_ms": state.last_scheduled_ms,
        "last_run_id": state.last_run_id,
        "last_finished_run_id": state.last_finished_run_id,
        "last_finished_ms": state.last_finished_ms,
        "last_success": state.last_success,
        "last_result": state.last_result,
        "consecutive_failures": state.consecutive_failures,
        "in_flight": [
            [f.run_id, f.scheduled_for_ms, f.reason.value, f.started_ms, f.lease_until_ms]
            for f in state.in_flight
        ],
        "pending": [[r.run_id, r.scheduled_for_ms, r.reason.value] for r in state.pending],
        "skipped_runs": state.skipped_runs,
        "lost_runs": state.lost_runs,
        "checkpoint": {"cursor": 1},
    }
    raw = orjson.dumps(legacy)
    assert decode_job_row(raw) == JobRow(4, state, checkpoint={"cursor": 1})
    assert job_wake(raw) == (4, wake_at_ms(state))


def test_unknown_job_row_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown job row format"):
        decode_job_row(b'[9,1,"c/s","1h",0,0]')


def test_connection_row_leaves_defaults_out_and_round_trips() -> None:
    connection = echo_connection(id="conn-1", integration_id="int-echo", record_count=0)
    raw = ConnectionRow(partition=2, connection=connection, job_ids=("conn-1/records",)).encode()
    assert b"metadata" not in raw
    assert b"timezone" not in raw
    assert decode_connection_row(raw) == ConnectionRow(2, connection, ("conn-1/records",))
