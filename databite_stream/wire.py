"""Messages that travel between agents, plus the public command and dead-letter messages.

Owns: the shape of every Kafka value that is not a domain model of :mod:`databite_stream.models`.
Each union member carries a ``type`` discriminator so one topic can carry several kinds and a
consumer can decode with one ``TypeAdapter``.

Invariants: pure pydantic (no faust/aiokafka); epoch-ms UTC ints; frozen; unknown fields are
rejected. ``DueJob``/``ActionWork`` carry the connection snapshot (with its config) because the
executor runs in the partition of the *rate-limit key*, not of the connection; they only travel
on the internal work topic, never on an export topic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, TypeAdapter

from databite_stream.models import (
    ActionRequest,
    Checkpoint,
    Connection,
    ErrorKind,
    Integration,
    WireModel,
)

__all__ = (
    "ActionWork",
    "Command",
    "CommandKind",
    "DeadLetter",
    "DueJob",
    "DueJobs",
    "InboxMessage",
    "JobRemove",
    "JobUpsert",
    "RunFinished",
    "RunsFinished",
    "Tick",
    "WorkMessage",
    "inbox_adapter",
    "work_adapter",
)

CommandKind = Literal["pause", "resume", "run_now", "unschedule", "reset_checkpoint"]


class Command(WireModel):
    """A control command on ``databite.commands``, keyed by connection id.

    ``sync_name=None`` applies the command to every job of the connection.
    """

    type: Literal["command"] = "command"
    command: CommandKind
    connection_id: str = Field(min_length=1)
    sync_name: str | None = None
    command_id: str = Field(default="", description="caller's id, echoed in logs")
    requested_at_ms: int = Field(default=0, ge=0)


class Tick(WireModel):
    """ "Look at your due index now": sent by each worker's ticker to partitions it owns."""

    type: Literal["tick"] = "tick"
    now_ms: int


class JobUpsert(WireModel):
    """The catalog wants this job to exist with this schedule (idempotent)."""

    type: Literal["job_upsert"] = "job_upsert"
    job_id: str
    connection_id: str
    sync_name: str
    schedule: str
    timezone: str = "UTC"
    at_ms: int


class JobRemove(WireModel):
    """The catalog no longer wants this job (connection, sync or integration gone)."""

    type: Literal["job_remove"] = "job_remove"
    job_id: str
    connection_id: str
    reason: str = ""
    at_ms: int


class RunFinished(WireModel):
    """The executor finished a run; the job's owner partition updates the job state."""

    type: Literal["run_finished"] = "run_finished"
    job_id: str
    connection_id: str
    run_id: str
    success: bool
    finished_ms: int
    checkpoint: Checkpoint = None
    checkpoint_changed: bool = False
    error: str | None = None
    error_kind: ErrorKind = ErrorKind.NONE
    records: int = 0


class RunsFinished(WireModel):
    """Completions of several runs whose jobs live in one inbox partition, sent together
    (the executor batches them: one inbox message per partition per few milliseconds)."""

    type: Literal["runs_finished"] = "runs_finished"
    runs: list[RunFinished] = Field(min_length=1)


InboxMessage = Annotated[
    Tick | JobUpsert | JobRemove | RunFinished | RunsFinished | Command,
    Field(discriminator="type"),
]


class DueJob(WireModel):
    """One run of one sync, emitted by the scheduler, keyed by the rate-limit key."""

    type: Literal["due_job"] = "due_job"
    run_id: str
    job_id: str
    sync_name: str
    scheduled_for_ms: int
    emitted_at_ms: int
    reason: str = "schedule"
    checkpoint: Checkpoint = None
    connection: Connection
    integration: Integration


class ActionWork(WireModel):
    """An action request resolved to its connection, keyed by the rate-limit key."""

    type: Literal["action"] = "action"
    request: ActionRequest
    connection: Connection
    integration: Integration


class DueJobs(WireModel):
    """Due runs of one work partition from one tick, sent together (at most a few hundred per
    message): one Kafka message, one decode and one acknowledgement for many runs."""

    type: Literal["due_jobs"] = "due_jobs"
    runs: list[DueJob] = Field(min_length=1)


WorkMessage = Annotated[DueJob | DueJobs | ActionWork, Field(discriminator="type")]


class DeadLetter(WireModel):
    """An input that could not be used, with where it came from and why (secrets redacted)."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    value: JsonValue = Field(
        default=None, description="the input, decoded if JSON, with config values masked"
    )
    reason: str
    error_kind: str = "invalid"
    at_ms: int


inbox_adapter: TypeAdapter[InboxMessage] = TypeAdapter(InboxMessage)
work_adapter: TypeAdapter[WorkMessage] = TypeAdapter(WorkMessage)
