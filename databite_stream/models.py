"""Domain and wire models: integrations, connections, execution results, action calls, records.

Every model is a pydantic v2 model with ``frozen=True, extra="forbid"``: an unknown field on
the wire is an error, not something silently dropped, and a model never changes after it is
built (derive a new one with ``model_copy(update=...)``).

Invariants:

* Timestamps on the wire are epoch milliseconds, UTC, as ``int`` (``*_ms`` fields). Durations
  are float milliseconds (``execution_time_ms``), measured on a monotonic clock.
* ``Integration.config`` and ``Connection.config`` may hold credentials. ``repr()``/``str()``
  of these models mask every config value, and :meth:`Connection.redacted` /
  :meth:`Integration.redacted` return copies safe to log or publish. ``model_dump()`` is NOT
  redacted: it is what the catalog topic carries.
* ``ExecutionResult``/``ActionResult``/``SyncRecord`` are produced by the executor after
  redaction, so they never contain a secret of the connection they were produced for.

Pure core: no faust, aiokafka or aiohttp import.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from databite_stream.redact import mask_values

__all__ = (
    "ActionRequest",
    "ActionResult",
    "Checkpoint",
    "Connection",
    "ErrorKind",
    "ExecutionKind",
    "ExecutionResult",
    "Integration",
    "SyncBatch",
    "SyncRecord",
    "SyncSummary",
    "WireModel",
)

#: An incremental sync's cursor: any JSON value the connector chooses (``None`` = full sync).
Checkpoint = JsonValue
ExecutionKind = Literal["sync", "action"]


class ErrorKind(enum.StrEnum):
    """Why an execution failed; ``none`` on success. Stable strings, used in metrics."""

    NONE = "none"
    TIMEOUT = "timeout"  # the attempt exceeded its timeout and was cancelled
    RATE_LIMITED = "rate_limited"  # upstream 429, or the local budget exceeded the deadline
    HTTP_4XX = "http_4xx"  # upstream rejected the request (not auth, not 429)
    HTTP_5XX = "http_5xx"  # upstream failed
    NETWORK = "network"  # connection refused/reset, DNS, socket timeout
    BAD_RESPONSE = "bad_response"  # upstream answered with a body we could not parse
    AUTH = "auth"  # 401/403, or the token refresh failed
    VALIDATION = "validation"  # input, output, record or config failed its model
    CONFIG = "config"  # unknown sync/action, connection/integration/connector mismatch
    HANDLER = "handler"  # the connector's code raised an unexpected exception
    SINK = "sink"  # the on_batch sink raised (records not handed on)
    CANCELLED = "cancelled"  # the work was cancelled from inside (not by the caller)


class WireModel(BaseModel):
    """Base of every model here: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _SecretConfigModel(WireModel):
    """A model whose ``config`` holds secrets: masked in repr/str, redacted() for logging."""

    config: dict[str, Any] = Field(default_factory=dict)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (mask_values(value) if name == "config" else value)

    def redacted(self) -> Self:
        """A copy with every config value replaced by ``***`` (keys kept)."""
        return self.model_copy(update={"config": mask_values(self.config)})


class Integration(_SecretConfigModel):
    """A configured instance of a connector (e.g. OAuth client credentials)."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    connector_id: str = Field(min_length=1)


class Connection(_SecretConfigModel):
    """One customer's authenticated instance of an integration.

    ``config`` is the decrypted connection config (tokens); ``sync_interval`` is the default
    schedule of its syncs (a schedule string such as ``"15m"`` or ``"0 9 * * 1-5"``, or an
    int number of minutes as in the reference engine); ``schedules`` overrides it per sync.
    ``active_syncs=None`` means every sync of the connector is active.
    """

    id: str = Field(min_length=1)
    external_id: str | None = None
    integration_id: str = Field(min_length=1)
    connector_id: str = Field(min_length=1)
    sync_interval: str | int | None = None
    active_syncs: tuple[str, ...] | None = None
    schedules: dict[str, str] = Field(default_factory=dict)
    timezone: str = "UTC"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sync_interval")
    @classmethod
    def _interval_positive(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError("sync_interval in minutes must be > 0")
        if isinstance(value, str) and not value.strip():
            raise ValueError("sync_interval must not be blank")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    def is_sync_active(self, sync_name: str) -> bool:
        return self.active_syncs is None or sync_name in self.active_syncs


class SyncSummary(WireModel):
    """What a sync run handed on: counts over all attempts, and the last committed checkpoint."""

    records: int = Field(default=0, ge=0)
    deletions: int = Field(default=0, ge=0)
    batches: int = Field(default=0, ge=0)
    checkpoint: Checkpoint = None


class ExecutionResult(WireModel):
    """The outcome of one sync run (``kind="sync"``) or one action call (``kind="action"``)."""

    run_id: str
    job_id: str | None = None
    connection_id: str
    connector_id: str
    name: str  # sync name or action name
    kind: ExecutionKind = "sync"
    scheduled_for_ms: int | None = None
    success: bool
    summary: SyncSummary | None = None
    data: JsonValue = None
    error: str | None = None
    error_kind: ErrorKind = ErrorKind.NONE
    attempts: int = Field(ge=0)
    execution_time_ms: float = Field(ge=0)
    started_at_ms: int
    finished_at_ms: int


class ActionRequest(WireModel):
    """A request to run one action of a connection (``databite.actions.requests``)."""

    correlation_id: str = Field(min_length=1)
    connection_id: str = Field(min_length=1)
    action: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    requested_at_ms: int


class ActionResult(WireModel):
    """The answer to an ActionRequest (``databite.actions.results``)."""

    correlation_id: str
    connection_id: str
    action: str
    success: bool
    output: JsonValue = None
    error: str | None = None
    error_kind: ErrorKind = ErrorKind.NONE
    attempts: int = Field(ge=0)
    execution_time_ms: float = Field(ge=0)
    started_at_ms: int
    finished_at_ms: int


class SyncRecord(WireModel):
    """One exported record (``databite.records``, compacted by connection/sync/record id)."""

    connection_id: str
    sync_name: str
    record_id: str
    run_id: str
    data: dict[str, Any]


class SyncBatch(WireModel):
    """One batch handed to the executor's ``on_batch`` sink.

    ``checkpoint`` is the cursor *after* this batch; it becomes the committed checkpoint only
    once the sink returns. ``index`` counts batches of the run across attempts.
    """

    run_id: str
    connection_id: str
    sync_name: str
    index: int = Field(ge=0)
    attempt: int = Field(ge=1)
    records: tuple[SyncRecord, ...] = ()
    deletions: tuple[str, ...] = ()
    checkpoint: Checkpoint = None
