"""Fixtures of the client tests: one worker for the whole package, a fresh client per test.

The worker starts once (≈5 s) and is shared; tests keep apart by using their own ids
(:func:`ids`). ``DATABITE_FIRST_RUN=next_grid`` and hour-long schedules keep scheduled runs out
of the way, so a run-now is never skipped by the overlap policy of a scheduled run in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from databite_stream.client import DatabiteClient
from databite_stream.models import Connection, Integration
from tests.helpers import unique_name, wait_for
from tests.integration.stream.harness import Cluster


@pytest.fixture(scope="package")
def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("client-cluster"))
    asyncio.run(c.create_topics())
    c.start_worker(DATABITE_FIRST_RUN="next_grid")
    yield c
    c.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[DatabiteClient]:
    async with DatabiteClient(cluster.settings) as c:
        yield c


@pytest.fixture
def ids() -> str:
    """A prefix for this test's connection and integration ids."""
    return unique_name("t")


def integration(iid: str) -> Integration:
    return Integration(id=iid, name="Echo", connector_id="echo", config={})


def connection(cid: str, iid: str, *, records: int = 3, **fields: object) -> Connection:
    values: dict[str, object] = {
        "id": cid,
        "integration_id": iid,
        "connector_id": "echo",
        "config": {"api_key": "sk-test-0123", "record_count": records, "batch_size": 2},
        "sync_interval": "1h",
        **fields,
    }
    return Connection.model_validate(values)


async def end_offset(bootstrap: str, topic: str) -> int:
    """Messages ever written to ``topic`` (sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await wait_for(lambda: bool(consumer.assignment()), timeout=10, what=f"{topic} partitions")
        ends = await consumer.end_offsets(list(consumer.assignment()))
        return sum(ends.values())
    finally:
        await consumer.stop()
