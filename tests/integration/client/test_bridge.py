"""ProviderBridge and ResultExporter against the real broker (and the shared worker)."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from databite_stream.bridge import ProviderBridge, ResultExporter
from databite_stream.client import DatabiteClient
from databite_stream.models import ExecutionResult
from databite_stream.topics import CONNECTIONS, INTEGRATIONS
from tests.helpers import unique_name, wait_for
from tests.integration.client.conftest import connection, end_offset, integration
from tests.integration.stream.harness import Cluster

pytestmark = pytest.mark.broker


class Provider:
    """A legacy ``data_provider``: returns a copy of ``data``, or raises ``error``."""

    def __init__(self, data: dict[str, list[Any]]) -> None:
        self.data = data
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> dict[str, list[Any]]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return copy.deepcopy(self.data)


async def test_bridge_publishes_upserts_updates_and_tombstones_only_on_change(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cluster = Cluster(kafka_bootstrap, tmp_path)  # no worker needed: the bridge only publishes
    await cluster.create_topics()

    async def offsets() -> tuple[int, int]:
        return (
            await end_offset(kafka_bootstrap, cluster.topic(INTEGRATIONS)),
            await end_offset(kafka_bootstrap, cluster.topic(CONNECTIONS)),
        )

    # the reference engine's shapes: camelCase dicts, a connection without connectorId
    reference_connection = {
        "id": "conn-1",
        "integrationId": "int-1",
        "config": {"api_key": "k-1"},
        "syncInterval": 60,
        "activeSyncs": ["records"],
    }
    provider = Provider(
        {
            "integrations": [{"id": "int-1", "name": "Echo", "connectorId": "echo", "config": {}}],
            "connections": [reference_connection],
        }
    )
    async with DatabiteClient(cluster.settings) as client:
        bridge = ProviderBridge(client, provider, refresh_interval=60)

        first = await bridge.run_once()
        assert (first.upserted, first.deleted, first.unchanged, first.invalid) == (2, 0, 0, 0)
        assert await offsets() == (1, 1)
        conn = client.get_connection("conn-1")
        assert conn is not None
        assert conn.connector_id == "echo"
        assert conn.sync_interval == 60

        again = await bridge.run_once()  # nothing changed: nothing published
        assert (again.upserted, again.deleted, again.unchanged, again.invalid) == (0, 0, 2, 0)
        assert await offsets() == (1, 1)

        reference_connection["config"] = {"api_key": "k-2"}  # an update
        provider.data["connections"].append(connection("conn-2", "int-1"))  # a model, new
        provider.data["connections"].append(  # invalid: skipped, listed, not published
            {"id": "conn-bad", "integrationId": "int-1", "config": {"api_key": ""}}
        )
        updated = await bridge.run_once()
        assert (updated.upserted, updated.deleted, updated.unchanged) == (2, 0, 1)
        assert updated.invalid == 1
        assert updated.skipped[0].id == "conn-bad"
        assert "config.api_key" in updated.skipped[0].reason
        assert await offsets() == (1, 3)
        assert client.get_connection("conn-1").config == {"api_key": "k-2"}  # type: ignore[union-attr]
        assert client.get_connection("conn-bad") is None

        provider.error = ConnectionError("database down")  # logged, retried, nothing published
        failed = await bridge.run_once()
        assert failed.error is not None
        assert "database down" in failed.error
        provider.error = None
        provider.data.pop("integrations")  # a missing list is an error, not "delete all"
        broken = await bridge.run_once()
        assert broken.error is not None
        assert "'integrations'" in broken.error
        assert await offsets() == (1, 3)
        provider.data["integrations"] = [integration("int-1")]

        provider.data["connections"] = [connection("conn-2", "int-1")]  # conn-1 disappeared
        removed = await bridge.run_once()
        assert (removed.upserted, removed.deleted, removed.unchanged) == (0, 1, 2)
        assert await offsets() == (1, 4)
        assert client.get_connection("conn-1") is None

        provider.data = {"integrations": [], "connections": []}  # connections go first
        emptied = await bridge.run_once()
        assert (emptied.deleted, emptied.invalid) == (2, 0), emptied.skipped
        assert await offsets() == (2, 5)
        assert client.get_connections() == []
        assert client.get_integrations() == []

        # the background loop: a failing provider is retried on the next interval
        provider.data = {"integrations": [integration("int-9")], "connections": []}
        provider.error = RuntimeError("flaky")
        loop = ProviderBridge(client, provider, refresh_interval=0.1)
        async with loop:
            await wait_for(lambda: provider.calls >= 10, timeout=10, what="retries")
            provider.error = None
            await wait_for(
                lambda: client.get_integration("int-9") is not None,
                timeout=10,
                what="the next cycle to publish",
            )
        assert await offsets() == (3, 5)


async def test_result_exporter_calls_the_exporter_once_per_result(
    cluster: Cluster, client: DatabiteClient, ids: str
) -> None:
    iid, cids = f"{ids}-int", [f"{ids}-a", f"{ids}-b"]
    await client.add_integration(integration(iid))
    for cid in cids:
        await client.add_connection(connection(cid, iid))
    first = [await client.execute_sync(cid, "records", timeout=60) for cid in cids]
    on_topic = {r.run_id for r in await cluster.results()}
    assert {r.run_id for r in first} <= on_topic

    calls: list[str] = []
    exported: list[ExecutionResult] = []
    fail_once = {first[0].run_id}

    async def exporter(result: ExecutionResult) -> None:
        calls.append(result.run_id)
        if result.run_id in fail_once:  # the first call fails: retried, not skipped
            fail_once.discard(result.run_id)
            raise RuntimeError("warehouse unavailable")
        exported.append(result)

    group = unique_name("exporter")
    async with ResultExporter(cluster.settings, exporter, group) as running:
        await wait_for(
            lambda: {r.run_id for r in exported} >= on_topic, timeout=30, what="the backlog"
        )
        live = await client.execute_sync(cids[1], "records", timeout=60)
        await wait_for(lambda: live.run_id in calls, timeout=30, what="the live result")
        assert running.failures == 1
    counts = Counter(calls)
    assert counts[first[0].run_id] == 2  # the failed call and its retry
    assert all(n == 1 for run, n in counts.items() if run != first[0].run_id), counts
    assert set(counts) == on_topic | {live.run_id}

    # same group again: the committed results are not exported twice
    again: list[str] = []

    async def record(result: ExecutionResult) -> None:
        again.append(result.run_id)

    async with ResultExporter(cluster.settings, record, group):
        newest = await client.execute_sync(cids[0], "records", timeout=60)
        await wait_for(lambda: newest.run_id in again, timeout=30, what="the newest result")
    assert again == [newest.run_id]
    for cid in cids:
        await client.remove_connection(cid)
    await client.remove_integration(iid)
