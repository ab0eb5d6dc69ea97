"""Bridges for users of ``@databite/engine``: a polled data provider, and a result exporter.

Owns two adapters from the reference engine's callbacks to the stream engine's topics:

* :class:`ProviderBridge` polls a legacy ``data_provider()`` (``{"connections": [...],
  "integrations": [...]}``, models or dicts, the reference's camelCase keys accepted) every
  ``refresh_interval`` seconds and publishes **only the differences** against the compacted
  topics through a :class:`~databite_stream.client.DatabiteClient`: upserts for new or changed
  items, tombstones for items that disappeared. Unlike the reference engine's refresh, which
  replaced its maps and never reconciled jobs, every change here reaches the workers'
  schedules, and nothing is published when nothing changed.
* :class:`ResultExporter` replaces ``dataExporter``: it consumes ``databite.results`` in a
  consumer group and awaits a user ``exporter(result)`` per result, committing only after the
  call returned (at-least-once: after a crash a result may be exported again; de-duplicate on
  ``run_id``).

Invariants of the bridge:

* Order: integration upserts, then connection upserts, then connection tombstones, then
  integration tombstones, so a connection is never published before its integration and an
  integration is never deleted before its connections.
* An invalid item (bad fields or config, unknown connector or sync, duplicate id, an
  integration still in use) is skipped with a logged reason and listed in the cycle's
  :class:`BridgeReport`; its id is never tombstoned because of it (the last valid version stays
  published, as the catalog agent keeps the last valid connection).
* A provider error (it raised, or returned something that is not ``{"connections": [...],
  "integrations": [...]}``) publishes nothing; it is logged and the next interval retries.
  A missing key is an error, not "empty": an empty list deletes, a missing one must not.
* ``prune="all"`` (default, the reference's semantics: the provider *is* the catalog) deletes
  every published id the provider no longer returns; ``prune="seen"`` deletes only ids this
  bridge has itself received from the provider, for topics shared with other publishers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from databite_stream.client import (
    ClientError,
    DatabiteClient,
    to_connection,
    to_integration,
)
from databite_stream.models import Connection, ExecutionResult, Integration
from databite_stream.settings import Settings
from databite_stream.topics import RESULTS

__all__ = (
    "BridgeReport",
    "CatalogChanges",
    "DataProvider",
    "NormalizedData",
    "ProviderBridge",
    "ProviderDataError",
    "ResultExporter",
    "SkippedItem",
    "diff_catalog",
    "normalize_provider_data",
)

log = logging.getLogger(__name__)

ItemKind = Literal["integration", "connection"]
DataProvider = Callable[[], Awaitable[Mapping[str, Any]]]
Exporter = Callable[[ExecutionResult], Awaitable[object]]

#: the reference engine's camelCase field names -> ours
_CAMEL_CASE: dict[str, str] = {
    "integrationId": "integration_id",
    "connectorId": "connector_id",
    "externalId": "external_id",
    "syncInterval": "sync_interval",
    "activeSyncs": "active_syncs",
}


class ProviderDataError(ValueError):
    """The provider returned something that is not ``{"connections": [...], ...}``."""


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """An item the bridge did not publish, and why."""

    kind: ItemKind
    id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class BridgeReport:
    """What one provider cycle did.

    Attributes:
        upserted: integrations and connections published (new or changed).
        deleted: tombstones published.
        unchanged: items equal to what is already published (nothing sent).
        invalid: items skipped (see ``skipped`` for the reasons).
        skipped: the skipped items.
        error: the provider error that made the cycle publish nothing, if any.
    """

    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    invalid: int = 0
    skipped: tuple[SkippedItem, ...] = ()
    error: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.upserted or self.deleted)


@dataclass(frozen=True, slots=True)
class NormalizedData:
    """The provider's data as models, with what could not be read."""

    integrations: dict[str, Integration]
    connections: dict[str, Connection]
    skipped: list[SkippedItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CatalogChanges:
    """What to publish, in the order it must be published."""

    upsert_integrations: tuple[Integration, ...] = ()
    upsert_connections: tuple[Connection, ...] = ()
    delete_connections: tuple[str, ...] = ()
    delete_integrations: tuple[str, ...] = ()
    unchanged: int = 0


def _snake(item: Mapping[str, Any]) -> dict[str, Any]:
    return {_CAMEL_CASE.get(k, k): v for k, v in item.items()}


def _items(data: Mapping[str, Any], name: str) -> Sequence[Any]:
    if name not in data:
        raise ProviderDataError(f"provider data has no {name!r} list (an empty list deletes all)")
    items = data[name]
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ProviderDataError(f"provider data {name!r} is {type(items).__name__}, not a list")
    return items


def normalize_provider_data(data: object) -> NormalizedData:
    """Models from the provider's data (pure). Raises :class:`ProviderDataError` if the shape
    is wrong; single bad items are returned in ``skipped`` instead.

    Dicts may use the reference engine's camelCase keys; a connection without a connector id
    takes it from its integration in the same data (the reference resolved the connector
    through the integration). A duplicate id skips every item with that id.
    """
    if not isinstance(data, Mapping):
        raise ProviderDataError(f"provider returned {type(data).__name__}, not a mapping")
    skipped: list[SkippedItem] = []

    def ident(item: object) -> str | None:
        value = item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)
        return value if isinstance(value, str) else None

    integrations: dict[str, Integration] = {}
    for item in _unique(_items(data, "integrations"), "integration", ident, skipped):
        try:
            integrations_item = (
                to_integration(_snake(item)) if isinstance(item, Mapping) else to_integration(item)
            )
        except (ClientError, TypeError) as exc:
            skipped.append(SkippedItem("integration", ident(item), str(exc)))
            continue
        integrations[integrations_item.id] = integrations_item
    connections: dict[str, Connection] = {}
    for item in _unique(_items(data, "connections"), "connection", ident, skipped):
        try:
            if isinstance(item, Mapping):
                fields = _snake(item)
                parent = integrations.get(str(fields.get("integration_id")))
                if "connector_id" not in fields and parent is not None:
                    fields["connector_id"] = parent.connector_id
                model = to_connection(fields)
            else:
                model = to_connection(item)
        except (ClientError, TypeError) as exc:
            skipped.append(SkippedItem("connection", ident(item), str(exc)))
            continue
        connections[model.id] = model
    return NormalizedData(integrations, connections, skipped)


def _unique(
    items: Sequence[Any],
    kind: ItemKind,
    ident: Callable[[object], str | None],
    skipped: list[SkippedItem],
) -> list[Any]:
    counts: dict[str | None, int] = {}
    for item in items:
        counts[ident(item)] = counts.get(ident(item), 0) + 1
    unique = []
    for item in items:
        key = ident(item)
        if key is not None and counts[key] > 1:
            skipped.append(SkippedItem(kind, key, f"{kind} id {key!r} appears {counts[key]} times"))
            continue
        unique.append(item)
    return unique


def diff_catalog(
    wanted_integrations: Mapping[str, Integration],
    wanted_connections: Mapping[str, Connection],
    current_integrations: Mapping[str, Integration],
    current_connections: Mapping[str, Connection],
    *,
    keep_integrations: Collection[str] = (),
    keep_connections: Collection[str] = (),
    deletable_integrations: Collection[str] | None = None,
    deletable_connections: Collection[str] | None = None,
) -> CatalogChanges:
    """What to publish to go from ``current`` to ``wanted`` (pure).

    ``keep_*``: ids never deleted (the provider returned them, invalid). ``deletable_*``:
    the only current ids that may be deleted (None: all of them).
    """
    unchanged = 0
    upsert_i: list[Integration] = []
    for key, integration in sorted(wanted_integrations.items()):
        if current_integrations.get(key) == integration:
            unchanged += 1
        else:
            upsert_i.append(integration)
    upsert_c: list[Connection] = []
    for key, connection in sorted(wanted_connections.items()):
        if current_connections.get(key) == connection:
            unchanged += 1
        else:
            upsert_c.append(connection)

    return CatalogChanges(
        upsert_integrations=tuple(upsert_i),
        upsert_connections=tuple(upsert_c),
        delete_connections=_gone(
            current_connections, wanted_connections, keep_connections, deletable_connections
        ),
        delete_integrations=_gone(
            current_integrations, wanted_integrations, keep_integrations, deletable_integrations
        ),
        unchanged=unchanged,
    )


def _gone(
    current: Collection[str],
    wanted: Collection[str],
    keep: Collection[str],
    deletable: Collection[str] | None,
) -> tuple[str, ...]:
    return tuple(
        sorted(
            key
            for key in current
            if key not in wanted and key not in keep and (deletable is None or key in deletable)
        )
    )


class ProviderBridge:
    """Publishes a legacy data provider's catalog to the compacted topics, differences only.

    Args:
        client: a started :class:`DatabiteClient` (the bridge does not own it).
        data_provider: ``async () -> {"connections": [...], "integrations": [...]}``.
        refresh_interval: seconds between cycles (the reference's ``refreshInterval`` was
            milliseconds, default 5 minutes: pass ``300``).
        prune: ``"all"`` (the provider is the whole catalog) or ``"seen"`` (delete only ids
            this bridge received from the provider before).
    """

    def __init__(
        self,
        client: DatabiteClient,
        data_provider: DataProvider,
        refresh_interval: float = 300.0,
        *,
        prune: Literal["all", "seen"] = "all",
    ) -> None:
        if refresh_interval <= 0:
            raise ValueError(f"refresh_interval must be > 0 seconds, got {refresh_interval}")
        self.client = client
        self.data_provider = data_provider
        self.refresh_interval = refresh_interval
        self.prune = prune
        self.last_report: BridgeReport | None = None
        self._seen_integrations: set[str] = set()
        self._seen_connections: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Run a cycle now and then every ``refresh_interval`` seconds, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="provider-bridge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            try:
                await self.run_once()
            except Exception:  # never let one bad cycle end the loop
                log.exception("provider bridge cycle failed; retrying next interval")
            next_at += self.refresh_interval
            now = time.monotonic()
            if next_at < now:  # a slow cycle: skip the missed slots, never burst
                next_at = now + self.refresh_interval
            await asyncio.sleep(next_at - now)

    async def run_once(self) -> BridgeReport:
        """One cycle: read the provider, publish the differences, return what happened."""
        async with self._lock:  # never two cycles at once (the reference's could overlap)
            report = await self._cycle()
        self.last_report = report
        return report

    async def _cycle(self) -> BridgeReport:
        try:
            data = normalize_provider_data(await self.data_provider())
        except Exception as exc:
            log.warning("data provider failed; retrying next interval: %r", exc)
            return BridgeReport(error=f"{type(exc).__name__}: {exc}")
        skipped = list(data.skipped)
        for item in skipped:
            log.warning("provider %s %r skipped: %s", item.kind, item.id, item.reason)
        keep_i = {s.id for s in skipped if s.kind == "integration" and s.id is not None}
        keep_c = {s.id for s in skipped if s.kind == "connection" and s.id is not None}
        self._seen_integrations |= set(data.integrations) | keep_i
        self._seen_connections |= set(data.connections) | keep_c
        try:
            await self.client.catch_up()
        except Exception as exc:
            log.warning("could not read the catalog topics; retrying next interval: %r", exc)
            return BridgeReport(error=f"{type(exc).__name__}: {exc}")
        seen = self.prune == "seen"
        changes = diff_catalog(
            data.integrations,
            data.connections,
            {i.id: i for i in self.client.get_integrations()},
            {c.id: c for c in self.client.get_connections()},
            keep_integrations=keep_i,
            keep_connections=keep_c,
            deletable_integrations=self._seen_integrations if seen else None,
            deletable_connections=self._seen_connections if seen else None,
        )
        upserted = deleted = 0

        async def attempt(kind: ItemKind, key: str, call: Awaitable[object]) -> bool:
            try:
                await call
            except ClientError as exc:
                log.warning("provider %s %r skipped: %s", kind, key, exc)
                skipped.append(SkippedItem(kind, key, str(exc)))
                return False
            return True

        error: str | None = None
        try:
            for integration in changes.upsert_integrations:
                upserted += await attempt(
                    "integration", integration.id, self.client.put_integration(integration)
                )
            for connection in changes.upsert_connections:
                upserted += await attempt(
                    "connection", connection.id, self.client.put_connection(connection)
                )
            for key in changes.delete_connections:
                deleted += await attempt("connection", key, self.client.remove_connection(key))
            for key in changes.delete_integrations:
                deleted += await attempt("integration", key, self.client.remove_integration(key))
        except Exception as exc:  # Kafka trouble: what is left is retried next interval
            log.warning("publishing the provider's changes failed; retrying next interval: %r", exc)
            error = f"{type(exc).__name__}: {exc}"
        report = BridgeReport(
            upserted=upserted,
            deleted=deleted,
            unchanged=changes.unchanged,
            invalid=len(skipped),
            skipped=tuple(skipped),
            error=error,
        )
        if report.changed or skipped:
            log.info(
                "provider cycle: %d upserted, %d deleted, %d unchanged, %d invalid",
                report.upserted,
                report.deleted,
                report.unchanged,
                report.invalid,
            )
        return report


class ResultExporter:
    """Calls ``exporter(result)`` for every result on ``databite.results``, at least once.

    Args:
        settings: the cluster's :class:`Settings`, or a bootstrap ``host:port`` string (then
            ``topic_prefix`` names the topics).
        exporter: ``async (ExecutionResult) -> Any``; an exception retries the same result
            with capped exponential backoff (the partition waits: order and at-least-once).
        group_id: the consumer group; several exporters in one group share the partitions.
        topic_prefix: with a bootstrap string, the databite topic prefix.
        from_beginning: a new group starts at the oldest retained result (default) or at the
            end.
        max_backoff: seconds, cap of the retry delay.
    """

    def __init__(
        self,
        settings: Settings | str,
        exporter: Exporter,
        group_id: str,
        *,
        topic_prefix: str = "databite",
        from_beginning: bool = True,
        max_backoff: float = 30.0,
    ) -> None:
        if isinstance(settings, str):
            settings = Settings(broker=settings, topic_prefix=topic_prefix)
        self.settings = settings
        self.exporter = exporter
        self.group_id = group_id
        self.from_beginning = from_beginning
        self.max_backoff = max_backoff
        self.exported = 0
        self.failures = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._uncommitted: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            RESULTS.name(self.settings),
            bootstrap_servers=self.settings.broker,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"result-exporter:{self.group_id}")

    async def stop(self) -> None:
        """Stop after the current call; commit what was exported."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._commit()
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, records in batch.items():
                    for record in records:
                        await self._export(record)
                        self._uncommitted[tp] = record.offset + 1
                await self._commit()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("result exporter %r stopped", self.group_id)
            raise

    async def _export(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value is None:
            return
        try:
            result = ExecutionResult.model_validate_json(record.value)
        except ValidationError as exc:
            log.warning(
                "%s[%d]@%d is not an ExecutionResult, not exported: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.errors(include_url=False, include_input=False),
            )
            return
        delay = 0.5
        while True:
            try:
                await self.exporter(result)
            except Exception:
                self.failures += 1
                log.exception("exporter failed on run %s; retrying in %.1fs", result.run_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self.exported += 1
            return

    async def _commit(self) -> None:
        if not self._uncommitted or self._consumer is None:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # e.g. the partitions moved in a rebalance: re-export there
            log.warning("commit of exported offsets failed (they will be re-exported): %r", exc)
