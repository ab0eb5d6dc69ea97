"""Batched publishing for the hot path: many small records, one Kafka batch per partition.

A due wave moves three records per run (the result, the ``runs-done`` marker, the job row) and
faust's ``Topic.send`` costs ~20 µs of Python per record before aiokafka even sees it. The
outbox collects records for a short linger, groups them per topic partition into aiokafka
record batches (``AIOKafkaProducer.create_batch``/``send_batch``, the library's own batch
API) and hands each group over at once; every caller of one round awaits the same future,
resolved when all its batches are acknowledged.

Partitioning is that of aiokafka's ``DefaultPartitioner`` (murmur2 of the key, as faust's
producer and the Java client do), so a record keyed here lands where a keyed ``topic.send``
would have put it: co-partitioning is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka.structs import TopicPartition
from murmurhash2 import murmurhash2

__all__ = ("Outbox", "partition_for")

log = logging.getLogger(__name__)

SMALL_GROUP = 16  # fewer records of one partition are sent one by one, not as a batch
Combine = Callable[[list[bytes]], list[bytes]]
Pending = dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]


def undrained(producer: Any, topic: str, partition: int) -> bool:
    """Whether aiokafka still holds an unsent batch for this partition: ``send_batch`` then
    waits until that batch is sent, i.e. for the request in flight to the broker (aiokafka
    keeps one per broker), while records given to ``send`` join the open batch at once."""
    batches = producer._message_accumulator._batches.get(TopicPartition(topic, partition))
    return bool(batches)


#: the seed of the Java client's murmur2 (``Utils.murmur2``), which aiokafka's copy keeps
MURMUR2_SEED = 0x9747B28C


def partition_for(key: bytes, partitions: int) -> int:
    """The partition aiokafka's default partitioner (and the Java client) picks for ``key``."""
    # the same hash as aiokafka.partitioner.murmur2, in C: aiokafka's is pure Python (2.5-5 µs
    # a key, ~0.15 µs here), which a cache hid only for keys seen before, so every run after a
    # start or rebalance paid it, and every run of a deployment with more keys than the cache
    return (murmurhash2(key, MURMUR2_SEED) & 0x7FFFFFFF) % partitions


class Outbox:
    """Collects records for ``linger_s`` (or ``max_records``) and publishes them in batches.

    ``producer`` returns the started aiokafka producer (faust's, so one connection pool);
    ``partitions`` returns the partition count of a topic (all of ours are created with the
    same count; the outbox asks so it never guesses).
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        partitions: Callable[[str], int],
        *,
        linger_s: float = 0.010,
        max_records: int = 4096,
    ) -> None:
        self.producer = producer
        self.partitions = partitions
        self.linger_s = linger_s
        self.max_records = max_records
        self._pending: Pending = {}
        #: items joined into as few messages as possible per (topic, partition) at publish
        self._combined: dict[tuple[str, int], tuple[Combine, list[bytes]]] = {}
        self._count = 0
        self._round: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._submit = asyncio.Lock()

    def partition(self, topic: str, key: bytes) -> int:
        return partition_for(key, self.partitions(topic))

    def add(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """Queue one record; the future resolves once Kafka has acknowledged it (and the rest
        of its round), or fails with the send's error."""
        if partition is None:
            if key is None:
                raise ValueError(f"{topic}: a record without a key needs a partition")
            partition = self.partition(topic, key)
        self._pending.setdefault((topic, partition), []).append((key, value))
        return self._queued()

    def add_combined(
        self, topic: str, partition: int, item: bytes, combine: Combine
    ) -> asyncio.Future[None]:
        """Queue ``item`` to be joined with the other items of this round for the same topic
        partition: ``combine(items)`` returns the message values (keyless) to publish."""
        entry = self._combined.get((topic, partition))
        if entry is None:
            entry = self._combined[(topic, partition)] = (combine, [])
        entry[1].append(item)
        return self._queued()

    def _queued(self) -> asyncio.Future[None]:
        self._count += 1
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        round_ = self._round
        if self._count >= self.max_records:
            self._track(self._publish(*self._take()))  # full: this round goes now
        elif self._flusher is None:
            self._flusher = asyncio.create_task(self._linger())
        return round_

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that :meth:`flush` waits for."""
        task = asyncio.create_task(work)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _linger(self) -> None:
        await asyncio.sleep(self.linger_s)
        self._flusher = None
        if self._count:
            self._track(self._publish(*self._take()))

    async def flush(self) -> None:
        """Publish what is queued now and wait for every round in flight."""
        if self._count:
            self._track(self._publish(*self._take()))
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def _take(self) -> tuple[Pending, asyncio.Future[None] | None]:
        """This round's records (combined items turned into messages) and its future."""
        pending, combined, round_ = self._pending, self._combined, self._round
        self._pending, self._combined, self._round, self._count = {}, {}, None, 0
        for tp, (combine, items) in combined.items():
            pending.setdefault(tp, []).extend((None, value) for value in combine(items))
        return pending, round_

    async def submit(self) -> asyncio.Future[None] | None:
        """Hand what is queued to the producer now, without waiting for acknowledgements;
        return that round's future (None when nothing was queued). An auto-acked agent
        calls this at the end of each event: faust flushes the producer before it commits
        an offset, so the records are in Kafka before the offset of the event that wrote
        them can be committed, and no event waits for a round trip."""
        if not self._count:
            return None
        pending, round_ = self._take()
        acks = await self._hand_over(pending, round_)
        if acks is not None:
            self._track(self._confirm(acks, pending, round_))
        return round_

    async def _publish(self, pending: Pending, round_: asyncio.Future[None] | None) -> None:
        acks = await self._hand_over(pending, round_)
        if acks is not None:
            await self._confirm(acks, pending, round_)

    async def _hand_over(
        self, pending: Pending, round_: asyncio.Future[None] | None
    ) -> list[asyncio.Future[Any]] | None:
        """Give the records to the producer; their acknowledgements (None: failed)."""
        acks: list[asyncio.Future[Any]] = []
        try:
            # rounds are handed over in order (a later row of one key must land last in a
            # compacted changelog); only the wait for acknowledgements overlaps
            async with self._submit:
                producer = self.producer()
                for (topic, part), records in pending.items():
                    if len(records) < SMALL_GROUP or undrained(producer, topic, part):
                        # a whole batch would wait for the partition's previous batch to
                        # drain (a round trip, ~30 ms on a busy worker, with every other
                        # round waiting behind it: the scheduler handled ~35 events/s that
                        # way); a few records, or any behind an unsent batch, join the
                        # producer's open batch instead
                        for key, value in records:
                            acks.append(await producer.send(topic, value, key=key, partition=part))
                        continue
                    batch = producer.create_batch()
                    for key, value in records:
                        if batch.append(timestamp=None, key=key, value=value) is None:
                            acks.append(await producer.send_batch(batch, topic, partition=part))
                            batch = producer.create_batch()
                            if batch.append(timestamp=None, key=key, value=value) is None:
                                raise ValueError(f"{topic}: a record larger than a whole batch")
                    acks.append(await producer.send_batch(batch, topic, partition=part))
        except Exception as exc:
            self._fail(round_, pending, exc)
            return None
        return acks

    async def _confirm(
        self,
        acks: list[asyncio.Future[Any]],
        pending: Pending,
        round_: asyncio.Future[None] | None,
    ) -> None:
        try:
            await asyncio.gather(*acks)
        except Exception as exc:
            self._fail(round_, pending, exc)
        else:
            if round_ is not None and not round_.done():
                round_.set_result(None)

    def _fail(self, round_: asyncio.Future[None] | None, pending: Pending, exc: Exception) -> None:
        if round_ is not None and not round_.done():
            round_.set_exception(exc)
            round_.exception()  # retrieved: callers that gave up must not log it again
        log.warning("outbox: publishing %d record(s) failed: %r", self._size(pending), exc)

    @staticmethod
    def _size(pending: Pending) -> int:
        return sum(len(v) for v in pending.values())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
