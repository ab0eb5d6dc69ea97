"""The Python client of a databite-stream cluster, with the reference engine's verbs.

Owns :class:`DatabiteClient`: what an application calls instead of ``@databite/engine``'s
``SyncEngine``/``DatabiteEngine``. Every verb is a message on a topic of the registry
(:mod:`databite_stream.topics`): catalog changes go to the compacted ``connections`` /
``integrations`` topics, job control goes to ``commands``, action calls to
``actions.requests``; state is read back from the compacted topics and from the workers' jobs
changelog (``<app_id>-jobs-changelog``). The client never talks to a worker directly.

Invariants:

* **Nothing invalid is published.** A connection is checked exactly as the catalog agent will
  check it (:func:`databite_stream.catalog.plan_connection`) plus its config against the
  connector's ``connection_config`` model; an integration's config against
  ``integration_config``. Failures raise a typed :class:`ClientError` before any send.
* **Read your writes.** After a catalog write the verb returns only once the client's own view
  has consumed the written offset, so ``get_connection`` right after ``add_connection`` sees it.
  Views of other writers' changes are as fresh as the background reader (``catch_up`` waits
  for the topic's end offsets at call time; ``get_jobs`` does so by default).
* **One result per caller.** One background consumer reads ``results`` and
  ``actions.results`` from the end offsets taken *before* the first request was sent, and
  resolves each waiting call by ``run_id`` / correlation id, so concurrent ``execute_sync`` /
  ``execute_action`` calls never see each other's results and none is missed.
* Getters of the catalog (``get_connection``…) are synchronous reads of the local view, as in
  the reference engine; everything that sends or waits is ``async``.
* Compacted topics are last-writer-wins: ``add_*`` refusing an existing id, and
  ``remove_integration`` refusing while connections use it, are checks against this client's
  view, not transactions across concurrent writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata
from pydantic import BaseModel, ConfigDict, ValidationError

from databite_stream.admin import create_topics
from databite_stream.catalog import CatalogError, PlannedJob, plan_connection
from databite_stream.connectors import Connector, default_registry
from databite_stream.connectors.registry import ConnectorRegistry
from databite_stream.models import (
    ActionRequest,
    ActionResult,
    Connection,
    ExecutionResult,
    Integration,
)
from databite_stream.schedule import IdentityError, JobState, job_id, parse_job_id, run_id
from databite_stream.settings import Settings
from databite_stream.stream.rows import decode_job_row
from databite_stream.topics import (
    ACTION_REQUESTS,
    ACTION_RESULTS,
    COMMANDS,
    CONNECTIONS,
    INTEGRATIONS,
    RESULTS,
    TopicSpec,
    changelog_topic,
)
from databite_stream.views import CompactedView, ViewError, wait_assignment
from databite_stream.wire import Command, CommandKind

__all__ = (
    "ClientError",
    "ConnectionExists",
    "DatabiteClient",
    "ExecutionTimeout",
    "IntegrationExists",
    "IntegrationInUse",
    "InvalidConnection",
    "InvalidIntegration",
    "ScheduledJob",
    "SyncNotActive",
    "TopicsMissing",
    "UnknownAction",
    "UnknownConnection",
    "UnknownConnector",
    "UnknownIntegration",
    "UnknownJob",
    "UnknownSync",
    "check_connection",
    "check_integration",
    "to_connection",
    "to_integration",
)

log = logging.getLogger(__name__)

AnyConnector = Connector[Any, Any]


# -- errors --------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of every error a client verb raises on purpose; the message says what to fix."""


class UnknownConnection(ClientError, LookupError):
    """No connection with that id on the connections topic."""


class UnknownIntegration(ClientError, LookupError):
    """No integration with that id on the integrations topic."""


class UnknownConnector(ClientError, LookupError):
    """The connector id is not in the client's connector registry."""


class UnknownSync(ClientError, LookupError):
    """The connector has no sync of that name."""


class UnknownAction(ClientError, LookupError):
    """The connector has no action of that name."""


class UnknownJob(ClientError, LookupError):
    """The string is not a job id (see :func:`databite_stream.schedule.job_id`)."""


class InvalidConnection(ClientError, ValueError):
    """The connection does not validate (fields, config, schedule, connector mismatch)."""


class InvalidIntegration(ClientError, ValueError):
    """The integration does not validate (fields or config)."""


class ConnectionExists(ClientError, ValueError):
    """``add_connection`` of an id that exists (use ``update_connection``/``put_connection``)."""


class IntegrationExists(ClientError, ValueError):
    """``add_integration`` of an id that exists (use ``put_integration``)."""


class IntegrationInUse(ClientError):
    """``remove_integration`` while connections still reference the integration."""


class SyncNotActive(ClientError):
    """The sync exists but is not in the connection's ``active_syncs``: it has no job."""


class ExecutionTimeout(ClientError, TimeoutError):
    """No result arrived in time (the run may have been skipped, or no worker is running)."""


class TopicsMissing(ClientError):
    """The cluster's topics do not exist (or are misconfigured)."""


# -- pure checks ---------------------------------------------------------------------------


def _field_errors(exc: ValidationError, prefix: str = "") -> str:
    """``"config.api_key: Field required; ..."`` without the offending values (secrets)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "value")
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def to_connection(value: Connection | Mapping[str, Any]) -> Connection:
    """A :class:`Connection` from a model or a mapping; :class:`InvalidConnection` if not."""
    if isinstance(value, Connection):
        return value
    try:
        return Connection.model_validate(value)
    except ValidationError as exc:
        ident = value.get("id") if isinstance(value, Mapping) else None
        raise InvalidConnection(f"connection {ident!r} is invalid: {_field_errors(exc)}") from None


def to_integration(value: Integration | Mapping[str, Any]) -> Integration:
    """An :class:`Integration` from a model or a mapping; :class:`InvalidIntegration` if not."""
    if isinstance(value, Integration):
        return value
    try:
        return Integration.model_validate(value)
    except ValidationError as exc:
        ident = value.get("id") if isinstance(value, Mapping) else None
        raise InvalidIntegration(
            f"integration {ident!r} is invalid: {_field_errors(exc)}"
        ) from None


_CATALOG_ERRORS: dict[str, type[ClientError]] = {
    "unknown_connector": UnknownConnector,
    "missing_integration": UnknownIntegration,
    "unknown_sync": UnknownSync,
}


def check_connection(
    connection: Connection,
    integration: Integration | None,
    registry: ConnectorRegistry,
    *,
    default_schedule: str = "1h",
) -> list[PlannedJob]:
    """The jobs the catalog will create for ``connection``, or the typed reason it can't.

    Same rules as the catalog agent (connector known, integration present and of the same
    connector, syncs and schedule overrides known, schedules parse), plus the config against
    the connector's ``connection_config`` model, which the catalog leaves to the executor.
    """
    try:
        planned = plan_connection(
            connection, integration, registry, default_schedule=default_schedule
        )
    except CatalogError as exc:
        raise _CATALOG_ERRORS.get(exc.kind, InvalidConnection)(str(exc)) from None
    connector = registry.get(connection.connector_id)
    try:
        connector.connection_config.model_validate(connection.config)
    except ValidationError as exc:
        raise InvalidConnection(
            f"connection {connection.id!r}: config does not match connector "
            f"{connector.id!r}: {_field_errors(exc, 'config')}"
        ) from None
    return planned


def check_integration(integration: Integration, registry: ConnectorRegistry) -> None:
    """Raise :class:`UnknownConnector` / :class:`InvalidIntegration` if it can't be used."""
    if integration.connector_id not in registry:
        raise UnknownConnector(
            f"integration {integration.id!r}: unknown connector {integration.connector_id!r} "
            f"(known: {', '.join(registry.ids())})"
        )
    connector = registry.get(integration.connector_id)
    try:
        connector.integration_config.model_validate(integration.config)
    except ValidationError as exc:
        raise InvalidIntegration(
            f"integration {integration.id!r}: config does not match connector "
            f"{connector.id!r}: {_field_errors(exc, 'config')}"
        ) from None


# -- job view ------------------------------------------------------------------------------


class ScheduledJob(BaseModel):
    """One job (connection x active sync) as the scheduler last wrote it; JSON-friendly.

    The reference engine's ``ScheduledJob{id, connectionId, syncName, schedule, nextRun,
    isActive}`` with epoch-ms times and the run bookkeeping the stream engine keeps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    connection_id: str
    sync_name: str
    schedule: str
    """Canonical schedule text (``"15m"``, ``"0 9 * * 1-5; tz=Europe/Berlin"``…)."""
    next_run_ms: int | None
    """Next schedule time (epoch ms UTC); None once a bounded schedule is exhausted."""
    paused: bool
    last_run_id: str | None
    last_success: bool | None
    last_result: str | None
    """Short summary of the last finished run (``"5 records"`` or the error)."""
    consecutive_failures: int
    in_flight: tuple[str, ...]
    """Run ids emitted and not finished yet."""

    @property
    def is_active(self) -> bool:
        """The reference's ``isActive``: not paused."""
        return not self.paused

    @classmethod
    def from_state(cls, state: JobState) -> ScheduledJob:
        return cls(
            job_id=state.job_id,
            connection_id=state.connection_id,
            sync_name=state.sync_name,
            schedule=str(state.schedule),
            next_run_ms=state.next_run_ms,
            paused=state.paused,
            last_run_id=state.last_run_id,
            last_success=state.last_success,
            last_result=state.last_result,
            consecutive_failures=state.consecutive_failures,
            in_flight=tuple(f.run_id for f in state.in_flight),
        )


# -- decoders of the views -----------------------------------------------------------------


def _decode_connection(key: str, raw: bytes) -> Connection:
    connection = Connection.model_validate_json(raw)
    if connection.id != key:
        raise ValueError(f"key {key!r} differs from connection id {connection.id!r}")
    return connection


def _decode_integration(key: str, raw: bytes) -> Integration:
    integration = Integration.model_validate_json(raw)
    if integration.id != key:
        raise ValueError(f"key {key!r} differs from integration id {integration.id!r}")
    return integration


def _decode_job(key: str, raw: bytes) -> JobState:
    try:
        return decode_job_row(raw, key).state
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a job row: {exc!r}") from exc


def _changelog_key(raw: bytes) -> str:
    """faust writes ``str`` table keys JSON-encoded (``"conn/sync"``); accept raw text too."""
    if raw[:1] == b'"':
        value = orjson.loads(raw)
        if isinstance(value, str):
            return value
    return raw.decode("utf-8")


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- results -------------------------------------------------------------------------------


class _ResultWaiters:
    """The single reader of ``results`` and ``actions.results`` and the calls waiting on it."""

    def __init__(self, bootstrap: str, results_topic: str, action_results_topic: str) -> None:
        self.bootstrap = bootstrap
        self.results_topic = results_topic
        self.action_results_topic = action_results_topic
        self.runs: dict[str, asyncio.Future[ExecutionResult]] = {}
        self.actions: dict[str, asyncio.Future[ActionResult]] = {}
        self.connections: Counter[str] = Counter()  # connection id -> runs awaited
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> None:
        """Position at the current end offsets (before anything is sent), then read."""
        consumer = AIOKafkaConsumer(
            self.results_topic,
            self.action_results_topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            deadline = time.monotonic() + timeout
            tps = await wait_assignment(consumer, self.results_topic, timeout)
            topics = {self.results_topic, self.action_results_topic}
            while {tp.topic for tp in tps} != topics:  # both topics' metadata
                if time.monotonic() > deadline:
                    raise ViewError(f"no partitions of {sorted(topics)} after {timeout:.0f}s")
                await asyncio.sleep(0.05)
                tps = sorted(consumer.assignment())
            end = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, end[tp])
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="client-results")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self.fail(ClientError("the client was closed while waiting for a result"))

    def fail(self, exc: BaseException) -> None:
        for run in self.runs.values():
            if not run.done():
                run.set_exception(exc)
        for action in self.actions.values():
            if not action.done():
                action.set_exception(exc)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._dispatch(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the results reader failed")
            self.fail(ClientError(f"the results reader failed: {exc!r}"))

    def _dispatch(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value is None:
            return
        if record.topic == self.action_results_topic:
            key = record.key.decode("utf-8", "replace") if record.key is not None else None
            if key is not None and key not in self.actions:
                return  # keyed by correlation id: not ours
            try:
                action = ActionResult.model_validate_json(record.value)
            except ValidationError:
                return
            future = self.actions.get(action.correlation_id)
            if future is not None and not future.done():
                future.set_result(action)
            return
        if not self.runs:
            return
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if key is not None and key not in self.connections:  # keyed by connection id
            return
        try:
            result = ExecutionResult.model_validate_json(record.value)
        except ValidationError:
            return
        waiter = self.runs.get(result.run_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)


# -- the client ----------------------------------------------------------------------------


class DatabiteClient:
    """One client per cluster: catalog writes, job control, on-demand runs and actions.

    Args:
        settings: the cluster's settings (broker, ``app_id``, ``topic_prefix``; partitions
            only matter with ``create_topics``). Default: :meth:`Settings.from_env` with the
            keyword overrides below.
        bootstrap / app_id / topic_prefix: override those settings.
        registry: the connectors to validate against; must match the workers' (default: the
            built-ins plus entry-point plugins, as a worker has).
        create_topics: create missing topics at start (default: refuse to start without them,
            naming them; subscribing to a missing topic could auto-create it with the wrong
            partition count).
        start_timeout: seconds to connect and catch up with the compacted topics.
        write_timeout: seconds a catalog write waits for its own view to reflect it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        app_id: str | None = None,
        topic_prefix: str | None = None,
        registry: ConnectorRegistry | None = None,
        create_topics: bool = False,
        start_timeout: float = 30.0,
        write_timeout: float = 15.0,
    ) -> None:
        overrides = {
            k: v
            for k, v in (("broker", bootstrap), ("app_id", app_id), ("topic_prefix", topic_prefix))
            if v is not None
        }
        if settings is None:
            settings = Settings.from_env(None, **overrides)
        elif overrides:
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        self.settings = settings
        self.registry = registry if registry is not None else default_registry()
        self.create_topics = create_topics
        self.start_timeout = start_timeout
        self.write_timeout = write_timeout
        broker = settings.broker
        self._connections: CompactedView[Connection] = CompactedView(
            broker, CONNECTIONS.name(settings), _decode_connection
        )
        self._integrations: CompactedView[Integration] = CompactedView(
            broker, INTEGRATIONS.name(settings), _decode_integration
        )
        self._jobs: CompactedView[JobState] = CompactedView(
            broker, changelog_topic(settings, "jobs"), _decode_job, decode_key=_changelog_key
        )
        self._results = _ResultWaiters(
            broker, RESULTS.name(settings), ACTION_RESULTS.name(settings)
        )
        self._results_started = False
        self._results_lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._last_request_ms = 0
        #: run ids whose results this client received (recent ones)
        self._finished: deque[str] = deque(maxlen=1024)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, check the topics, and catch up with connections, integrations and jobs."""
        if self._started:
            return
        await self._check_topics()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.broker, acks="all", linger_ms=1
        )
        await self._producer.start()
        self._started = True
        try:
            await asyncio.gather(
                self._integrations.start(self.start_timeout),
                self._connections.start(self.start_timeout),
                self._jobs.start(self.start_timeout),
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every reader and the producer; waiting calls fail with :class:`ClientError`."""
        await self._results.stop()
        self._results_started = False
        for view in (self._integrations, self._connections, self._jobs):
            await view.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._started = False

    async def destroy(self) -> None:
        """The reference engine's name for :meth:`close`."""
        await self.close()

    async def catch_up(self, timeout: float | None = None) -> None:
        """Wait until the catalog views hold everything on their topics as of now."""
        t = self.write_timeout if timeout is None else timeout
        await asyncio.gather(self._integrations.catch_up(t), self._connections.catch_up(t))

    # -- integrations ------------------------------------------------------------------------

    def get_integration(self, integration_id: str) -> Integration | None:
        return self._integrations.get(integration_id)

    def get_integrations(self) -> list[Integration]:
        return sorted(self._integrations.values(), key=lambda i: i.id)

    def get_connector(self, connector_id: str) -> AnyConnector | None:
        return self.registry.get(connector_id) if connector_id in self.registry else None

    async def add_integration(self, integration: Integration | Mapping[str, Any]) -> Integration:
        """Publish a new integration; :class:`IntegrationExists` if the id is taken."""
        model = to_integration(integration)
        if model.id in self._integrations:
            raise IntegrationExists(
                f"integration {model.id!r} already exists (use put_integration to replace it)"
            )
        return await self.put_integration(model)

    async def put_integration(self, integration: Integration | Mapping[str, Any]) -> Integration:
        """Publish an integration, new or replacing (validated first)."""
        model = to_integration(integration)
        check_integration(model, self.registry)
        old = self._integrations.get(model.id)
        if old is not None and old.connector_id != model.connector_id:
            users = self._users_of(model.id)
            if users:
                raise InvalidIntegration(
                    f"integration {model.id!r} cannot change connector from "
                    f"{old.connector_id!r} to {model.connector_id!r} while {len(users)} "
                    f"connection(s) use it: {_ids(users)}"
                )
        await self._write(self._integrations, INTEGRATIONS, model.id, model)
        return model

    async def remove_integration(self, integration_id: str) -> None:
        """Tombstone an integration; refused while connections reference it."""
        if integration_id not in self._integrations:
            raise UnknownIntegration(f"integration {integration_id!r} not found")
        users = self._users_of(integration_id)
        if users:
            raise IntegrationInUse(
                f"cannot remove integration {integration_id!r}: {len(users)} connection(s) "
                f"still use it ({_ids(users)}); remove them first"
            )
        await self._write(self._integrations, INTEGRATIONS, integration_id, None)

    def _users_of(self, integration_id: str) -> list[Connection]:
        return [c for c in self._connections.values() if c.integration_id == integration_id]

    # -- connections -------------------------------------------------------------------------

    def get_connection(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def get_connections(self) -> list[Connection]:
        return sorted(self._connections.values(), key=lambda c: c.id)

    def check_connection(self, connection: Connection | Mapping[str, Any]) -> list[PlannedJob]:
        """Validate against the current catalog without publishing; the jobs it would get."""
        model = to_connection(connection)
        return check_connection(
            model,
            self._integrations.get(model.integration_id),
            self.registry,
            default_schedule=self.settings.default_interval,
        )

    async def add_connection(self, connection: Connection | Mapping[str, Any]) -> Connection:
        """Publish a new connection (its active syncs get scheduled by the workers);
        :class:`ConnectionExists` if the id is taken."""
        model = to_connection(connection)
        if model.id in self._connections:
            raise ConnectionExists(
                f"connection {model.id!r} already exists (use update_connection)"
            )
        return await self.put_connection(model)

    async def update_connection(self, connection: Connection | Mapping[str, Any]) -> Connection:
        """Replace an existing connection (the workers reschedule its jobs)."""
        model = to_connection(connection)
        self._connection(model.id)
        return await self.put_connection(model)

    async def put_connection(self, connection: Connection | Mapping[str, Any]) -> Connection:
        """Publish a connection, new or replacing (validated first)."""
        model = to_connection(connection)
        self.check_connection(model)
        await self._write(self._connections, CONNECTIONS, model.id, model)
        return model

    async def remove_connection(self, connection_id: str) -> None:
        """Tombstone a connection: the workers remove its jobs."""
        self._connection(connection_id)
        await self._write(self._connections, CONNECTIONS, connection_id, None)

    # -- scheduling --------------------------------------------------------------------------

    async def schedule_connection_syncs(self, connection_id: str) -> Connection:
        """Re-publish the connection with every sync active: the catalog (re)creates a job per
        sync of its connector (also after :meth:`unschedule_connection_syncs`)."""
        connection = self._connection(connection_id)
        return await self.put_connection(connection.model_copy(update={"active_syncs": None}))

    async def unschedule_connection_syncs(self, connection_id: str) -> None:
        """Remove every job of the connection (an ``unschedule`` command); the connection stays
        published, and :meth:`schedule_connection_syncs` brings the jobs back."""
        self._connection(connection_id)
        await self._command("unschedule", connection_id, None)

    async def activate_sync(self, connection_id: str, sync_name: str) -> Connection:
        """Add ``sync_name`` to the connection's active syncs and re-publish (no-op if active)."""
        connection = self._connection(connection_id)
        syncs = list(self._connector_of(connection).syncs)
        self._sync(connection, sync_name)
        if connection.is_sync_active(sync_name):
            return connection
        active = [*(connection.active_syncs or ()), sync_name]
        update = None if set(active) == set(syncs) else tuple(active)
        return await self.put_connection(connection.model_copy(update={"active_syncs": update}))

    async def deactivate_sync(self, connection_id: str, sync_name: str) -> Connection:
        """Remove ``sync_name`` from the active syncs and re-publish (no-op if not active)."""
        connection = self._connection(connection_id)
        self._sync(connection, sync_name)
        if not connection.is_sync_active(sync_name):
            return connection
        current = connection.active_syncs
        active = list(self._connector_of(connection).syncs) if current is None else list(current)
        update = tuple(name for name in active if name != sync_name)
        return await self.put_connection(connection.model_copy(update={"active_syncs": update}))

    async def pause_job(self, job: str) -> None:
        """Stop a job's scheduled runs (in-flight runs finish; run-now still works)."""
        connection_id, sync_name = self._job_target(job)
        await self._command("pause", connection_id, sync_name)

    async def resume_job(self, job: str) -> None:
        """Resume a paused job at its next schedule time (no catch-up burst)."""
        connection_id, sync_name = self._job_target(job)
        await self._command("resume", connection_id, sync_name)

    async def unschedule_job(self, job: str) -> None:
        """Remove one job (it comes back when the connection is published again)."""
        connection_id, sync_name = self._job_target(job)
        await self._command("unschedule", connection_id, sync_name)

    async def get_jobs(self, *, fresh: bool = True) -> list[ScheduledJob]:
        """Every job, sorted by id; ``fresh`` first reads the jobs changelog to its end."""
        if fresh:
            await self._jobs.catch_up(self.write_timeout)
        return sorted(
            (ScheduledJob.from_state(s) for s in self._jobs.values()), key=lambda j: j.job_id
        )

    async def get_jobs_for_connection(
        self, connection_id: str, *, fresh: bool = True
    ) -> list[ScheduledJob]:
        """The connection's jobs (matched on the stored connection id, never an id prefix)."""
        return [j for j in await self.get_jobs(fresh=fresh) if j.connection_id == connection_id]

    # -- execution ---------------------------------------------------------------------------

    async def execute_sync(
        self, connection_id: str, sync_name: str, *, timeout: float = 120.0
    ) -> ExecutionResult:
        """Run a sync now and return its result.

        Sends a ``run_now`` command; the run id is ``run_id(job_id(connection, sync), t)`` with a
        ``t`` unique to this client. Like any run, it obeys the overlap policy: with the default
        ``skip``, a run-now while a previous run of the job is in flight is dropped, and this
        call ends with :class:`ExecutionTimeout` saying so.
        """
        connection = self._connection(connection_id)
        self._sync(connection, sync_name)
        if not connection.is_sync_active(sync_name):
            raise SyncNotActive(
                f"sync {sync_name!r} is not active on connection {connection_id!r} "
                f"(active: {', '.join(connection.active_syncs or ()) or 'none'}); "
                "activate_sync first"
            )
        deadline = time.monotonic() + timeout
        job = job_id(connection_id, sync_name)
        if not await self._jobs.wait_until(lambda: job in self._jobs, timeout):
            raise ExecutionTimeout(
                f"job {job!r} did not appear within {timeout:.1f}s: is a worker running for "
                f"app {self.settings.app_id!r}, and was the connection accepted (see the "
                "dead-letter topic)?"
            )
        # a run whose result this client already has may still be "in flight" in the job row
        # for a moment (the executor publishes the result before it reports the run finished):
        # a run-now sent then would be skipped by the overlap policy, so let the row catch up
        await self._jobs.wait_until(
            lambda: not self._finished_in_flight(job), max(0.0, deadline - time.monotonic())
        )
        await self._ensure_results()
        at = self._request_ms()
        rid = run_id(job, at)
        future: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        self._results.runs[rid] = future
        self._results.connections[connection_id] += 1
        before = self._jobs.get(job)
        try:
            await self._command("run_now", connection_id, sync_name, requested_at_ms=at)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    result = await future
            except TimeoutError:
                raise ExecutionTimeout(self._why_no_result(job, rid, before, timeout)) from None
            self._finished.append(rid)
            return result
        finally:
            del self._results.runs[rid]
            self._results.connections[connection_id] -= 1
            if self._results.connections[connection_id] <= 0:
                del self._results.connections[connection_id]

    async def execute_action(
        self,
        connection_id: str,
        action: str,
        input: Mapping[str, Any] | BaseModel | None = None,
        *,
        timeout: float = 60.0,
    ) -> ActionResult:
        """Run an action of a connection and return its result.

        The input is validated by the executor against the action's input model: an invalid
        input comes back as a failed result naming the field, not as an exception here.
        """
        connection = self._connection(connection_id)
        connector = self._connector_of(connection)
        if action not in connector.actions:
            raise UnknownAction(
                f"action {action!r} not found in connector {connector.id!r} "
                f"(actions: {', '.join(connector.actions) or 'none'})"
            )
        payload = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        await self._ensure_results()
        correlation_id = uuid.uuid4().hex
        request = ActionRequest(
            correlation_id=correlation_id,
            connection_id=connection_id,
            action=action,
            input=dict(payload or {}),
            requested_at_ms=_now_ms(),
        )
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self._results.actions[correlation_id] = future
        try:
            await self._send(ACTION_REQUESTS, connection_id, request.model_dump_json().encode())
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                raise ExecutionTimeout(
                    f"no result for action {action!r} of connection {connection_id!r} "
                    f"(correlation id {correlation_id}) within {timeout:.1f}s: is a worker "
                    f"running for app {self.settings.app_id!r}?"
                ) from None
        finally:
            del self._results.actions[correlation_id]

    # -- internals ---------------------------------------------------------------------------

    def _connection(self, connection_id: str) -> Connection:
        connection = self._connections.get(connection_id)
        if connection is None:
            raise UnknownConnection(f"Connection {connection_id!r} not found")
        return connection

    def _connector_of(self, connection: Connection) -> AnyConnector:
        connector = self.get_connector(connection.connector_id)
        if connector is None:
            raise UnknownConnector(
                f"connection {connection.id!r}: connector {connection.connector_id!r} is not "
                f"registered (known: {', '.join(self.registry.ids())})"
            )
        return connector

    def _sync(self, connection: Connection, sync_name: str) -> None:
        connector = self._connector_of(connection)
        if sync_name not in connector.syncs:
            raise UnknownSync(
                f"Sync {sync_name!r} not found in connector {connector.id!r} "
                f"(syncs: {', '.join(connector.syncs) or 'none'})"
            )

    def _job_target(self, job: str) -> tuple[str, str]:
        try:
            connection_id, sync_name = parse_job_id(job)
        except IdentityError as exc:
            raise UnknownJob(str(exc)) from None
        connection = self._connection(connection_id)
        self._sync(connection, sync_name)
        if not connection.is_sync_active(sync_name):
            raise SyncNotActive(
                f"job {job!r}: sync {sync_name!r} is not active on connection "
                f"{connection_id!r}, so it has no job"
            )
        return connection_id, sync_name

    def _finished_in_flight(self, job: str) -> bool:
        state = self._jobs.get(job)
        return state is not None and any(f.run_id in self._finished for f in state.in_flight)

    def _request_ms(self) -> int:
        """A request instant unique within this client (run ids of run-now differ)."""
        self._last_request_ms = max(_now_ms(), self._last_request_ms + 1)
        return self._last_request_ms

    def _why_no_result(self, job: str, rid: str, before: JobState | None, timeout: float) -> str:
        base = f"no result for run {rid!r} within {timeout:.1f}s"
        state = self._jobs.get(job)
        if state is None:
            return f"{base}: job {job!r} no longer exists (connection removed or unscheduled?)"
        running = [f.run_id for f in state.in_flight]
        if rid in running:
            return f"{base}: the run is still in flight (raise the timeout?)"
        skipped = before is not None and state.skipped_runs > before.skipped_runs
        return (
            f"{base}: the run may have been skipped by the overlap policy (the workers' "
            "DATABITE_OVERLAP, 'skip' by default) because a previous run of the job was in "
            f"flight (in flight now: {', '.join(running) or 'none'}"
            + ("; the job has counted a skipped run since the request" if skipped else "")
            + "), or no worker is running"
        )

    async def _ensure_results(self) -> None:
        if self._results_started:
            return
        async with self._results_lock:
            if not self._results_started:
                await self._results.start(self.start_timeout)
                self._results_started = True

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise ClientError("the client is not started (use `async with` or await start())")
        return self._producer

    async def _send(self, spec: TopicSpec, key: str, value: bytes | None) -> RecordMetadata:
        producer = self._require_producer()
        future = await producer.send(spec.name(self.settings), key=key.encode(), value=value)
        metadata: RecordMetadata = await future
        return metadata

    async def _write(
        self,
        view: CompactedView[Any],
        spec: TopicSpec,
        key: str,
        value: BaseModel | None,
    ) -> None:
        """Publish (a tombstone for None), then wait until our own view has applied it."""
        raw = value.model_dump_json().encode() if value is not None else None
        metadata = await self._send(spec, key, raw)
        await view.wait_for_offset(metadata.partition, metadata.offset, self.write_timeout)

    async def _command(
        self,
        command: CommandKind,
        connection_id: str,
        sync_name: str | None,
        *,
        requested_at_ms: int = 0,
    ) -> None:
        message = Command(
            command=command,
            connection_id=connection_id,
            sync_name=sync_name,
            command_id=uuid.uuid4().hex,
            requested_at_ms=requested_at_ms,
        )
        await self._send(COMMANDS, connection_id, message.model_dump_json().encode())

    async def _check_topics(self) -> None:
        names = [
            spec.name(self.settings)
            for spec in (CONNECTIONS, INTEGRATIONS, COMMANDS, ACTION_REQUESTS, ACTION_RESULTS)
        ]
        names += [RESULTS.name(self.settings), changelog_topic(self.settings, "jobs")]
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.broker, request_timeout_ms=10000
        )
        await admin.start()
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        missing = sorted(t["topic"] for t in described if t.get("error_code") not in (0, None))
        if not missing:
            return
        if not self.create_topics:
            raise TopicsMissing(
                f"topics missing on {self.settings.broker}: {', '.join(missing)}; run "
                "`databite-stream topics create` (or start a worker) with the same "
                "DATABITE_TOPIC_PREFIX/DATABITE_APP_ID, or pass create_topics=True"
            )
        _created, problems = await create_topics(self.settings)
        if problems:
            raise TopicsMissing("; ".join(str(p) for p in problems))


def _ids(connections: Sequence[Connection], limit: int = 5) -> str:
    ids = [repr(c.id) for c in connections[:limit]]
    more = len(connections) - limit
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "")
