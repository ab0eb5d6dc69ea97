"""The worker's Kafka consumer fetches with our fetch wait, not faust's fixed 1,500 ms, and
waits longer while idle without delaying a record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from databite_stream.settings import Settings
from databite_stream.stream.app import StreamApp
from databite_stream.stream.transport import pace_fetches
from tests.helpers import create_topic, produce, unique_name, wait_for

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("wait_ms", [None, 40])
async def test_the_started_consumer_fetches_with_the_configured_wait(
    kafka_bootstrap: str, tmp_path: Path, wait_ms: int | None
) -> None:
    env = {"DATABITE_BROKER": kafka_bootstrap, "DATABITE_DATA_DIR": str(tmp_path)}
    if wait_ms is not None:
        env["DATABITE_FETCH_MAX_WAIT_MS"] = str(wait_ms)
    settings = Settings.from_env(env)
    sa = StreamApp(settings)
    # the consumer a worker starts: built by faust's consumer thread through our transport
    thread = sa.app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(sa.app.transport)
    await consumer.start()  # aiokafka builds its fetcher here, from the constructor's value
    try:
        assert consumer._fetcher._fetch_max_wait_ms == settings.fetch_max_wait_ms
    finally:
        await consumer.stop()
    assert settings.fetch_max_wait_ms == (wait_ms or 100)


async def test_an_idle_fetch_waits_longer_yet_a_record_ends_it_at_once(
    kafka_bootstrap: str,
) -> None:
    """After an empty fetch the next one may wait the idle time, but the broker answers it as
    soon as a record arrives; while a fetched record waits to be consumed (its partition is
    left out of the fetches), the others are fetched with the short wait."""
    idle_ms = 5_000
    topic = unique_name("paced")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        fetcher = consumer._fetcher
        responses = 0
        handle = fetcher._proc_fetch_request

        async def counted(*args: object) -> bool:
            nonlocal responses
            try:
                return bool(await handle(*args))
            finally:
                responses += 1

        fetcher._proc_fetch_request = counted
        pace_fetches(fetcher, 100, idle_ms)
        await wait_for(
            lambda: fetcher._fetch_max_wait_ms == idle_ms, timeout=10, what="the idle wait"
        )
        started = time.monotonic()
        await produce(kafka_bootstrap, topic, [(b"k", b"first")])
        await wait_for(lambda: bool(fetcher._records), timeout=idle_ms / 1000, what="the record")
        assert time.monotonic() - started < idle_ms / 2000  # not after the idle wait
        seen = responses
        # the other partition's fetches come back empty, and quickly
        await wait_for(lambda: responses >= seen + 2, timeout=3, what="two more fetches")
        assert fetcher._fetch_max_wait_ms == 100
        batch = await consumer.getmany(timeout_ms=1000)
        assert [r.value for records in batch.values() for r in records] == [b"first"]
    finally:
        await consumer.stop()
