"""A live, in-memory view of a compacted topic, with read-your-writes and catch-up waits.

Owns :class:`CompactedView`: a plain aiokafka consumer that is *not* in a consumer group (it
reads every partition of one topic from the beginning) and keeps ``key -> decoded value`` for
the latest message of each key; a ``None`` value (tombstone) removes the key. The client uses
one per compacted topic it reads (connections, integrations, the jobs changelog).

Invariants:

* ``ready`` is set once the view has consumed up to the end offsets taken at :meth:`start`,
  so a view that says it is ready never answers from an older catalog than existed then.
* :meth:`wait_for_offset` returns only once the message at that offset (or a later one) has
  been applied: after producing a message, waiting for its offset gives read-your-writes.
  :meth:`catch_up` does the same for the end offsets at call time (reads at least as fresh as
  the topic at that instant).
* A message that cannot be decoded is logged and skipped (the previous value of its key is
  kept); producers' dead letters are the workers' job, not a reader's.
* If the background reader dies, every waiter fails with :class:`ViewError` instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

__all__ = ("CompactedView", "ViewError", "wait_assignment")

log = logging.getLogger(__name__)

V = TypeVar("V")


class ViewError(RuntimeError):
    """The view could not start (topic missing, broker unreachable) or its reader failed."""


def _utf8_key(raw: bytes) -> str:
    return raw.decode("utf-8")


class CompactedView(Generic[V]):
    """``key -> value`` of the latest message per key of one compacted topic.

    Args:
        bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
        topic: the compacted topic to read (every partition, from the beginning).
        decode: ``(key, value bytes) -> V``; raise ``ValueError`` (pydantic's
            ``ValidationError`` is one) to skip a message as invalid.
        decode_key: turns a message key into the dict key (default: UTF-8). Messages without
            a key are skipped.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: Callable[[str, bytes], V],
        *,
        decode_key: Callable[[bytes], str] = _utf8_key,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._decode = decode
        self._decode_key = decode_key
        self.ready = asyncio.Event()
        self._items: dict[str, V] = {}
        #: next offset to apply, per partition (what has been consumed)
        self._position: dict[int, int] = {}
        self._changed = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> V | None:
        return self._items.get(key)

    def values(self) -> list[V]:
        return list(self._items.values())

    def items(self) -> list[tuple[str, V]]:
        return list(self._items.items())

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Start reading; return once caught up to the end offsets taken now."""
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,  # no group: every partition is assigned to this consumer
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        try:
            tps = await wait_assignment(self._consumer, self.topic, timeout)
            end = await self._consumer.end_offsets(tps)
            await self._consumer.seek_to_beginning(*tps)
            for tp in tps:
                self._position[tp.partition] = 0
            self._task = asyncio.create_task(self._run(), name=f"view:{self.topic}")
            await self._wait(
                lambda: all(self._position.get(tp.partition, 0) >= end[tp] for tp in tps),
                timeout,
                f"catching up with {self.topic}",
            )
        except BaseException:
            await self.stop()
            raise
        self.ready.set()
        log.debug("view of %s ready: %d keys", self.topic, len(self._items))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    # -- freshness ---------------------------------------------------------------------------

    async def wait_for_offset(self, partition: int, offset: int, timeout: float) -> None:
        """Return once the message at ``partition``/``offset`` has been applied."""
        await self._wait(
            lambda: self._position.get(partition, 0) > offset,
            timeout,
            f"{self.topic}[{partition}] to reach offset {offset}",
        )

    async def catch_up(self, timeout: float) -> None:
        """Return once everything on the topic now has been applied."""
        consumer = self._require_consumer()
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        await self._wait(
            lambda: all(self._position.get(tp.partition, 0) >= end[tp] for tp in tps),
            timeout,
            f"{self.topic} to reach its end offsets",
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds after some applied change; False on timeout."""
        try:
            await self._wait(predicate, timeout, "a condition")
        except TimeoutError:
            return False
        return True

    # -- internals ---------------------------------------------------------------------------

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ViewError(f"the view of {self.topic} is not started")
        return self._consumer

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            return self._failure is not None or predicate()

        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(done)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}") from None
        if self._failure is not None:
            raise ViewError(f"the reader of {self.topic} failed: {self._failure!r}")

    async def _run(self) -> None:
        consumer = self._require_consumer()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                for tp in consumer.assignment():
                    # the position also moves past offsets compaction removed
                    self._position[tp.partition] = await consumer.position(tp)
                async with self._changed:
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reader of %s failed", self.topic)
            self._failure = exc
            async with self._changed:
                self._changed.notify_all()

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            log.warning("%s[%d]@%d: message without a key, skipped", *_where(record))
            return
        try:
            key = self._decode_key(record.key)
        except ValueError as exc:
            log.warning("%s[%d]@%d: undecodable key (%s), skipped", *_where(record), exc)
            return
        if record.value is None:
            self._items.pop(key, None)
            return
        try:
            value = self._decode(key, record.value)
        except ValueError as exc:
            log.warning("%s[%d]@%d: invalid value for %r, skipped: %s", *_where(record), key, exc)
            return
        self._items[key] = value


def _where(record: ConsumerRecord[bytes, bytes]) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


async def wait_assignment(
    consumer: AIOKafkaConsumer, topic: str, timeout: float
) -> list[TopicPartition]:
    """The partitions a no-group consumer assigned itself (once metadata has arrived)."""
    deadline = time.monotonic() + timeout
    while not consumer.assignment():  # aiokafka has no assignment event to await
        if time.monotonic() > deadline:
            raise ViewError(
                f"no partitions of {topic!r} after {timeout:.0f}s: does the topic exist? "
                "(run `databite-stream topics create` or start a worker)"
            )
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())
