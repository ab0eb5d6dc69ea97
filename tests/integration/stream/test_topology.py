"""The stream topology end to end: real workers, real broker, the offline echo connector."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from databite_stream.models import Connection, Integration
from databite_stream.topics import RECORDS
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = pytest.mark.broker

SECRET = "sk-live-PLANTED-0123456789"


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path)
    yield c
    c.stop_all()


def echo_integration(iid: str = "int-1") -> Integration:
    return Integration(id=iid, name="Echo", connector_id="echo", config={})


def echo_connection(cid: str, schedule: str, **extra: object) -> Connection:
    return Connection(
        id=cid,
        integration_id="int-1",
        connector_id="echo",
        config={"api_key": SECRET, "record_count": 5, "batch_size": 2},
        schedules={"records": schedule},
        **extra,  # type: ignore[arg-type]
    )


async def test_interval_sync_runs_on_the_grid_and_exports_records(cluster: Cluster) -> None:
    await cluster.create_topics()
    worker = cluster.start_worker()
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("c1", "2s"))

    async def three_results() -> bool:
        assert worker.poll() is None, cluster.log()
        return len(await cluster.results()) >= 4

    await wait_for(three_results, timeout=60, interval=0.5, what="4 results of a 2s sync")
    results = sorted(await cluster.results(), key=lambda r: r.scheduled_for_ms or 0)
    assert all(r.success for r in results), [r.error for r in results]
    scheduled = [r.scheduled_for_ms or 0 for r in results]
    gaps = [b - a for a, b in zip(scheduled[1:], scheduled[2:], strict=False)]
    assert gaps and all(g == 2000 for g in gaps), scheduled  # fixed-rate grid after the first
    assert len({r.run_id for r in results}) == len(results)
    records = await cluster.read(RECORDS)
    keys = Counter(r.key for r in records)
    assert len(keys) == 5  # rec-0..rec-4, incremental after the first run
    assert all(SECRET.encode() not in (r.value or b"") for r in records)
