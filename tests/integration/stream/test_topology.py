"""The stream topology end to end: real workers, real broker, the offline echo connector."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from databite_stream.models import (
    ActionRequest,
    ActionResult,
    Connection,
    ExecutionResult,
    Integration,
)
from databite_stream.stream.outbox import partition_for
from databite_stream.stream.scheduler_agent import tick_lead_ms
from databite_stream.topics import (
    ACTION_REQUESTS,
    ACTION_RESULTS,
    COMMANDS,
    CONNECTIONS,
    DEADLETTER,
    INTEGRATIONS,
    RECORDS,
    WORK,
)
from databite_stream.wire import Command, DeadLetter, DueJobs
from tests.helpers import produce, wait_for
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
    gaps = [b - a for a, b in itertools.pairwise(scheduled[1:])]
    assert gaps, scheduled
    assert all(g == 2000 for g in gaps), scheduled  # fixed-rate grid after the first
    assert len({r.run_id for r in results}) == len(results)
    records = await cluster.read(RECORDS)
    keys = Counter(r.key for r in records)
    assert len(keys) == 5  # rec-0..rec-4, incremental after the first run
    assert all(SECRET.encode() not in (r.value or b"") for r in records)


async def _results_for(cluster: Cluster, connection_id: str) -> list[ExecutionResult]:
    return sorted(
        (r for r in await cluster.results() if r.connection_id == connection_id),
        key=lambda r: r.scheduled_for_ms or 0,
    )


async def _stops(cluster: Cluster, connection_id: str, *, quiet_s: float = 3.0) -> None:
    """After a stopping command: at most one more result (a run already in flight), then
    none for ``quiet_s`` seconds (three intervals of the 1 s schedules used here)."""
    before = len(await _results_for(cluster, connection_id))
    count, quiet_since = before, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() - quiet_since < quiet_s:
        assert time.monotonic() < deadline, "never went quiet"
        now = len(await _results_for(cluster, connection_id))
        assert now <= before + 1, f"{now - before} runs after the command"
        if now != count:
            count, quiet_since = now, time.monotonic()
        await asyncio.sleep(0.25)


async def test_cron_with_seconds_fires_on_its_instants(cluster: Cluster) -> None:
    await cluster.create_topics()
    cluster.start_worker(DATABITE_FIRST_RUN="next_grid")
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("cron", "*/3 * * * * *"))

    async def enough() -> bool:
        return len(await _results_for(cluster, "cron")) >= 3

    await wait_for(enough, timeout=60, interval=0.5, what="3 cron runs")
    results = await _results_for(cluster, "cron")
    assert all((r.scheduled_for_ms or 1) % 3000 == 0 for r in results), results
    for r in results:  # ran promptly after its instant
        assert 0 <= r.started_at_ms - (r.scheduled_for_ms or 0) < 2000


async def test_pause_resume_run_now_unschedule_and_tombstone(cluster: Cluster) -> None:
    await cluster.create_topics()
    cluster.start_worker()
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("ctl", "1s"))
    await cluster.put_connection(echo_connection("gone", "1s"))
    await cluster.put_integration(echo_integration("int-2"))
    await cluster.put_connection(
        echo_connection("orphan", "1s").model_copy(update={"integration_id": "int-2"})
    )

    async def runs(cid: str, n: int) -> bool:
        return len(await _results_for(cluster, cid)) >= n

    await wait_for(lambda: runs("ctl", 2), timeout=60, what="ctl running")
    await wait_for(lambda: runs("gone", 2), timeout=30, what="gone running")
    await wait_for(lambda: runs("orphan", 2), timeout=30, what="orphan running")

    # pause -> nothing more (after a possible run already in flight)
    await cluster.command(Command(command="pause", connection_id="ctl", sync_name="records"))
    await _stops(cluster, "ctl")

    # resume -> runs again, back on the 1 s grid
    paused_count = len(await _results_for(cluster, "ctl"))
    await cluster.command(Command(command="resume", connection_id="ctl"))
    await wait_for(lambda: runs("ctl", paused_count + 2), timeout=20, what="resumed runs")
    scheduled = [r.scheduled_for_ms or 0 for r in await _results_for(cluster, "ctl")]
    assert all((b - scheduled[1]) % 1000 == 0 for b in scheduled[1:]), scheduled

    # reset_checkpoint -> the next run is a full sync again (echo: 5 records, then 0)
    runs_so_far = await _results_for(cluster, "ctl")
    assert runs_so_far[-1].summary is not None
    assert runs_so_far[-1].summary.records == 0  # incremental: nothing new upstream
    reset_at = int(time.time() * 1000)
    await cluster.command(Command(command="reset_checkpoint", connection_id="ctl"))

    async def full_again() -> bool:
        return any(
            r.started_at_ms > reset_at and r.summary is not None and r.summary.records == 5
            for r in await _results_for(cluster, "ctl")
        )

    await wait_for(full_again, timeout=20, what="a full sync after reset_checkpoint")

    # run-now -> one extra run at the requested instant (off the grid). Paused first: under
    # the default overlap policy a run-now is skipped while a grid run is in flight (unit
    # tested), and with dispatch ahead a grid run is in flight for ~500 ms of every second
    await cluster.command(Command(command="pause", connection_id="ctl", sync_name="records"))
    await _stops(cluster, "ctl")
    at = int(time.time() * 1000) + 1
    await cluster.command(Command(command="run_now", connection_id="ctl", requested_at_ms=at))

    async def ran_now() -> bool:
        return any(r.scheduled_for_ms == at for r in await _results_for(cluster, "ctl"))

    await wait_for(ran_now, timeout=20, what="the run-now result")

    # unschedule -> no more runs
    await cluster.command(Command(command="unschedule", connection_id="ctl"))
    await _stops(cluster, "ctl")

    # tombstone -> no more runs for that connection either
    await cluster.put_raw(cluster.topic(CONNECTIONS), b"gone", None)
    await _stops(cluster, "gone")

    # deleting an integration unschedules the jobs of its connections
    await cluster.put_raw(cluster.topic(INTEGRATIONS), b"int-2", None)
    await _stops(cluster, "orphan")

    ids = [r.run_id for r in await cluster.results()]
    assert len(ids) == len(set(ids)), "a run_id has two results"


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_restart_keeps_schedules_and_handles_the_missed_run(
    cluster: Cluster, store: str
) -> None:
    await cluster.create_topics()
    env = {
        "DATABITE_MISFIRE_GRACE_S": "1",
        "DATABITE_MISFIRE": "run_once",
        "DATABITE_STORE": store,
    }
    first = cluster.start_worker("w1", **env)
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("r1", "2s"))

    async def runs(n: int) -> bool:
        return len(await _results_for(cluster, "r1")) >= n

    await wait_for(lambda: runs(3), timeout=60, what="3 runs before the restart")
    cluster.stop_worker(first)
    before = await _results_for(cluster, "r1")
    down_from = int(time.time() * 1000)
    # stay down for more than two intervals, so that runs are missed
    await wait_for(lambda: int(time.time() * 1000) - down_from > 5000, timeout=10, what="downtime")
    cluster.start_worker("w2", **env)  # same app id, no connection re-published
    await wait_for(lambda: runs(len(before) + 3), timeout=60, what="runs after the restart")
    after = await _results_for(cluster, "r1")
    grid = before[1].scheduled_for_ms or 0
    new = [r for r in after if r.run_id not in {b.run_id for b in before}]
    assert all(((r.scheduled_for_ms or 0) - grid) % 2000 == 0 for r in after[1:]), after
    # run_once: the missed times collapse into one catch-up run, then the grid resumes
    missed = [r for r in new if (r.scheduled_for_ms or 0) < down_from + 5000]
    assert len(missed) <= 1, [r.scheduled_for_ms for r in missed]
    ids = [r.run_id for r in await cluster.results()]
    assert len(ids) == len(set(ids)), "a run_id has two results"


def _bulk_restored(log: str, table: str) -> int:
    """Records the worker's bulk restore of ``table`` applied, summed over ``log``."""
    marker = f"bulk-restored {table}: "
    return sum(
        int(line.split(marker, 1)[1].split(" ", 1)[0])
        for line in log.splitlines()
        if marker in line
    )


async def test_rocksdb_tables_restore_in_bulk_and_resume_from_their_own_offset(
    cluster: Cluster,
) -> None:
    """rocksdb://: a worker with an empty data dir reads the changelogs in bulk (not faust's
    per-record recovery); restarted on the same data dir it reads only what its databases
    do not hold; either way every schedule is back and the tables take new rows."""
    await cluster.create_topics()
    env = {"DATABITE_STORE": "rocksdb://"}
    first = cluster.start_worker("w1", **env)
    await cluster.put_integration(echo_integration())
    ids = [f"conn-{i}" for i in range(6)]
    for cid in ids:
        await cluster.put_connection(echo_connection(cid, "1h"))

    async def ran(wanted: set[str]) -> bool:  # first runs are immediate
        return wanted <= {r.connection_id for r in await cluster.results()}

    await wait_for(partial(ran, set(ids)), timeout=60, what="every connection's first run")
    cluster.stop_worker(first)

    def rebuilt(name: str, starts: int) -> bool:
        lines = [ln for ln in cluster.log(name).splitlines() if "due index rebuilt" in ln]
        return len(lines) >= starts and f": {len(ids)} jobs in" in lines[-1]

    fresh = cluster.start_worker("w2", **env)  # an empty data dir
    await wait_for(partial(rebuilt, "w2", 1), timeout=60, what="w2 rebuilt every job")
    from_empty = _bulk_restored(cluster.log("w2"), "jobs")
    assert from_empty >= len(ids), cluster.log("w2")[-3000:]
    cluster.stop_worker(fresh)

    again = cluster.start_worker("w2", **env)  # the same data dir: its databases hold it all
    await wait_for(partial(rebuilt, "w2", 2), timeout=60, what="w2 rebuilt again")
    assert _bulk_restored(cluster.log("w2"), "jobs") - from_empty < len(ids)
    await cluster.put_connection(echo_connection("after", "1h"))
    await wait_for(partial(ran, {"after"}), timeout=60, what="a new connection runs")
    assert again.poll() is None


async def test_two_workers_split_partitions_and_fail_over(cluster: Cluster) -> None:
    await cluster.create_topics()
    env = {"DATABITE_MISFIRE_GRACE_S": "30", "DATABITE_SESSION_TIMEOUT_S": "10"}
    w1 = cluster.start_worker("w1", **env)
    w2 = cluster.start_worker("w2", **env)
    await cluster.put_integration(echo_integration())
    ids = [f"conn-{i}" for i in range(8)]
    for cid in ids:
        await cluster.put_connection(echo_connection(cid, "1s"))

    async def all_running(min_runs: int) -> bool:
        results = await cluster.results()
        counts = Counter(r.connection_id for r in results)
        return all(counts[c] >= min_runs for c in ids)

    await wait_for(lambda: all_running(2), timeout=90, what="every connection running")

    def owned(name: str) -> set[int]:
        return _owned(cluster, name)

    await wait_for(
        lambda: bool(owned("w1")) and bool(owned("w2")) and not owned("w1") & owned("w2"),
        timeout=30,
        what="partitions split between the workers",
    )
    assert owned("w1") | owned("w2") == set(range(cluster.partitions))

    cluster.stop_worker(w2, kill=True)  # kill -9: no goodbye to the group
    killed_at = int(time.time() * 1000)

    async def all_after_kill() -> bool:
        results = await cluster.results()
        latest = dict.fromkeys(ids, 0)
        for r in results:
            latest[r.connection_id] = max(latest[r.connection_id], r.finished_at_ms)
        return all(t > killed_at + 1000 for t in latest.values())

    # the session timeout (10 s here) bounds the takeover
    await wait_for(all_after_kill, timeout=60, interval=1.0, what="w1 taking over w2's jobs")
    assert owned("w1") == set(range(cluster.partitions))
    assert w1.poll() is None
    run_ids = [r.run_id for r in await cluster.results()]
    dupes = [k for k, n in Counter(run_ids).items() if n > 1]
    # a kill -9 may re-deliver a run whose result was published but not yet committed;
    # the runs-done table catches those that finished; report anything else
    assert not dupes, f"run ids with two results: {dupes}"


def _logged(cluster: Cluster, name: str, text: str) -> bool:
    return text in cluster.log(name)


def _owned(cluster: Cluster, name: str) -> set[int]:
    """The partitions a worker owns, from its last "due index rebuilt" log line."""
    lines = [ln for ln in cluster.log(name).splitlines() if "due index rebuilt" in ln]
    if not lines:
        return set()
    inside = lines[-1].split("partitions [", 1)[1].split("]", 1)[0]
    return {int(p) for p in inside.split(",") if p.strip()}


async def test_a_worker_drops_the_rows_of_the_partitions_it_hands_over(cluster: Cluster) -> None:
    """memory:// tables keep no per-key partition map: when a second worker takes partitions
    over, the first deletes exactly the rows of those partitions (read from the rows), those
    it restored and those it wrote since."""
    await cluster.create_topics()
    cluster.start_worker("w1")
    await cluster.put_integration(echo_integration())
    ids = [f"conn-{i}" for i in range(16)]
    for cid in ids:
        await cluster.put_connection(echo_connection(cid, "1h"))

    async def all_ran() -> bool:  # first runs are immediate: every row is written
        return {r.connection_id for r in await cluster.results()} == set(ids)

    await wait_for(all_ran, timeout=60, what="every connection's first run")
    cluster.start_worker("w2")
    await wait_for(
        lambda: bool(_owned(cluster, "w2")) and not _owned(cluster, "w1") & _owned(cluster, "w2"),
        timeout=60,
        what="partitions split between the workers",
    )
    handed = _owned(cluster, "w2")
    moved = sum(1 for cid in ids if partition_for(cid.encode(), cluster.partitions) in handed)
    assert 0 < moved < len(ids)
    for table in ("connections", "jobs"):
        line = f"table {table}: dropped {moved} rows of partitions {sorted(handed)}"
        await wait_for(partial(_logged, cluster, "w1", line), timeout=30, what=line)


async def test_bad_input_is_dead_lettered_and_good_connections_keep_running(
    cluster: Cluster,
) -> None:
    await cluster.create_topics()
    cluster.start_worker()
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("good", "1s"))
    bad: list[tuple[str, bytes | None, bytes | None, str]] = [
        (cluster.topic(CONNECTIONS), b"x1", b"{not json", "invalid connection"),
        (
            cluster.topic(CONNECTIONS),
            b"x2",
            echo_connection("x2", "1s")
            .model_copy(update={"connector_id": "nope"})
            .model_dump_json()
            .encode(),
            "unknown connector",
        ),
        (
            cluster.topic(CONNECTIONS),
            b"x3",
            echo_connection("x3", "0 25 * * *").model_dump_json().encode(),
            "hour 25",
        ),
        (
            cluster.topic(CONNECTIONS),
            b"x4",
            echo_connection("x4", "1s")
            .model_copy(update={"integration_id": "missing"})
            .model_dump_json()
            .encode(),
            "integration 'missing'",
        ),
        (
            cluster.topic(COMMANDS),
            b"good",
            b'{"command": "explode", "connection_id": "good"}',
            "invalid message",
        ),
        (cluster.topic(ACTION_REQUESTS), b"good", b"\xff\xfe garbage", "invalid action request"),
        (cluster.topic(INTEGRATIONS), b"i9", b'{"id": "i9"}', "invalid integration"),
    ]
    for topic, key, value, _ in bad:
        await cluster.put_raw(topic, key, value)

    async def all_dead_lettered() -> bool:
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await cluster.read(DEADLETTER)
            if r.value is not None
        ]
        return all(
            any(
                d.source_topic == t
                and d.key == (k or b"").decode("utf-8", "replace")
                and reason in d.reason
                for d in letters
            )
            for t, k, _, reason in bad
        )

    await wait_for(
        all_dead_lettered, timeout=60, interval=0.5, what="every bad input dead-lettered"
    )
    letters = await cluster.read(DEADLETTER)
    assert all(SECRET.encode() not in (r.value or b"") for r in letters)
    before = len(await _results_for(cluster, "good"))

    async def still_running() -> bool:
        return len(await _results_for(cluster, "good")) >= before + 2

    await wait_for(still_running, timeout=20, what="the good connection to keep running")


async def test_action_request_returns_its_result_with_the_correlation_id(
    cluster: Cluster,
) -> None:
    await cluster.create_topics()
    cluster.start_worker()
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("act", "1h"))

    async def known() -> bool:  # its first (immediate) run shows the worker has it
        return len(await _results_for(cluster, "act")) >= 1

    await wait_for(known, timeout=60, what="the connection to be scheduled")
    ok = ActionRequest(
        correlation_id="corr-1",
        connection_id="act",
        action="echo",
        input={"text": "hello"},
        requested_at_ms=1,
    )
    bad = ActionRequest(
        correlation_id="corr-2",
        connection_id="act",
        action="echo",
        input={"txt": "hello"},
        requested_at_ms=1,
    )
    for req in (ok, bad):
        await cluster.put_raw(
            cluster.topic(ACTION_REQUESTS), b"act", req.model_dump_json().encode()
        )

    async def answered() -> bool:
        got = {r.key for r in await cluster.read(ACTION_RESULTS)}
        return {b"corr-1", b"corr-2"} <= got

    await wait_for(answered, timeout=60, interval=0.5, what="both action results")
    results = {
        r.correlation_id: r
        for r in (
            ActionResult.model_validate_json(m.value)
            for m in await cluster.read(ACTION_RESULTS)
            if m.value is not None
        )
    }
    assert results["corr-1"].success
    assert results["corr-1"].output == {"text": "hello", "length": 5}
    assert not results["corr-2"].success
    assert "text" in (results["corr-2"].error or "")
    assert results["corr-2"].error_kind == "validation"


async def test_a_restart_with_the_same_group_instance_id_skips_the_session_timeout(
    cluster: Cluster,
) -> None:
    """Static membership: the killed worker's replacement gets the partitions at once, not
    after the 30 s session timeout a new member would wait for."""
    await cluster.create_topics()
    env = {"DATABITE_SESSION_TIMEOUT_S": "30", "DATABITE_GROUP_INSTANCE_ID": "slot-1"}
    first = cluster.start_worker("w1", **env)
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("static", "1s"))

    async def runs() -> list[int]:
        return [r.started_at_ms for r in await _results_for(cluster, "static")]

    await wait_for(lambda: _count_at_least(runs, 2), timeout=60, what="runs before the kill")
    cluster.stop_worker(first, kill=True)
    killed = int(time.time() * 1000)
    cluster.start_worker("w2", **env)

    async def ran_again() -> bool:
        return any(started > killed for started in await runs())

    await wait_for(ran_again, timeout=60, what="a run after the restart")
    after = min(started for started in await runs() if started > killed)
    assert after - killed < 20_000, f"first run {after - killed} ms after the kill"


async def _count_at_least(runs: Callable[[], Awaitable[list[int]]], n: int) -> bool:
    return len(await runs()) >= n


BACKLOG = 30_000  # scheduler events of the backlog (~5-10 s of work)


async def _offsets(cluster: Cluster, tp: TopicPartition) -> tuple[int, int]:
    """(the worker group's committed offset, the end offset) of one partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(cluster.prefix)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap)
    await consumer.start()
    try:
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    meta = committed.get(tp)
    return (meta.offset if meta is not None else -1), end


async def test_due_runs_start_on_time_while_the_scheduler_is_backed_up(cluster: Cluster) -> None:
    """Ticks have their own topic and agent: a backlog of scheduler events (here commands for
    a job nobody has, each dead-lettered) does not hold back the runs that fall due
    meanwhile. In the scheduler's inbox, a tick waited behind the whole backlog."""
    await cluster.create_topics()
    # completions wait in the backlog too: with the default overlap policy each run would
    # skip the next one (a run still in flight), not be late
    worker = cluster.start_worker(DATABITE_OVERLAP="allow")
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("lane", "1s"))

    async def running() -> bool:
        assert worker.poll() is None, cluster.log()
        return len(await _results_for(cluster, "lane")) >= 2

    await wait_for(running, timeout=60, interval=0.25, what="the 1 s sync running")
    # keyed like the connection: the backlog is in the partition that owns its job
    tp = TopicPartition(cluster.topic(COMMANDS), partition_for(b"lane", cluster.partitions))
    ghost = Command(command="pause", connection_id="ghost", sync_name="records")
    backlog = ghost.model_dump_json().encode()
    worker.send_signal(signal.SIGSTOP)  # the backlog is all in Kafka before it reads any
    try:
        await produce(cluster.bootstrap, tp.topic, ((b"lane", backlog) for _ in range(BACKLOG)))
    finally:
        worker.send_signal(signal.SIGCONT)
    flooded_ms = int(time.time() * 1000)
    drained_ms = None
    while drained_ms is None:
        assert int(time.time() * 1000) - flooded_ms < 120_000, "the backlog never drained"
        committed, end = await _offsets(cluster, tp)
        if committed >= end:
            drained_ms = int(time.time() * 1000)
        await asyncio.sleep(0.2)
    print(f"backlog of {BACKLOG} commands drained in {drained_ms - flooded_ms} ms")
    during = [
        r
        for r in await _results_for(cluster, "lane")
        # runs due while it stopped are late by then; the first second is its catch-up; a
        # tick queued behind the rest of the backlog would be 2 s late or more
        if flooded_ms + 1000 <= (r.scheduled_for_ms or 0) <= drained_ms - 2000
    ]
    # the backlog took seconds; the runs due meanwhile did not wait for it: behind it they
    # would be 2 s late or more. Nor did their due jobs wait behind the scheduler agent's full
    # buffer (the consumer holds back only that partition, see stream.transport): when every
    # fetched message waited for room in it, every other run started 0.85-1.3 s late, the
    # scheduler having emitted it on time; since, at most ~100 ms.
    assert len(during) >= 2, (drained_ms - flooded_ms, len(during))
    late = sorted(r.started_at_ms - (r.scheduled_for_ms or 0) for r in during)
    print(f"runs due meanwhile started late by (ms): {late}")
    assert late[-1] < 750, late


async def test_due_runs_reach_the_executor_a_tick_lead_early_and_start_on_time(
    cluster: Cluster,
) -> None:
    """A partition is ticked once its earliest run is due within the tick lead, and the tick
    hands over what is due within the dispatch-ahead window: each run is in Kafka at least
    about the lead before its time (absorbing the hops to the executor), and starts on time.
    With the lead at half the window (before), 500 ms handed runs over ~250 ms early."""
    ahead = 500
    await cluster.create_topics()
    worker = cluster.start_worker(DATABITE_DISPATCH_AHEAD_MS=str(ahead))
    await cluster.put_integration(echo_integration())
    await cluster.put_connection(echo_connection("early", "1s"))

    async def six_runs() -> bool:
        assert worker.poll() is None, cluster.log()
        return len(await _results_for(cluster, "early")) >= 6

    await wait_for(six_runs, timeout=60, interval=0.25, what="six runs of the 1 s sync")
    leads = sorted(
        due.scheduled_for_ms - due.emitted_at_ms
        for record in await cluster.read(WORK)
        if record.value is not None
        for due in DueJobs.model_validate_json(record.value).runs
        if due.connection.id == "early" and due.reason == "schedule"
    )
    assert len(leads) >= 6, leads
    median = leads[len(leads) // 2]
    assert tick_lead_ms(ahead) - 100 <= median <= ahead, leads
    results = await _results_for(cluster, "early")
    late = sorted(r.started_at_ms - (r.scheduled_for_ms or 0) for r in results)
    assert late[len(late) // 2] < 50, late
