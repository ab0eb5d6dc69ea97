"""Broker trouble on clusters of the tests' own: a 3-node quorum losing (then regaining) a node
with replication factor 3 everywhere, and a single broker stopped for ~20 s. Workers recover by
themselves; every grid time of every job still has a result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from databite_stream.admin import create_topics
from databite_stream.devkafka import KafkaCluster
from databite_stream.settings import Settings
from tests.faults.load import Load
from tests.faults.support import (
    STRICT_POLICY,
    duplicates_outside,
    now_ms,
    recovery_seconds,
    scan_for_secrets,
    summary,
)
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(280)]

EVERY_S = 3
DUP_WINDOW_MS = 3000


@pytest.fixture
def own_kafka(request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    nodes: int = request.param
    cluster = KafkaCluster(nodes=nodes, heap="384m").start(timeout=120)
    try:
        yield cluster
    finally:
        cluster.stop(grace=10)


async def _prepare(kafka: KafkaCluster, tmp: Path, rf: int) -> Cluster:
    env = {**STRICT_POLICY, "DATABITE_REPLICATION_FACTOR": str(rf)}
    cluster = Cluster(kafka.bootstrap, tmp, partitions=4, extra_env=env)
    settings = Settings(
        broker=kafka.bootstrap,
        app_id=cluster.prefix,
        topic_prefix=cluster.prefix,
        partitions=cluster.partitions,
        replication_factor=rf,
    )

    async def created() -> bool:
        # a fresh 3-node cluster may answer describe_configs before every node has the
        # topic (empty configs): ask again until the check is clean
        _created, problems = await create_topics(settings)
        return not problems

    await wait_for(created, timeout=60, interval=1.0, what="topics created and checked")
    return cluster


async def _replication(bootstrap: str, prefix: str) -> dict[str, int]:
    """Smallest replica count of each topic of the deployment (changelogs included)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {d["topic"]: min(len(p["replicas"]) for p in d["partitions"]) for d in described}


def _assert_no_loss(load: Load, acc: object, faults: tuple[int, ...]) -> list[str]:
    from tests.faults.support import Accounting

    assert isinstance(acc, Accounting)
    assert not acc.silent, acc.silent[:10]
    assert not acc.lost, f"{len(acc.lost)} grid times without a result: {acc.lost[:10]}"
    assert not acc.off_grid, acc.off_grid[:10]
    unexplained = duplicates_outside(load.results(), acc.duplicates, faults, DUP_WINDOW_MS)
    assert not unexplained, f"duplicates outside the fault windows: {unexplained[:10]}"
    return unexplained


@pytest.mark.parametrize("own_kafka", [3], indirect=True)
async def test_three_brokers_lose_one_and_get_it_back(
    own_kafka: KafkaCluster, tmp_path: Path
) -> None:
    cluster = await _prepare(own_kafka, tmp_path, rf=3)
    load = await Load(cluster, 90, EVERY_S).start()
    try:
        cluster.start_worker("w1")
        cluster.start_worker("w2")
        await load.publish()
        await load.wait_all_running(runs=2, timeout=120, what="running on the 3-node cluster")
        rf = await _replication(own_kafka.bootstrap, cluster.prefix)
        assert rf, "no topics"
        assert min(rf.values()) == 3, rf  # inputs, exports, internals and changelogs

        # kill -9 a broker (and controller voter); devkafka blocks, so off the event loop
        await asyncio.to_thread(own_kafka.stop_node, 1, hard=True)
        down = now_ms()
        await load.wait_all_running(after_ms=down, runs=2, timeout=90, what="running on 2 nodes")
        rec_down = recovery_seconds(load.results(), load.ids, down)
        await asyncio.to_thread(own_kafka.restart_node, 1)
        up = now_ms()
        await load.wait_all_running(after_ms=up, runs=2, timeout=90, what="running on 3 again")
        rec_up = recovery_seconds(load.results(), load.ids, up)
        assert all(w.poll() is None for w in cluster.workers), "a worker died"
        acc, _ = await load.settle_and_account(timeout=90)
        summary(
            "broker_3_nodes_kill_restart",
            schedules=90,
            interval_s=EVERY_S,
            topics_rf=f"{min(rf.values())}x{len(rf)}",
            expected_runs=acc.expected,
            results=acc.seen,
            duplicates=len(acc.duplicates),
            lost=len(acc.lost),
            failed=acc.failed,
            max_late_s=f"{acc.max_late_s:.1f}",
            recovery_broker_down_s=f"{rec_down:.1f}",
            recovery_broker_back_s=f"{rec_up:.1f}",
        )
        _assert_no_loss(load, acc, (down, up))
        scan = await scan_for_secrets(
            "broker_3_nodes",
            own_kafka.bootstrap,
            [cluster.prefix],
            [load.secret],
            log_dir=tmp_path,
        )
        assert not scan.hits, scan.hits
    finally:
        await load.stop()
        cluster.stop_all()


@pytest.mark.parametrize("own_kafka", [1], indirect=True)
async def test_single_broker_down_20s(own_kafka: KafkaCluster, tmp_path: Path) -> None:
    cluster = await _prepare(own_kafka, tmp_path, rf=1)
    load = await Load(cluster, 120, EVERY_S).start()
    try:
        cluster.start_worker("w1")
        cluster.start_worker("w2")
        await load.publish()
        await load.wait_all_running(runs=2, timeout=120, what="running before the outage")
        await asyncio.to_thread(own_kafka.stop_node, 1)
        down = now_ms()
        # the outage lasts 20 s: this waits for the clock, it synchronizes nothing
        await wait_for(lambda: now_ms() - down >= 20_000, timeout=30, what="20 s of outage")
        await asyncio.to_thread(own_kafka.restart_node, 1)
        up = now_ms()
        t0 = time.monotonic()
        await load.wait_all_running(after_ms=up, runs=2, timeout=120, what="running after it")
        rec_up = recovery_seconds(load.results(), load.ids, up)
        alive = [w.poll() is None for w in cluster.workers]
        acc, _ = await load.settle_and_account(timeout=90)
        summary(
            "broker_single_down_20s",
            schedules=120,
            interval_s=EVERY_S,
            outage_s=f"{(up - down) / 1e3:.1f}",
            expected_runs=acc.expected,
            results=acc.seen,
            duplicates=len(acc.duplicates),
            lost=len(acc.lost),
            failed=acc.failed,
            max_late_s=f"{acc.max_late_s:.1f}",
            recovery_after_restart_s=f"{rec_up:.1f}",
            waited_s=f"{time.monotonic() - t0:.1f}",
            workers_alive=sum(alive),
        )
        assert all(alive), "a worker died during the outage"
        _assert_no_loss(load, acc, (down, up))
        scan = await scan_for_secrets(
            "broker_single",
            own_kafka.bootstrap,
            [cluster.prefix],
            [load.secret],
            log_dir=tmp_path,
        )
        assert not scan.hits, scan.hits
    finally:
        await load.stop()
        cluster.stop_all()
