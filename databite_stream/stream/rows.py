"""How table rows are stored: job rows and connection rows as compact JSON (orjson).

Owns the byte format of the ``jobs`` and ``connections`` tables. Every row carries the
partition it belongs to, because faust's ``memory://`` store also holds standby partitions'
keys and the due index must only be rebuilt from *active* partitions (DESIGN.md, faust traps).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from databite_stream.models import Checkpoint, Connection
from databite_stream.schedule import (
    DueRun,
    InFlight,
    JobState,
    RunReason,
    ScheduleSpec,
    job_id,
    parse_job_id,
    parse_schedule,
)

__all__ = (
    "ConnectionRow",
    "JobRow",
    "compact",
    "connection_fields",
    "decode_connection_row",
    "decode_job_row",
    "encode_job_row",
    "job_summary",
    "job_wake",
    "row_partition",
)


class JobRow(NamedTuple):  # a named tuple, like JobState (built several times per run)
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


#: Format 3 of a job row: a JSON array ``[3, partition, schedule, anchor_ms, next_run_ms,
#: *rest]`` where ``rest`` follows :data:`_TAIL` and stops at the last field that differs from
#: its default. A 1M-schedule worker holds every row in memory (memory://), so the row is as
#: small as JSON allows: no field names, no job id (the table key; connection id and sync name
#: are derived from it), defaults left out (a never-run "1h" job: ~35 bytes; format 1, an
#: object, ~470). Formats 1 (an object) and 2 (format 3 with the job id after the partition)
#: still decode.
_V2, _V3 = 2, 3
_TAIL: tuple[tuple[str, Any], ...] = (
    ("paused", False),
    ("pause_reason", None),
    ("last_scheduled_ms", None),
    ("last_run_id", None),
    ("last_finished_run_id", None),
    ("last_finished_ms", None),
    ("last_success", None),
    ("last_result", None),
    ("consecutive_failures", 0),
    ("in_flight", []),
    ("pending", []),
    ("skipped_runs", 0),
    ("lost_runs", 0),
    ("checkpoint", None),
)
_HEAD = 5  # version, partition, schedule, anchor_ms, next_run_ms (format 2: job id after p)
_PARTITION, _NEXT_RUN = 1, 4
_DEFAULTS: tuple[Any, ...] = tuple(default for _, default in _TAIL)
_PAUSED, _IN_FLIGHT = (
    _HEAD + [name for name, _ in _TAIL].index(f) for f in ("paused", "in_flight")
)


#: id(spec) -> (spec, str(spec)): decoded rows share their specs (``_spec`` is cached), and
#: str() of one took ~1 µs of every row write; the spec is kept so an id is never reused
_spec_texts: dict[int, tuple[ScheduleSpec, str]] = {}


def _schedule_text(spec: ScheduleSpec) -> str:
    hit = _spec_texts.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_spec_texts) >= 65_536:
        _spec_texts.clear()
    text = str(spec)
    _spec_texts[id(spec)] = (spec, text)
    return text


def encode_job_row(row: JobRow) -> bytes:
    s = row.state
    tail: list[Any] = [
        s.paused,
        s.pause_reason,
        s.last_scheduled_ms,
        s.last_run_id,
        s.last_finished_run_id,
        s.last_finished_ms,
        s.last_success,
        s.last_result,
        s.consecutive_failures,
        [
            [f.run_id, f.scheduled_for_ms, f.reason.value, f.started_ms, f.lease_until_ms]
            for f in s.in_flight
        ],
        [[r.run_id, r.scheduled_for_ms, r.reason.value] for r in s.pending],
        s.skipped_runs,
        s.lost_runs,
        row.checkpoint,
    ]
    end = len(tail)
    while end and tail[end - 1] == _DEFAULTS[end - 1]:
        end -= 1
    schedule = _schedule_text(s.schedule)
    return _dumps([_V3, row.partition, schedule, s.anchor_ms, s.next_run_ms, *tail[:end]])


def _fields(raw: bytes, job: str) -> list[Any]:
    """The fields of a job row of any format, in format 3's order after the job id,
    defaults filled in: ``[version, partition, job_id, schedule, anchor, next, *tail]``."""
    d = orjson.loads(raw)
    if isinstance(d, list):
        if d[:1] == [_V3]:
            return [_V3, d[1], job, *d[2:], *_DEFAULTS[len(d) - _HEAD :]]
        if d[:1] == [_V2]:  # the job id is in the row
            return d + list(_DEFAULTS[len(d) - _HEAD - 1 :])
        raise ValueError(f"unknown job row format {d[:1]!r}")
    return [  # format 1: an object with every field named
        1,
        d["p"],
        d["job_id"],
        d["schedule"],
        d["anchor_ms"],
        d["next_run_ms"],
        *(d[name] for name, _ in _TAIL),
    ]


def decode_job_row(raw: bytes, key: str) -> JobRow:
    """The row stored under the table key ``key``, the job id (format 3 rows do not repeat
    it)."""
    (
        _,
        partition,
        job,
        schedule,
        anchor_ms,
        next_run_ms,
        paused,
        pause_reason,
        last_scheduled_ms,
        last_run_id,
        last_finished_run_id,
        last_finished_ms,
        last_success,
        last_result,
        consecutive_failures,
        in_flight,
        pending,
        skipped_runs,
        lost_runs,
        checkpoint,
    ) = _fields(raw, key)
    connection_id, sync_name = _parse_job_id(job)
    state = JobState(  # positional: keywords cost a named tuple ~1 µs more (hot path)
        job,
        connection_id,
        sync_name,
        _spec(schedule),
        anchor_ms,
        next_run_ms,
        paused,
        pause_reason,
        last_scheduled_ms,
        last_run_id,
        last_finished_run_id,
        last_finished_ms,
        last_success,
        last_result,
        consecutive_failures,
        tuple(
            InFlight(r, at, RunReason(reason), started, lease)
            for r, at, reason, started, lease in in_flight
        )
        if in_flight
        else (),
        tuple(DueRun(r, job, at, RunReason(reason)) for r, at, reason in pending)
        if pending
        else (),
        skipped_runs,
        lost_runs,
    )
    return JobRow(partition=partition, state=state, checkpoint=checkpoint)


@lru_cache(maxsize=16_384)
def _parse_job_id(job: str) -> tuple[str, str]:
    # the hot path decodes the same jobs over and over (a 10k-job wave fits)
    return parse_job_id(job)


def row_partition(raw: bytes) -> int:
    """The partition an encoded job or connection row (any format) belongs to."""
    d = orjson.loads(raw)
    return int(d[_PARTITION] if type(d) is list else d["p"])


def job_wake(raw: bytes) -> tuple[int, int | None]:
    """``(partition, wake_at_ms(state))`` of an encoded job row, without building the
    :class:`JobState` (the due-index rebuild after a recovery reads every row). Must agree
    with :func:`databite_stream.schedule.wake_at_ms` (the unit tests compare them)."""
    d = orjson.loads(raw)
    if type(d) is list:
        if len(d) == _HEAD and d[0] == _V3:  # the common row: defaults only
            return d[_PARTITION], d[_NEXT_RUN]
        shift = 1 if d[0] == _V2 else 0  # format 2 holds the job id after the partition
        partition, nxt = d[_PARTITION], d[_NEXT_RUN + shift]
        paused = len(d) > _PAUSED + shift and d[_PAUSED + shift]
        in_flight = d[_IN_FLIGHT + shift] if len(d) > _IN_FLIGHT + shift else ()
    else:
        partition, nxt, paused, in_flight = d["p"], d["next_run_ms"], d["paused"], d["in_flight"]
    times = [f[4] for f in in_flight]
    if not paused and nxt is not None:
        times.append(nxt)
    return partition, (min(times) if times else None)


#: Format 2 of a connection row: a JSON array ``[2, partition, id, integration_id,
#: connector_id, config, sync_names, rest]`` where ``rest`` holds the connection's other fields
#: that differ from their defaults. Every connection's row is held in memory (memory://): an
#: echo connection's row is ~125 bytes, format 1 (``{"p", "connection", "jobs"}`` with field
#: names and whole job ids) ~215. Format 1 rows (older changelogs) still decode.
_CONNECTION_V2 = 2
_CONNECTION_HEAD = ("id", "integration_id", "connector_id", "config")


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    partition: int
    connection: Connection
    job_ids: tuple[str, ...]

    def encode(self) -> bytes:
        # defaults left out
        fields = self.connection.model_dump(mode="json", exclude_defaults=True)
        head = [fields.pop(name, None) for name in _CONNECTION_HEAD]
        syncs = [_parse_job_id(job)[1] for job in self.job_ids]
        return _dumps([_CONNECTION_V2, self.partition, *head, syncs, fields])


def connection_fields(raw: bytes) -> dict[str, Any]:
    """The connection of a row as a JSON object (what ``model_dump(mode="json",
    exclude_defaults=True)`` gave), without validating it: the scheduler embeds it in every
    due job it emits (the executor validates what it receives)."""
    return _connection_fields(orjson.loads(raw))


def _connection_fields(d: Any) -> dict[str, Any]:
    if type(d) is not list:
        connection: dict[str, Any] = d["connection"]  # format 1
        return connection
    if not d or d[0] != _CONNECTION_V2:
        raise ValueError(f"unknown connection row format {d[:1]!r}")
    fields: dict[str, Any] = dict(d[7])
    for name, value in zip(_CONNECTION_HEAD, d[2:6], strict=True):
        if value is not None:  # null: the field had its default (no head field is nullable)
            fields[name] = value
    return fields


def decode_connection_row(raw: bytes) -> ConnectionRow:
    d = orjson.loads(raw)
    connection = Connection.model_validate(_connection_fields(d))
    if type(d) is not list:  # format 1
        return ConnectionRow(d["p"], connection, tuple(d["jobs"]))
    return ConnectionRow(d[1], connection, tuple(job_id(connection.id, sync) for sync in d[6]))


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
