"""rows.job_wake must agree with schedule.wake_at_ms (the due-index rebuild relies on it)."""

from __future__ import annotations

import dataclasses

import pytest

from databite_stream.schedule import (
    InFlight,
    Policy,
    RunReason,
    create_job,
    parse_schedule,
    wake_at_ms,
)
from databite_stream.stream.rows import JobRow, encode_job_row, job_wake

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
