"""The one registry of every Kafka topic databite-stream reads or writes.

Owns: names, partition counts, keys, value models, cleanup policies and retention. ``topics
create`` builds topics from here; ``topics/`` (the downstream contract) is generated from here;
agents take their topic names from here. Nothing else spells a topic name.

Invariants:

* Every topic has ``settings.partitions`` partitions, keys are raw domain-id bytes (UTF-8), and
  the default partitioner (murmur2, as aiokafka and the Java client) applies; so
  ``databite.connections``, ``databite.commands``, ``databite.actions.requests`` and the
  scheduler inbox are co-partitioned by connection id.
* Compacted inputs must be created ``cleanup.policy=compact``: one created as ``delete`` would
  silently lose connections after retention; :func:`check_topics` reports it as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from databite_stream.models import (
    ActionRequest,
    ActionResult,
    Connection,
    ExecutionResult,
    Integration,
    SyncRecord,
)
from databite_stream.settings import Settings
from databite_stream.wire import (
    ActionWork,
    Command,
    DeadLetter,
    DueJob,
    DueJobs,
    JobRemove,
    JobUpsert,
    RunFinished,
    RunsFinished,
    Tick,
)

__all__ = (
    "ACTION_REQUESTS",
    "ACTION_RESULTS",
    "COMMANDS",
    "CONNECTIONS",
    "DEADLETTER",
    "INBOX",
    "INTEGRATIONS",
    "RECORDS",
    "RESULTS",
    "TABLES",
    "TICKS",
    "TOPICS",
    "WORK",
    "TopicSpec",
    "changelog_topic",
    "record_key",
)

Cleanup = Literal["compact", "delete"]
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name suffix (after ``<prefix>.``), contract and configuration."""

    suffix: str
    key: str  # what the key is, for the contract
    values: tuple[type[BaseModel], ...]  # value models (several for internal unions)
    cleanup: Cleanup
    description: str
    retention_ms: int | None = None  # None: broker default / infinite for compacted
    internal: bool = False
    tombstones: str = ""  # what a null value means, if allowed
    extra_config: dict[str, str] = field(default_factory=dict)

    def name(self, settings: Settings) -> str:
        return settings.topic(self.suffix)

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup, **self.extra_config}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


CONNECTIONS = TopicSpec(
    "connections",
    key="connection id",
    values=(Connection,),
    cleanup="compact",
    description="Upstream's catalog of connections; the latest value per id is the truth.",
    tombstones="the connection is deleted and its jobs unscheduled",
)
INTEGRATIONS = TopicSpec(
    "integrations",
    key="integration id",
    values=(Integration,),
    cleanup="compact",
    description="Upstream's catalog of integrations (read whole by every worker).",
    tombstones="the integration is deleted; its connections' jobs are unscheduled",
)
COMMANDS = TopicSpec(
    "commands",
    key="connection id",
    values=(Command,),
    cleanup="delete",
    retention_ms=7 * DAY_MS,
    description="pause, resume, run_now, unschedule, reset_checkpoint for a job or a connection.",
)
ACTION_REQUESTS = TopicSpec(
    "actions.requests",
    key="connection id",
    values=(ActionRequest,),
    cleanup="delete",
    retention_ms=7 * DAY_MS,
    description="On-demand action calls; answered on actions.results with the correlation id.",
)
ACTION_RESULTS = TopicSpec(
    "actions.results",
    key="correlation id",
    values=(ActionResult,),
    cleanup="delete",
    retention_ms=7 * DAY_MS,
    description="One ActionResult per action request.",
)
RESULTS = TopicSpec(
    "results",
    key="connection id",
    values=(ExecutionResult,),
    cleanup="delete",
    retention_ms=30 * DAY_MS,
    description="Export: one ExecutionResult per sync run (de-duplicate on run_id).",
)
RECORDS = TopicSpec(
    "records",
    key="record key: connection id, sync name and record id (see record_key)",
    values=(SyncRecord,),
    cleanup="compact",
    description="Export: the latest version of every synced record.",
    tombstones="the record was deleted upstream",
)
DEADLETTER = TopicSpec(
    "deadletter",
    key="the original key",
    values=(DeadLetter,),
    cleanup="delete",
    retention_ms=30 * DAY_MS,
    description="Inputs that could not be used, with origin (topic/partition/offset) and reason.",
)
INBOX = TopicSpec(
    "internal.scheduler-inbox",
    key="connection id",
    values=(Tick, JobUpsert, JobRemove, RunFinished, RunsFinished),
    cleanup="delete",
    retention_ms=DAY_MS,
    internal=True,
    description="Job upserts/removals and run completions for the scheduler agent (and ticks "
    "from workers older than the scheduler-ticks topic).",
)
TICKS = TopicSpec(
    "internal.scheduler-ticks",
    key="none: each tick is sent to the scheduler partition it is for",
    values=(Tick,),
    cleanup="delete",
    retention_ms=HOUR_MS,
    internal=True,
    description="Ticks for the scheduler: 'look at your due index now' (co-partitioned with "
    "the inbox, apart from it so that a tick never queues behind the inbox's events).",
    # an hour-long segment, or retention (which deletes whole segments) would never apply
    extra_config={"segment.ms": str(HOUR_MS)},
)
WORK = TopicSpec(
    "internal.work",
    key="rate-limit key (connector:connection or connector:integration)",
    values=(DueJob, DueJobs, ActionWork),
    cleanup="delete",
    retention_ms=DAY_MS,
    internal=True,
    description="Due sync runs and resolved action calls for the executor agent.",
)

TOPICS: tuple[TopicSpec, ...] = (
    CONNECTIONS,
    INTEGRATIONS,
    COMMANDS,
    ACTION_REQUESTS,
    ACTION_RESULTS,
    RESULTS,
    RECORDS,
    DEADLETTER,
    INBOX,
    TICKS,
    WORK,
)


#: changelog-backed tables of the worker (faust names their topics ``<app_id>-<table>-changelog``)
TABLES: tuple[str, ...] = ("connections", "jobs", "runs-done")


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def record_key(connection_id: str, sync_name: str, record_id: str) -> bytes:
    """Key of a record on ``databite.records``: unambiguous for any ids (``/`` escaped)."""

    def esc(part: str) -> str:
        return part.replace("%", "%25").replace("/", "%2F")

    return f"{esc(connection_id)}/{esc(sync_name)}/{esc(record_id)}".encode()
