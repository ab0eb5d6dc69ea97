"""Bulk restore of ``memory://`` tables: read a changelog partition in big batches, not per event.

faust recovers a table one changelog record at a time through its stream machinery (fetcher
-> conductor -> event -> changelog queue -> recovery loop, several tasks and futures per
record): ~100 µs of event-loop time per record, about 10k records/s on the reference VM,
whatever the buffer and fetch settings. :class:`BulkRestoreStore` is faust's in-memory store
plus one step: when partitions are assigned, it reads its *active* changelog partitions from
the beginning with a plain aiokafka consumer (``getmany`` of thousands of records, applied
straight into the dict) and reports the offset it reached as the partition's persisted offset.
faust's own recovery then starts there: it reads only what was written since (usually
nothing) and runs the ``on_recover`` callbacks as before. Standby partitions are left to
faust. The result is the state faust's replay would build: every record of the partition
applied in offset order over what the store holds, tombstones deleting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import memory, rocksdb
from faust.tables import Table
from faust.types import TP

from databite_stream.stream.heap import release_free_memory, rss_bytes

__all__ = ("BulkRestoreRocksStore", "BulkRestoreStore", "BulkRestoreTable")

log = logging.getLogger(__name__)

FETCH_BYTES = 16 * 1024**2  # per partition and per fetch


class _BulkRestore:
    """What both bulk-restoring stores share: on each rebalance, read the active changelog
    partitions from where the store's own state ends (:meth:`_resume_from`) to their end
    offsets with a plain consumer, in the background, and tell faust they are restored up
    to there (:meth:`persisted_offset`); changelog batches faust hands over meanwhile are held
    and applied after the bulk read, so records are applied in offset order. Subclasses say
    where to start and how to apply a partition's records (:meth:`_apply_records`)."""

    app: Any
    table: Any

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        #: offset of the last changelog record the bulk read applies, per active partition;
        #: valid for the rebalance that set it (reset at the start of each one)
        self._restored: dict[TP, int] = {}
        self._restore_task: asyncio.Future[int] | None = None
        #: changelog batches faust handed us while the bulk read was still running
        self._held: list[tuple[list[Any], Any, Any]] = []

    # -- what a store says -------------------------------------------------------------------
    def _resume_from(self, tp: TP) -> int:
        """First changelog offset the store does not hold yet."""
        raise NotImplementedError

    def _begin_bulk(self, tps: list[TP]) -> None:
        """Called at each rebalance with the active partitions, before any record is read."""

    def _apply_records(self, tp: TP, records: list[Any]) -> None:
        raise NotImplementedError

    def _persisted_offset(self, tp: TP) -> int | None:
        """The store's own persisted offset (used when the bulk read has nothing to do)."""
        return None

    # -- faust's hooks -------------------------------------------------------------------------
    def persisted_offset(self, tp: TP) -> int | None:
        if tp in self._restored:
            return self._restored[tp]
        return self._persisted_offset(tp)

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        # the previous rebalance's read first: it must not write to a partition faust is
        # about to revoke (a RocksDB store would open its database again)
        await self._finish_restore()
        self._restored = {}
        await super().on_rebalance(  # type: ignore[misc]
            assigned, revoked, newly_assigned, generation_id
        )
        topic = self.table.changelog_topic.get_topic_name()
        actives = sorted(tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic)
        if not actives:
            return
        # Only the end offsets are fetched here: faust's recovery must send its own offset
        # requests right away (once its consumer has a 1.5 s long-poll fetch in flight they
        # wait behind it); the records are read in the background and awaited in
        # on_recovery_completed, before faust resumes the streams.
        consumer = self._new_consumer()
        await consumer.start()
        try:
            parts = [TopicPartition(tp.topic, tp.partition) for tp in actives]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
        except BaseException:
            await consumer.stop()
            raise
        self._begin_bulk(list(actives))
        starts = {tp: self._resume_from(TP(tp.topic, tp.partition)) for tp in parts}
        todo = [tp for tp in parts if starts[tp] < ends[tp]]
        if not todo:
            await consumer.stop()
            return
        self._restored = {TP(tp.topic, tp.partition): ends[tp] - 1 for tp in todo}
        self._restore_task = asyncio.ensure_future(self._bulk_read(consumer, todo, starts, ends))

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        if self._restore_task is not None:
            self._held.append((list(batch), to_key, to_value))  # faust clears its buffer
            return
        super().apply_changelog_batch(batch, to_key, to_value)  # type: ignore[misc]

    async def _after_restore(self, active_tps: Any) -> None:
        """Called once faust's recovery is complete, before the free heap pages go back."""

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        await self._finish_restore()
        await super().on_recovery_completed(active_tps, standby_tps)  # type: ignore[misc]
        await self._after_restore(active_tps)
        # the bulk read's fetch buffers and decoded records are garbage now, spread over the
        # C heap: hand the free pages back (the index rebuild's freeze_heap runs before the
        # bigger tables are done)
        started, before = time.monotonic(), rss_bytes()
        release_free_memory()
        log.info(
            "table %s restored: released free heap pages, RSS %d -> %d MiB (%.0f ms)",
            self.table.name,
            before >> 20,
            rss_bytes() >> 20,
            (time.monotonic() - started) * 1000,
        )

    async def _finish_restore(self) -> None:
        task = self._restore_task
        if task is None:
            return
        try:
            await task
        except Exception as exc:
            # faust was told these partitions are restored: going on would lose rows
            log.exception("bulk restore of table %s failed", self.table.name)
            await self.app.crash(exc)
            raise
        finally:
            self._restore_task = None
            held, self._held = self._held, []
            for batch, to_key, to_value in held:
                super().apply_changelog_batch(batch, to_key, to_value)  # type: ignore[misc]

    def _new_consumer(self) -> AIOKafkaConsumer:
        conf = self.app.conf
        return AIOKafkaConsumer(
            bootstrap_servers=[f"{u.host}:{u.port or 9092}" for u in conf.broker],
            client_id=f"{conf.broker_client_id}-restore",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=8 * FETCH_BYTES,
            fetch_max_wait_ms=100,
        )

    async def _bulk_read(
        self,
        consumer: AIOKafkaConsumer,
        parts: list[TopicPartition],
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> int:
        started = time.monotonic()
        count = 0
        try:
            for tp in parts:
                consumer.seek(tp, starts[tp])
            todo = set(parts)
            while todo:
                batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=50_000)
                for tp, records in batches.items():
                    end = ends[tp]
                    if records and records[-1].offset >= end:
                        # written after the end offsets: faust's recovery reads those
                        records = [rec for rec in records if rec.offset < end]
                    self._apply_records(TP(tp.topic, tp.partition), records)
                    count += len(records)
                    if await consumer.position(tp) >= end:
                        todo.discard(tp)
                        consumer.pause(tp)
        finally:
            await consumer.stop()
        log.info(
            "bulk-restored %s: %d records from %d partitions in %.2fs",
            self.table.name,
            count,
            len(parts),
            time.monotonic() - started,
        )
        return count


class BulkRestoreStore(_BulkRestore, memory.Store[Any, Any]):
    """faust's in-memory store, restored in bulk from the beginning of each active
    changelog partition at every rebalance."""

    def __post_init__(self) -> None:
        super().__post_init__()
        #: keys the bulk read applied, per partition, when rows do not name their partition
        #: (see _partition_of)
        self._bulk_keys: dict[int, list[Any]] = {}
        self._bulk_partitions: set[int] = set()  # partitions the bulk read filled
        self._key_of: Callable[[bytes], Any] | None = None
        self._value_of: Callable[[bytes], Any] | None = None

    @property
    def _partition_of(self) -> Callable[[Any], int] | None:
        """The partition a row belongs to, read from its value (``options["partition_of"]``;
        set by the store's owner after ``__post_init__``); without it, the keys the bulk read
        applied are listed per partition. Either serves only to drop a partition's rows once
        it is no longer active: faust's ``_key_partition`` dict costs ~40 bytes per key (80 MB
        for a 1M-schedule worker's two tables), a key list ~9 (18 MB), a scan of the rows on
        revocation nothing."""
        return (self.options or {}).get("partition_of")

    def _resume_from(self, tp: TP) -> int:
        return 0  # the dict may hold rows of a partition faust gave to someone else meanwhile

    def _begin_bulk(self, tps: list[TP]) -> None:
        self._key_of, self._value_of = self._key_decoder(), self._value_decoder()
        listed = self._partition_of is None
        for tp in tps:  # read from the beginning again: the lists start over
            self._bulk_partitions.add(tp.partition)
            if listed:
                self._bulk_keys[tp.partition] = []

    def _apply_records(self, tp: TP, records: list[Any]) -> None:
        key_of, value_of, data = self._key_of, self._value_of, self.data
        assert key_of is not None
        assert value_of is not None
        keys = self._bulk_keys.get(tp.partition) if self._partition_of is None else None
        for rec in records:
            key = key_of(rec.key)
            if rec.value is None:
                data.pop(key, None)
            else:
                data[key] = value_of(rec.value)
                if keys is not None:
                    keys.append(key)  # a key listed twice is harmless

    async def _after_restore(self, active_tps: Any) -> None:
        # what faust's store does with _key_partition: rows of partitions not active are gone
        active = {tp.partition for tp in active_tps}
        for partition in [p for p in self._bulk_keys if p not in active]:
            for key in self._bulk_keys.pop(partition):
                self.data.pop(key, None)
        gone = self._bulk_partitions - active
        if gone and self._partition_of is not None:
            await self._drop_rows_of(gone, self._partition_of)
        self._bulk_partitions &= active

    async def _drop_rows_of(self, partitions: set[int], partition_of: Callable[[Any], int]) -> None:
        """Delete the rows of ``partitions`` (a scan of every row: revocations are rare)."""
        started, data, dropped = time.monotonic(), self.data, 0
        # a snapshot of the keys (8 bytes each), values read as we go: the pauses let faust
        # apply standby changelog batches to the same dict meanwhile
        for count, key in enumerate(list(data), start=1):
            value = data.get(key)
            if value is not None and partition_of(value) in partitions:
                data.pop(key, None)
                dropped += 1
            if count % 50_000 == 0:
                await asyncio.sleep(0)
        log.info(
            "table %s: dropped %d rows of partitions %s no longer active (%.2fs)",
            self.table.name,
            dropped,
            sorted(partitions),
            time.monotonic() - started,
        )

    def _key_decoder(self) -> Callable[[bytes], Any]:
        if self.key_serializer == "raw":
            return lambda raw: raw
        if self.key_serializer == "json" and self.key_type in (str, int, None):
            return orjson.loads
        loads, key_type, ser = self.app.serializers.loads_key, self.key_type, self.key_serializer
        table: Any = self.table
        return lambda raw: table._to_key(loads(key_type, raw, serializer=ser))

    def _value_decoder(self) -> Callable[[bytes], Any]:
        if self.value_serializer == "raw":
            return lambda raw: raw
        loads, value_type, ser = (
            self.app.serializers.loads_value,
            self.value_type,
            self.value_serializer,
        )
        return lambda raw: loads(value_type, raw, serializer=ser)


class BulkRestoreRocksStore(_BulkRestore, rocksdb.Store):
    """faust's RocksDB store, restored in bulk: each active partition's changelog is read
    from the offset its database holds (``persisted_offset``; from the beginning for a new
    one) and written in one ``WriteBatch`` per fetched batch, with the offset reached in the
    same batch (a crash part-way resumes from there). faust's per-record recovery applies
    ~7,000 records/s here and leaves its garbage spread over the Python heap (~170 MB of free
    pools pinned in the RSS after 1M schedules); this reads what a getmany returns."""

    def _persisted_offset(self, tp: TP) -> int | None:
        result: int | None = rocksdb.Store.persisted_offset(self, tp)
        return result

    def _resume_from(self, tp: TP) -> int:
        persisted = self._persisted_offset(tp)
        return 0 if persisted is None else persisted + 1

    def _apply_records(self, tp: TP, records: list[Any]) -> None:
        if not records:
            return
        batch = _write_batch(self.use_rocksdict)
        for rec in records:
            if rec.value is None:
                batch.delete(rec.key)
            else:
                batch.put(rec.key, rec.value)
        batch.put(self.offset_key, str(records[-1].offset).encode())
        self._db_for_partition(tp.partition).write(batch)


def _write_batch(rocksdict: bool) -> Any:
    """An empty write batch of the binding faust chose (rocksdict, else python-rocksdb)."""
    if rocksdict:
        from rocksdict import WriteBatch

        return WriteBatch(raw_mode=True)
    import rocksdb as python_rocksdb  # type: ignore[import-not-found]

    return python_rocksdb.WriteBatch()


class BulkRestoreTable(Table[Any, Any]):
    """A faust Table whose ``memory://`` or ``rocksdb://`` store restores in bulk."""

    def _new_store_by_url(self, url: Any) -> Any:
        scheme = str(url).split(":", 1)[0]
        store: type[Any] | None = {
            "memory": BulkRestoreStore,
            "rocksdb": BulkRestoreRocksStore,
        }.get(scheme)
        if store is None:
            return super()._new_store_by_url(url)
        return store(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )
