"""Helpers shared by the integration tests: unique names, Kafka produce/consume, deadlines.

No bare sleeps: every wait is ``wait_for(condition, timeout=...)``, which polls a condition and
fails with a description of what was awaited.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = (
    "consume_all",
    "create_topic",
    "produce",
    "unique_name",
    "wait_for",
    "wait_for_sync",
)


def unique_name(prefix: str = "t") -> str:
    """A topic/group/app name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Blocking twin of :func:`wait_for`, for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


async def create_topic(
    bootstrap: str, name: str, *, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=config or {},
                )
            ]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    **producer_args: Any,
) -> int:
    """Send (key, value) pairs (``value=None`` is a tombstone) and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_args)
    await producer.start()
    sent = 0
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in messages]
        for fut in futures:
            await fut
            sent += 1
    finally:
        await producer.stop()
    return sent


async def consume_all(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool] | None = None,
    timeout: float = 30.0,
    group_id: str | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topics`` from the beginning up to their current end (or until ``until`` holds)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        if until is None:
            await wait_for(lambda: bool(consumer.assignment()), timeout=timeout, what="assignment")
            parts: list[TopicPartition] = list(consumer.assignment())
            end = await consumer.end_offsets(parts)
            pending = {tp for tp in parts if end[tp] > 0}
            while pending:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out reading {topics} to their end")
                batch = await consumer.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    records.extend(msgs)
                    if msgs and msgs[-1].offset + 1 >= end[tp]:
                        pending.discard(tp)
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
        else:
            while not until(records):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"timed out after {timeout:.1f}s; read {len(records)} records from {topics}"
                    )
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    records.extend(msgs)
    finally:
        await consumer.stop()
    return records
