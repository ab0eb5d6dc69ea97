"""Table rows: job rows round-trip in both formats, and rows.job_wake agrees with
schedule.wake_at_ms (the due-index rebuild relies on it)."""

from __future__ import annotations

import orjson
import pytest

from databite_stream.models import Connection
from databite_stream.schedule import (
    DueRun,
    InFlight,
    JobState,
    Policy,
    RunReason,
    create_job,
    job_id,
    parse_schedule,
    wake_at_ms,
)
from databite_stream.stream.rows import (
    ConnectionRow,
    JobRow,
    connection_fields,
    decode_connection_row,
    decode_job_row,
    encode_job_row,
    job_wake,
    row_partition,
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
    state = state._replace(paused=paused, next_run_ms=next_run, in_flight=in_flight)
    assert job_wake(encode_job_row(JobRow(5, state))) == (5, wake_at_ms(state))


def _busy_state() -> JobState:
    """A job with every field away from its default."""
    state = create_job("conn/1", "records", parse_schedule("*/5 * * * * *"), NOW, Policy())
    return state._replace(
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
        JobRow(2, _busy_state()._replace(lost_runs=0, skipped_runs=0)),
        JobRow(2, _busy_state()._replace(consecutive_failures=0, in_flight=())),
    ],
)
def test_job_row_round_trips(row: JobRow) -> None:
    raw = encode_job_row(row)
    assert decode_job_row(raw, row.state.job_id) == row
    assert job_wake(raw) == (row.partition, wake_at_ms(row.state))
    # format 2 (session 3's changelogs): the same array with the job id after the partition
    fields = orjson.loads(raw)
    assert fields[0] == 3
    format_2 = orjson.dumps([2, fields[1], row.state.job_id, *fields[2:]])
    assert decode_job_row(format_2, row.state.job_id) == row
    assert job_wake(format_2) == (row.partition, wake_at_ms(row.state))


def test_never_run_job_row_is_small() -> None:
    # every schedule's row is held in memory: defaults and field names are left out
    row = JobRow(3, create_job("conn-0000001", "records", parse_schedule("1h"), NOW, Policy()))
    raw = encode_job_row(row)
    assert len(raw) < 50
    assert b"conn-0000001" not in raw  # the job id is the table key


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
    assert decode_job_row(raw, state.job_id) == JobRow(4, state, checkpoint={"cursor": 1})
    assert job_wake(raw) == (4, wake_at_ms(state))
    assert row_partition(raw) == 4


def test_unknown_job_row_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown job row format"):
        decode_job_row(b'[9,1,"1h",0,0]', "c/s")


def test_connection_row_leaves_defaults_out_and_round_trips() -> None:
    connection = echo_connection(id="conn-1", integration_id="int-echo", record_count=0)
    raw = ConnectionRow(partition=2, connection=connection, job_ids=("conn-1/records",)).encode()
    assert b"metadata" not in raw
    assert b"timezone" not in raw
    assert decode_connection_row(raw) == ConnectionRow(2, connection, ("conn-1/records",))


FULL_CONNECTION = Connection(
    id="acme/eu",  # the job-id separator inside an id is escaped in job ids
    external_id="ext-1",
    integration_id="int-rest",
    connector_id="rest",
    config={"token": "t", "nested": {"a": [1, 2]}},
    sync_interval=900,
    active_syncs=("users", "items"),
    schedules={"items": "5m"},
    timezone="Europe/Paris",
    metadata={"tier": "gold"},
)


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(FULL_CONNECTION, id="every field set"),
        pytest.param(Connection(id="c", integration_id="i", connector_id="k"), id="defaults"),
    ],
)
def test_connection_row_format_2_round_trips(connection: Connection) -> None:
    jobs = (job_id(connection.id, "items"), job_id(connection.id, "users"))
    raw = ConnectionRow(partition=5, connection=connection, job_ids=jobs).encode()
    assert orjson.loads(raw)[:3] == [2, 5, connection.id]
    assert decode_connection_row(raw) == ConnectionRow(5, connection, jobs)
    assert connection_fields(raw) == connection.model_dump(mode="json", exclude_defaults=True)


def test_connection_row_format_1_still_decodes() -> None:
    jobs = (job_id(FULL_CONNECTION.id, "items"),)
    legacy = orjson.dumps(
        {
            "p": 3,
            "connection": FULL_CONNECTION.model_dump(mode="json", exclude_defaults=True),
            "jobs": list(jobs),
        }
    )
    assert decode_connection_row(legacy) == ConnectionRow(3, FULL_CONNECTION, jobs)
    assert row_partition(legacy) == 3
    assert connection_fields(legacy)["config"] == FULL_CONNECTION.config


def test_connection_row_format_2_is_smaller_than_format_1() -> None:
    connection = echo_connection(id="conn-0000001", record_count=0)
    raw = ConnectionRow(3, connection, ("conn-0000001/records",)).encode()
    legacy = orjson.dumps(
        {
            "p": 3,
            "connection": connection.model_dump(mode="json", exclude_defaults=True),
            "jobs": ["conn-0000001/records"],
        }
    )
    assert len(raw) < len(legacy) - 60


def test_unknown_connection_row_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown connection row format"):
        decode_connection_row(b'[7,1,"c","i","k",null,[],{}]')


def test_row_partition_reads_current_job_and_connection_rows() -> None:
    """The bulk restore drops a revoked partition's rows by this (no key lists kept)."""
    state = _busy_state()
    assert row_partition(encode_job_row(JobRow(6, state))) == 6
    assert row_partition(ConnectionRow(5, FULL_CONNECTION, ()).encode()) == 5
