"""How table rows are stored: job rows and connection rows as compact JSON (orjson).

Owns the byte format of the ``jobs`` and ``connections`` tables. Every row carries the
partition it belongs to, because faust's ``memory://`` store also holds standby partitions'
keys and the due index must only be rebuilt from *active* partitions (DESIGN.md, faust traps).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from databite_stream.models import Checkpoint, Connection
from databite_stream.schedule import (
    DueRun,
    InFlight,
    JobState,
    RunReason,
    ScheduleSpec,
    parse_schedule,
)

__all__ = (
    "ConnectionRow",
    "JobRow",
    "compact",
    "decode_connection_row",
    "decode_job_row",
    "encode_job_row",
    "job_summary",
    "job_wake",
)


@dataclass(frozen=True, slots=True)
class JobRow:
    partition: int
    state: JobState
    checkpoint: Checkpoint = None


def _dumps(value: Any) -> bytes:
    return compact(orjson.dumps(value))


@lru_cache(maxsize=65536)
def _spec(text: str) -> ScheduleSpec:
    # many jobs share one schedule string: parse it once (recovery of 1M rows)
    return parse_schedule(text)


def compact(raw: bytes) -> bytes:
    """An exact-size copy of ``raw``. orjson >= 3.12 returns bytes that keep their whole
    output buffer (a power of two, >= 4 KiB) allocated; a row kept in the memory:// store
    would cost that much instead of its length (measured: 17.7 KB per schedule before, 2 KB
    after; see ijl/orjson#483 and home-assistant/core#181240 for the same trim)."""
    return bytes(memoryview(raw))


def encode_job_row(row: JobRow) -> bytes:
    s = row.state
    return _dumps(
        {
            "p": row.partition,
            "job_id": s.job_id,
            "connection_id": s.connection_id,
            "sync_name": s.sync_name,
            "schedule": str(s.schedule),
            "anchor_ms": s.anchor_ms,
            "next_run_ms": s.next_run_ms,
            "paused": s.paused,
            "pause_reason": s.pause_reason,
            "last_scheduled_ms": s.last_scheduled_ms,
            "last_run_id": s.last_run_id,
            "last_finished_run_id": s.last_finished_run_id,
            "last_finished_ms": s.last_finished_ms,
            "last_success": s.last_success,
            "last_result": s.last_result,
            "consecutive_failures": s.consecutive_failures,
            "in_flight": [
                [f.run_id, f.scheduled_for_ms, f.reason.value, f.started_ms, f.lease_until_ms]
                for f in s.in_flight
            ],
            "pending": [[r.run_id, r.scheduled_for_ms, r.reason.value] for r in s.pending],
            "skipped_runs": s.skipped_runs,
            "lost_runs": s.lost_runs,
            "checkpoint": row.checkpoint,
        }
    )


def decode_job_row(raw: bytes) -> JobRow:
    d: dict[str, Any] = orjson.loads(raw)
    job = d["job_id"]
    state = JobState(
        job_id=job,
        connection_id=d["connection_id"],
        sync_name=d["sync_name"],
        schedule=_spec(d["schedule"]),
        anchor_ms=d["anchor_ms"],
        next_run_ms=d["next_run_ms"],
        paused=d["paused"],
        pause_reason=d["pause_reason"],
        last_scheduled_ms=d["last_scheduled_ms"],
        last_run_id=d["last_run_id"],
        last_finished_run_id=d["last_finished_run_id"],
        last_finished_ms=d["last_finished_ms"],
        last_success=d["last_success"],
        last_result=d["last_result"],
        consecutive_failures=d["consecutive_failures"],
        in_flight=tuple(
            InFlight(r, at, RunReason(reason), started, lease)
            for r, at, reason, started, lease in d["in_flight"]
        ),
        pending=tuple(DueRun(r, job, at, RunReason(reason)) for r, at, reason in d["pending"]),
        skipped_runs=d["skipped_runs"],
        lost_runs=d["lost_runs"],
    )
    return JobRow(partition=d["p"], state=state, checkpoint=d["checkpoint"])


def job_wake(raw: bytes) -> tuple[int, int | None]:
    """``(partition, wake_at_ms(state))`` of an encoded job row, without building the
    :class:`JobState` (the due-index rebuild after a recovery reads every row). Must agree
    with :func:`databite_stream.schedule.wake_at_ms` (the unit tests compare them)."""
    d: dict[str, Any] = orjson.loads(raw)
    times = [f[4] for f in d["in_flight"]]
    nxt = d["next_run_ms"]
    if not d["paused"] and nxt is not None:
        times.append(nxt)
    return d["p"], (min(times) if times else None)


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    partition: int
    connection: Connection
    job_ids: tuple[str, ...]

    def encode(self) -> bytes:
        return _dumps(
            {
                "p": self.partition,
                "connection": self.connection.model_dump(mode="json"),
                "jobs": list(self.job_ids),
            }
        )


def decode_connection_row(raw: bytes) -> ConnectionRow:
    d: dict[str, Any] = orjson.loads(raw)
    return ConnectionRow(
        partition=d["p"],
        connection=Connection.model_validate(d["connection"]),
        job_ids=tuple(d["jobs"]),
    )


def job_summary(row: JobRow, now_ms: int) -> dict[str, Any]:
    """A JSON-friendly view of a job for the HTTP API, the dashboard and the client."""
    s = row.state
    overdue = (
        now_ms - s.next_run_ms
        if s.next_run_ms is not None and not s.paused and not s.in_flight
        else 0
    )
    if s.paused:
        state = "paused"
    elif s.in_flight:
        state = "running"
    elif s.next_run_ms is None:
        state = "finished"
    else:
        state = "scheduled"
    return {
        "job_id": s.job_id,
        "connection_id": s.connection_id,
        "sync_name": s.sync_name,
        "schedule": str(s.schedule),
        "state": state,
        "next_run_ms": s.next_run_ms,
        "paused": s.paused,
        "pause_reason": s.pause_reason,
        "last_scheduled_ms": s.last_scheduled_ms,
        "last_run_id": s.last_run_id,
        "last_finished_ms": s.last_finished_ms,
        "last_success": s.last_success,
        "last_result": s.last_result,
        "consecutive_failures": s.consecutive_failures,
        "in_flight": [
            {"run_id": f.run_id, "scheduled_for_ms": f.scheduled_for_ms, "started_ms": f.started_ms}
            for f in s.in_flight
        ],
        "skipped_runs": s.skipped_runs,
        "lost_runs": s.lost_runs,
        "overdue_ms": max(0, overdue),
        "partition": row.partition,
    }
