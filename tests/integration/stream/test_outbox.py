"""The outbox on a real broker: co-partitioning with keyed sends, order, combined messages."""

from __future__ import annotations

import asyncio
import collections

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from databite_stream.stream.outbox import Outbox, undrained
from tests.helpers import consume_all, create_topic, unique_name

pytestmark = pytest.mark.broker


async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    return producer


async def test_keyed_records_land_where_a_keyed_send_puts_them(kafka_bootstrap: str) -> None:
    topic = unique_name("outbox-parity")
    await create_topic(kafka_bootstrap, topic, partitions=8)
    producer = await _producer(kafka_bootstrap)
    try:
        outbox = Outbox(lambda: producer, lambda _t: 8, linger_s=0.002, max_records=50)
        keys = [f"conn-{i}".encode() for i in range(200)]
        rounds = {outbox.add(topic, key, b"outbox") for key in keys}  # several rounds (50)
        await asyncio.gather(*rounds)
        # the same keys through aiokafka's own partitioner
        sent = [await producer.send(topic, b"send", key=key) for key in keys]
        placed = {key: (await fut).partition for key, fut in zip(keys, sent, strict=True)}
    finally:
        await producer.stop()
    records = await consume_all(kafka_bootstrap, [topic])
    by_outbox = {r.key: r.partition for r in records if r.value == b"outbox"}
    assert len(by_outbox) == 200
    assert by_outbox == placed
    assert len(set(placed.values())) > 1  # the keys really spread over partitions


async def test_rounds_keep_the_order_of_one_key(kafka_bootstrap: str) -> None:
    """A later row of a key must land after the earlier one (compacted changelogs keep the
    last): rounds are handed over in order even when their deliveries overlap."""
    topic = unique_name("outbox-order")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    producer = await _producer(kafka_bootstrap)
    try:
        outbox = Outbox(lambda: producer, lambda _t: 2, linger_s=0.001, max_records=7)
        futures = []
        for version in range(300):
            futures.append(outbox.add(topic, b"job-1", str(version).encode()))
            futures.append(outbox.add(topic, b"job-2", str(version).encode()))
            if version % 10 == 0:
                await asyncio.sleep(0)  # let some rounds go while others fill
        await asyncio.gather(*futures)
        await outbox.flush()
    finally:
        await producer.stop()
    records = await consume_all(kafka_bootstrap, [topic])
    versions: dict[bytes, list[int]] = collections.defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        versions[record.key].append(int(record.value or b"-1"))
    assert versions[b"job-1"] == list(range(300))
    assert versions[b"job-2"] == list(range(300))


async def test_combined_items_become_few_messages(kafka_bootstrap: str) -> None:
    topic = unique_name("outbox-combined")
    await create_topic(kafka_bootstrap, topic, partitions=1)
    producer = await _producer(kafka_bootstrap)

    def combine(items: list[bytes]) -> list[bytes]:
        return [b"[" + b",".join(items[i : i + 40]) + b"]" for i in range(0, len(items), 40)]

    try:
        outbox = Outbox(lambda: producer, lambda _t: 1, linger_s=0.01)
        done = [outbox.add_combined(topic, 0, str(i).encode(), combine) for i in range(100)]
        await asyncio.gather(*done)
    finally:
        await producer.stop()
    records = await consume_all(kafka_bootstrap, [topic])
    assert [orjson.loads(r.value or b"") for r in records] == [
        list(range(0, 40)),
        list(range(40, 80)),
        list(range(80, 100)),
    ]
    assert all(r.key is None for r in records)


async def test_a_failed_round_fails_its_callers(kafka_bootstrap: str) -> None:
    topic = unique_name("outbox-missing")
    await create_topic(kafka_bootstrap, topic, partitions=1)  # so partition 5 does not exist
    producer = await _producer(kafka_bootstrap)
    try:
        outbox = Outbox(lambda: producer, lambda _t: 1, linger_s=0.001)
        with pytest.raises(Exception, match=r"(?i)partition"):
            await asyncio.wait_for(outbox.add(topic, None, b"x", partition=5), timeout=30)
        # the outbox keeps working after a failed round
        await asyncio.wait_for(outbox.add(topic, None, b"y", partition=0), timeout=30)
    finally:
        await producer.stop()


async def test_submit_hands_a_round_over_without_its_linger(kafka_bootstrap: str) -> None:
    """What an auto-acked agent relies on: after ``submit`` the records are in the producer
    (a producer flush, as faust runs before a commit, delivers them) though the linger is
    far away."""
    topic = unique_name("outbox-submit")
    await create_topic(kafka_bootstrap, topic, partitions=1)
    producer = await _producer(kafka_bootstrap)
    try:
        outbox = Outbox(lambda: producer, lambda _t: 1, linger_s=3600)
        round_ = outbox.add(topic, b"k", b"v1")
        outbox.add(topic, b"k", b"v2")
        assert await outbox.submit() is round_
        assert await outbox.submit() is None  # nothing left
        await asyncio.wait_for(producer.flush(), timeout=30)
        await asyncio.wait_for(round_, timeout=5)  # acknowledged, not failed
    finally:
        await producer.stop()
    records = await consume_all(kafka_bootstrap, [topic])
    assert [r.value for r in records] == [b"v1", b"v2"]


async def test_undrained_sees_a_batch_aiokafka_has_not_sent_yet(kafka_bootstrap: str) -> None:
    """The outbox never hands a whole batch to a partition that still has an unsent one
    (``send_batch`` would wait for it): it reads aiokafka's accumulator, checked here so an
    upgrade that moves it fails loudly."""
    topic = unique_name("outbox-undrained")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    producer = await _producer(kafka_bootstrap)
    try:
        assert not undrained(producer, topic, 0)
        ack = await producer.send(topic, b"v", key=b"k", partition=0)  # queued, not yet sent
        assert undrained(producer, topic, 0)
        assert not undrained(producer, topic, 1)
        await ack
        assert not undrained(producer, topic, 0)
    finally:
        await producer.stop()
