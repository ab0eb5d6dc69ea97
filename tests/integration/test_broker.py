"""Foundation: the broker the test command starts is a real Kafka that does what we rely on."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from databite_stream.devkafka import BrokerError, KafkaCluster
from tests.helpers import consume_all, create_topic, produce, unique_name, wait_for, wait_for_sync

pytestmark = pytest.mark.broker


async def test_round_trip_in_consumer_group_keeps_per_key_order(kafka_bootstrap: str) -> None:
    topic, group = unique_name("roundtrip"), unique_name("group")
    await create_topic(kafka_bootstrap, topic, partitions=4)
    keys = [f"conn-{i}".encode() for i in range(20)]
    messages = [(keys[i % 20], f"{i // 20}".encode()) for i in range(2000)]
    assert await produce(kafka_bootstrap, topic, messages, linger_ms=5) == 2000

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: dict[bytes, list[int]] = collections.defaultdict(list)
    partition_of: dict[bytes, set[int]] = collections.defaultdict(set)
    try:

        async def all_read() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                for m in msgs:
                    assert m.key is not None
                    assert m.value is not None
                    seen[m.key].append(int(m.value))
                    partition_of[m.key].add(tp.partition)
            return sum(len(v) for v in seen.values()) >= 2000

        await wait_for(all_read, timeout=30, what="2000 messages")
        await consumer.commit()
        parts = [TopicPartition(topic, p) for p in range(4)]
        end = await consumer.end_offsets(parts)
        for tp in parts:
            assert await consumer.committed(tp) == end[tp]
    finally:
        await consumer.stop()

    assert sorted(seen) == sorted(keys)
    for key in keys:
        assert seen[key] == list(range(100)), f"order or completeness broken for {key!r}"
        assert len(partition_of[key]) == 1, "one key must live in one partition"


async def test_compacted_topic_keeps_only_latest_values(kafka_bootstrap: str) -> None:
    topic = unique_name("compacted")
    await create_topic(
        kafka_bootstrap,
        topic,
        config={
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",
            "min.compaction.lag.ms": "0",
            "max.compaction.lag.ms": "1000",
        },
    )
    writes: list[tuple[bytes | None, bytes | None]] = []
    for version in range(5):
        writes += [(f"k{i}".encode(), f"v{version}".encode()) for i in range(10)]
    writes.append((b"k3", None))  # tombstone: k3 is deleted
    await produce(kafka_bootstrap, topic, writes)

    async def compacted() -> bool:
        # the active segment is never cleaned: a filler write rolls it once segment.ms passed
        await produce(kafka_bootstrap, topic, [(b"filler", b"x")])
        records = await consume_all(kafka_bootstrap, [topic])
        per_key = collections.Counter(r.key for r in records if r.key != b"filler")
        return len(records) > 0 and all(n == 1 for n in per_key.values()) and b"k0" in per_key

    await wait_for(compacted, timeout=90, interval=0.5, what="the log cleaner to compact")
    latest = {
        r.key: r.value for r in await consume_all(kafka_bootstrap, [topic]) if r.key != b"filler"
    }
    expected: dict[bytes | None, bytes | None] = {f"k{i}".encode(): b"v4" for i in range(10)}
    # the tombstone is either still there (None) or already removed
    if b"k3" in latest:
        expected[b"k3"] = None
    else:
        del expected[b"k3"]
    assert latest == expected


def _start_counter_worker(
    bootstrap: str, app_id: str, topic: str, tmp: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "COUNTER_BROKER": bootstrap,
        "COUNTER_APP_ID": app_id,
        "COUNTER_TOPIC": topic,
        "COUNTER_DUMP": str(tmp / "dump.json"),
        "COUNTER_DATADIR": str(tmp / "data"),
    }
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.apps.counter_app",
            "worker",
            "-l",
            "warn",
            "--without-web",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).parents[2],
    )


def _table_dumped(worker: subprocess.Popen[bytes], path: Path, log: Path) -> dict[str, int]:
    if worker.poll() is not None:
        raise AssertionError(f"worker exited ({worker.returncode}):\n{log.read_text()[-3000:]}")
    return _read_dump(path)


def _read_dump(path: Path) -> dict[str, int]:
    try:
        data: dict[str, int] = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return data


async def test_faust_table_is_recovered_from_changelog_after_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    app_id, topic = unique_name("counter"), unique_name("counter-in")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    expected = {f"c{i}": sum(range(i + 1)) for i in range(8)}
    await produce(
        kafka_bootstrap,
        topic,
        [(f"c{i}".encode(), str(j).encode()) for i in range(8) for j in range(i + 1)],
    )
    dump, log = tmp_path / "dump.json", tmp_path / "worker.log"
    worker = _start_counter_worker(kafka_bootstrap, app_id, topic, tmp_path)
    try:
        wait_for_sync(
            lambda: _table_dumped(worker, dump, log) == expected,
            timeout=90,
            what="first worker's table",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    dump.unlink()
    # a fresh worker with a wiped local datadir: only the changelog can restore the table
    (tmp_path / "data").rename(tmp_path / "data-old")
    worker = _start_counter_worker(kafka_bootstrap, app_id, topic, tmp_path)
    try:
        wait_for_sync(lambda: bool(_table_dumped(worker, dump, log)), timeout=90, what="recovery")
        assert _read_dump(dump) == expected
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_a_broker_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    # a heap too small for the JVM: the broker process exits at once
    cluster = KafkaCluster(nodes=1, heap="2m", run_dir=str(tmp_path / "run"))
    with pytest.raises(BrokerError, match=r"(exited during start-up|did not become ready)") as err:
        cluster.start(timeout=60)
    assert "last log lines" in str(err.value)
    assert not any(m.alive() for m in cluster.members)
