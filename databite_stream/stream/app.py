"""Builds the faust App of a worker from one :class:`Settings`: topics, tables, agents.

Owns the wiring only. Each agent lives in its own module (``catalog_agent``, ``scheduler_agent``,
``executor_agent``) as a short decode -> core call -> emit loop; they share the
:class:`StreamApp` built here (topics, tables, settings, registry, dead-letter sink).

faust choices (see DESIGN.md "Known traps"): keys and values are raw bytes (we decode with
pydantic ourselves, so undecodable input reaches the dead-letter topic with its origin instead
of crashing the stream); tables hold bytes behind :mod:`.rows`; processing is at-least-once and
``run_id`` de-duplicates; ticks are messages, not table writes from a timer.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.serializers import codecs
from faust.types import TP, TableT
from mode import Service

from databite_stream.connectors import default_registry
from databite_stream.connectors.registry import AnyConnector, ConnectorRegistry
from databite_stream.connectors.sdk import Connector
from databite_stream.models import Integration
from databite_stream.schedule import DueIndex, FirstRun, Misfire, Overlap, Policy
from databite_stream.settings import Settings, SettingsError
from databite_stream.stream.deadletters import DeadLetters
from databite_stream.stream.integrations import IntegrationsView
from databite_stream.stream.metrics import Metrics
from databite_stream.stream.outbox import Outbox
from databite_stream.stream.restore import BulkRestoreTable
from databite_stream.stream.rows import compact, decode_connection_row, row_partition
from databite_stream.stream.transport import Transport
from databite_stream.topics import COMMANDS, INBOX, INTEGRATIONS, TABLES, TOPICS, WORK, TopicSpec
from databite_stream.wire import JobRemove

__all__ = ("StreamApp", "build_app", "now_ms")

log = logging.getLogger(__name__)

#: per table and partition (RocksDB store): memtable size and block cache
ROCKSDB_WRITE_BUFFER = 1024**2
ROCKSDB_BLOCK_CACHE = 4 * 1024**2

_RAW: faust.Schema[bytes, bytes] = faust.Schema(
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)


class _CompactJson(codecs.json):
    """faust's json codec (orjson) with exact-size output: table keys (``key_type=str``)
    are json-encoded and kept by the memory:// store; see :func:`rows.compact`."""

    def _dumps(self, s: Any) -> bytes:
        return compact(super()._dumps(s))


codecs.register("json", _CompactJson())


def load_connector(ref: str) -> AnyConnector:
    """Import ``module:attribute`` and return the connector it names."""
    module_name, _, attribute = ref.partition(":")
    try:
        connector = getattr(importlib.import_module(module_name), attribute or "connector")
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"DATABITE_CONNECTORS: cannot load {ref!r}: {exc}") from None
    if not isinstance(connector, Connector):
        raise SettingsError(f"DATABITE_CONNECTORS: {ref!r} is not a Connector")
    return connector


def now_ms() -> int:
    return int(time.time() * 1000)


class StreamApp:
    """A worker: the faust app plus everything its agents share."""

    def __init__(self, settings: Settings, registry: ConnectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else default_registry()
        for ref in filter(None, (r.strip() for r in settings.connectors.split(","))):
            self.registry.register(load_connector(ref))
        self.policy = Policy(
            first_run=FirstRun.IMMEDIATE if settings.first_run == "immediately" else FirstRun.GRID,
            misfire=Misfire(settings.misfire),
            catch_up_window_ms=int(settings.catch_up_window_s * 1000),
            catch_up_max=settings.catch_up_max,
            overlap=Overlap(settings.overlap),
            lease_ms=int(settings.lease_s * 1000),
            auto_pause_after=settings.auto_pause_after,
            misfire_grace_ms=int(settings.misfire_grace_s * 1000),
        )
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{b}" for b in settings.broker.split(",")],
            store=settings.store,
            datadir=settings.data_dir,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=settings.standby_replicas,
            web_enabled=settings.web_enabled,
            web_port=settings.web_port,
            web_bind=settings.web_host,
            # how other workers reach this one when they route a request to its partitions
            canonical_url=f"http://{settings.web_host}:{settings.web_port}",
            broker_commit_interval=settings.commit_interval_s,
            broker_session_timeout=settings.session_timeout_s,
            consumer_group_instance_id=settings.group_instance_id,
            broker_heartbeat_interval=settings.session_timeout_s / 10,
            # bigger batches: a due wave sends thousands of small messages at once
            producer_linger=0.005,
            producer_max_batch_size=1_048_576,
            consumer_auto_offset_reset="earliest",
            key_serializer="raw",
            value_serializer="raw",
            # memory:// tables restore their active partitions in bulk (see .restore)
            Table=BulkRestoreTable,
        )
        # faust's consumer with our fetch wait (see .transport); set before anything asks
        # the app for its transport
        self.app.transport = Transport(
            self.app.conf.broker_consumer, self.app, fetch_max_wait_ms=settings.fetch_max_wait_ms
        )
        # faust stops *every* stream while more than 100 table writes wait in its producer
        # buffer; a tick that plans thousands of jobs writes thousands of rows at once
        self.app.producer.buffer.max_messages = 10_000
        # every registry topic but integrations (read by the IntegrationsView, outside the group)
        self.topics: dict[str, faust.TopicT] = {
            spec.suffix: self._topic(spec) for spec in TOPICS if spec is not INTEGRATIONS
        }
        # the scheduler agent reads commands and its inbox as one ordered stream per partition
        self.scheduler_source = self.app.topic(
            COMMANDS.name(settings),
            INBOX.name(settings),
            schema=_RAW,
            partitions=settings.partitions,
        )
        # faust derives a table's changelog serializers from key_type/value_type (not from
        # the schema): bytes -> raw, anything else -> json; rows are bytes we encode ourselves
        self.connections, self.jobs, self.runs_done = (self._table(t) for t in TABLES)
        #: per active partition of the inbox: heap of (wake_at_ms, job_id)
        self.due: dict[int, DueIndex] = {}
        self.deadletters = DeadLetters(self)
        self._partition_counts: dict[str, int] = {}
        self._local_getters: dict[str, Callable[[str], bytes | None]] = {}
        #: batched publishing of the per-run records (results, markers, job rows)
        self.outbox = Outbox(
            self._kafka_producer,
            self._partition_count,
            linger_s=settings.outbox_linger_ms / 1000,
        )
        self.metrics = Metrics(self)
        self.integrations = IntegrationsView(
            settings.broker,
            INTEGRATIONS.name(settings),
            on_invalid=self.deadletters.from_record_if_owner,
            on_change=self._on_integration_change,
        )
        self.inbox_name = INBOX.name(settings)
        self.work_name = WORK.name(settings)
        #: set once the first assignment has been recovered (and the due index built)
        self.assigned = asyncio.Event()
        self.app.add_dependency(_IntegrationsService(self.integrations))

    def _topic(self, spec: TopicSpec) -> faust.TopicT:
        return self.app.topic(
            spec.name(self.settings), schema=_RAW, partitions=self.settings.partitions
        )

    def _table(self, name: str) -> TableT[str, bytes]:
        options: dict[str, Any] | None = None
        if self.settings.store == "memory://" and name in ("connections", "jobs"):
            # their rows name their partition: the bulk restore needs no key lists
            options = {"partition_of": row_partition}
        if self.settings.store == "rocksdb://":
            # faust opens one RocksDB per table and partition (24 with 8 partitions), each
            # with its own memtables and block cache; its defaults (64 MiB x 3 memtables, a
            # 2 GiB cache) keep a whole table in memory. Small buffers flush rows to disk.
            options = {
                "block_cache_size": ROCKSDB_BLOCK_CACHE,
                "block_cache_compressed_size": ROCKSDB_BLOCK_CACHE // 4,
                "write_buffer_size": ROCKSDB_WRITE_BUFFER,
                "max_write_buffer_number": 2,
            }
        return self.app.Table(
            name,
            key_type=str,
            value_type=bytes,
            partitions=self.settings.partitions,
            recovery_buffer_size=10_000,
            options=options,
        )

    def topic(self, spec: TopicSpec) -> faust.TopicT:
        return self.topics[spec.suffix]

    def local_get(self, table: TableT[str, bytes]) -> Callable[[str], bytes | None]:
        """A read of the table's local rows without faust's per-read sensors (``Table.get``
        runs three sensor hooks and four Python-level calls: ~1 µs, several times per run):
        the ``get`` of a memory:// store's dict, else the store's. Resolved on first use
        (faust creates a table's store lazily)."""
        getter = self._local_getters.get(table.name)
        if getter is None:
            rows = _memory_rows(table)
            getter = rows.get if rows is not None else table.data.get
            self._local_getters[table.name] = getter
        return getter

    def local_items(self, table: TableT[str, bytes]) -> Iterator[tuple[str, bytes]]:
        """The table's local rows, safe to iterate across awaits: faust applies standby
        changelog batches to a memory:// store's dict between them (iterating the dict
        would then fail), so its keys are listed first (8 bytes each) and the rows read as
        they come; a row deleted meanwhile is skipped. Other stores iterate a snapshot."""
        rows = _memory_rows(table)
        if rows is None:
            yield from table.items()
            return
        for key in list(rows):
            raw = rows.get(key)
            if raw is not None:
                yield key, raw

    async def drain_table_writes(self, timeout: float = 30.0) -> None:
        """Hand every buffered table-changelog record to the Kafka producer.

        faust writes table changes through a buffer (``send_soon``), and the producer flush
        it runs before committing offsets gives up after 0.1 s without progress
        (``ProducerBuffer.flush_atmost``). A source offset could then be committed before
        the table change it caused is in Kafka: after a rebalance the new owner recovers the
        old row and never sees the message again (the fault suite saw a job stuck "in
        flight" until its lease). Agents call this after each event, so the record is in
        the producer before the offset becomes committable; the commit's producer flush
        then waits for its delivery. No upstream issue found for this; faust 0.15.3.
        """
        buffer = self.app.producer.buffer
        deadline = time.monotonic() + timeout
        while buffer.size and time.monotonic() < deadline:
            await buffer.flush()

    @staticmethod
    def changelog_key(key: str) -> bytes:
        """A table key as faust writes it to the changelog: its json codec for ``str`` keys
        gives these bytes (a unit test compares them), and it must, or compaction would keep
        two rows for one key. orjson directly: faust's serializer registry took ~1 µs a key;
        compacted: the outbox holds the key until Kafka acknowledges it, and orjson's bytes
        keep a 4 KiB buffer (see rows.compact)."""
        return compact(orjson.dumps(key))

    def _kafka_producer(self) -> Any:
        """faust's started aiokafka producer (the outbox shares its connections)."""
        return self.app.producer._ensure_producer()  # type: ignore[attr-defined]

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            known = self._kafka_producer().client.cluster.partitions_for_topic(topic)
            if not known:
                return self.settings.partitions  # not in the metadata yet: ask again next time
            # kept: a topic's partition count cannot change without breaking co-partitioning
            # (the outbox asks for every record it keys)
            count = self._partition_counts[topic] = len(known)
        return count

    def durable_put(
        self, table: TableT[str, bytes], key: str, value: bytes, partition: int
    ) -> asyncio.Future[None]:
        """Write a table row now (local store) and its changelog record through the outbox;
        the future resolves when Kafka has the record. Await it before the source offset of
        the event that caused the write can be committed."""
        table.data[key] = value  # the local store, without faust's buffered changelog send
        return self.outbox.add(
            table.changelog_topic.get_topic_name(), self.changelog_key(key), value, partition
        )

    def durable_delete(
        self, table: TableT[str, bytes], key: str, partition: int
    ) -> asyncio.Future[None]:
        """Delete a table row now and publish its tombstone (see :meth:`durable_put`)."""
        if key in table.data:
            del table.data[key]
        return self.outbox.add(
            table.changelog_topic.get_topic_name(), self.changelog_key(key), None, partition
        )

    @property
    def scheduler_inbox_topic(self) -> faust.TopicT:
        return self.topic(INBOX)

    async def update_lag(self) -> None:
        """Refresh the consumer-lag gauge (highwater - position, per assigned partition)."""
        consumer = self.app.consumer
        for tp in consumer.assignment():
            position = await consumer.position(tp)
            if position is not None:
                lag = max(0, consumer.highwater(tp) - position)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)

    def owned_inbox_partitions(self) -> set[int]:
        """Partitions of the scheduler inbox this worker actively owns (not standbys)."""
        actives: set[TP] = self.app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic == self.inbox_name}

    async def _on_integration_change(self, integration_id: str, value: Integration | None) -> None:
        """An integration was deleted: unschedule the jobs of the connections this worker
        owns that use it (other workers do the same for theirs). Not a table write: a
        ``JobRemove`` to the scheduler inbox, handled in order like any other change."""
        if value is not None:
            return
        owned = self.owned_inbox_partitions()
        for _key, raw in list(self.connections.items()):
            row = decode_connection_row(raw)
            if row.partition not in owned or row.connection.integration_id != integration_id:
                continue
            for job in row.job_ids:
                await self.remove_job(
                    row.connection.id, job, f"integration {integration_id!r} deleted"
                )

    async def remove_job(self, connection_id: str, job: str, reason: str) -> None:
        """Ask the job's partition (through the scheduler inbox) to unschedule it."""
        remove = JobRemove(job_id=job, connection_id=connection_id, reason=reason, at_ms=now_ms())
        await self.topic(INBOX).send(
            key=connection_id.encode(), value=remove.model_dump_json().encode()
        )


def _memory_rows(table: TableT[str, bytes]) -> dict[str, bytes] | None:
    """The dict a memory:// store keeps its rows in for its whole life (faust's memory Store
    mutates it, never replaces it); None for other stores."""
    rows = getattr(table.data, "data", None)
    return rows if type(rows) is dict else None


def build_app(settings: Settings, registry: ConnectorRegistry | None = None) -> StreamApp:
    """The worker's app with every agent registered."""
    from databite_stream.stream import catalog_agent, executor_agent, scheduler_agent

    stream_app = StreamApp(settings, registry)
    catalog_agent.register(stream_app)
    scheduler_agent.register(stream_app)
    executor_agent.register(stream_app)
    if settings.web_enabled:
        from databite_stream.stream import web

        web.register(stream_app)
    return stream_app


class _IntegrationsService(Service):
    """Runs the integrations view for as long as the worker runs."""

    def __init__(self, view: IntegrationsView) -> None:
        super().__init__()
        self.view = view

    async def on_start(self) -> None:
        await self.view.start()

    async def on_stop(self) -> None:
        await self.view.stop()
