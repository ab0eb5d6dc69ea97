"""End-to-end benchmarks of the stream layer on a real broker, side by side with raw aiokafka.

Sections (each one a fresh databite deployment — unique app id and topic prefix — on one broker):

* ceiling    raw aiokafka on the same broker, same message size and topic configuration:
             produce-only msgs/s and a consume->produce relay loop msgs/s (the baselines).
* throughput N no-op echo jobs (``record_count: 0``) due at the same instant (a 6-field cron
             wave, ``DATABITE_FIRST_RUN=next_grid``); completed runs/s from the due instant to
             the last ``ExecutionResult`` on the results topic, as a ratio to the relay ceiling.
* precision  N jobs on ``"Ks; jitter_ms=K000"`` (≈ N/K runs/s, spread evenly); lateness =
             ``started_at_ms - scheduled_for_ms`` and ``finished_at_ms - scheduled_for_ms`` over
             a steady-state window; a PNG plot if matplotlib is installed.
* scale      worker RSS and bytes per schedule at 10k / 100k schedules (nothing due), memory://
             and rocksdb://; idle worker CPU % with 100k schedules.
* recovery   kill -9 the worker holding N schedules, start a fresh one (fresh data dir): seconds
             until it emits due jobs again, and schedules recovered per second.
* standby    two workers with a standby replica each, kill -9 one: seconds until the survivor
             emits due jobs of every partition.
* million    1M schedules seeded into the changelogs, a fresh worker recovers them: recovery
             speed, RSS per schedule, idle CPU, then kill -9 and a static-member restart.
* million-rocksdb  the same 1M with ``rocksdb://``.

Run: ``.venv/bin/python benchmarks/bench_stream.py --quick`` (or via ``benchmarks/run_all.py``);
``--only throughput,precision`` runs a subset; ``DATABITE_BROKER=host:port`` uses that broker.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import (
    RESULTS_DIR,
    SRC,
    Deployment,
    Row,
    cpu_percent,
    echo_connections,
    machine_facts,
    median,
    percentile,
    print_table,
    produce_many,
    producer,
    publish_catalog,
    row,
    seed_state,
    spread,
    tap_results,
    wait_for_offsets,
    write_report,
)
from databite_stream.models import Connection, ExecutionResult, Integration
from databite_stream.schedule import FirstRun, Policy
from databite_stream.settings import Settings
from databite_stream.stream.heap import rss_bytes
from databite_stream.stream.scheduler_agent import tick_lead_ms
from databite_stream.testing.fixtures import echo_connection, echo_integration
from databite_stream.topics import CONNECTIONS
from databite_stream.wire import DueJob

#: runs due per second -> the issue's p99 lateness target at that load
PRECISION_TARGETS_MS = {1_000: 50, 10_000: 250}
BENCH_ENV = {"DATABITE_FIRST_RUN": "next_grid", "DATABITE_LOG_LEVEL": "info"}
POLICY = Policy(first_run=FirstRun.GRID)  # the rows a worker with BENCH_ENV writes
#: seeded precision runs begin this long after the seeding (workers were up ~2 s after it):
#: runs due meanwhile would all run at once at start, a catch-up wave, not the steady state
SEED_LEAD_S = 15.0
SETTLED_MEDIAN_MS = 100  # see _settle
SETTLED_SECONDS = 5


@dataclass(frozen=True)
class Profile:
    name: str
    repeats: int
    ceiling_messages: int
    throughput_jobs: int
    throughput_waves: int
    #: complete waves run first and reported apart: the broker's JIT compiles its hot paths
    #: during the first waves of a deployment (its compiler threads took 2.5 of its 5.8 CPU
    #: seconds over two cold waves) and the first wave ran at half the later rate
    throughput_warmup: int
    throughput_workers: tuple[int, ...]
    #: (schedules, interval in seconds): schedules / interval runs fall due per second
    precision_runs: tuple[tuple[int, int], ...]
    precision_window_s: float
    #: (schedules, interval s, workers) of the heavy precision cases, seeded into the
    #: changelogs (live ingest of 100k takes a minute); empty: not run
    precision_heavy: tuple[tuple[int, int, int], ...]
    #: runs of each heavy case, on fresh deployments; odd, so the median is one of them
    precision_heavy_runs: int
    scale_sizes: tuple[int, ...]
    rocksdb_sizes: tuple[int, ...]  # ingest is ~700 conn/s today: 100k costs 2.5 min per store
    stores: tuple[str, ...]
    recovery_jobs: int
    #: schedules seeded into the changelogs for the 1M section (0: not run)
    million_jobs: int
    standby_jobs: int
    #: also recover with a new member (it waits out the killed one's 30 s session timeout)
    recovery_new_member: bool


QUICK = Profile(
    name="quick",
    repeats=3,
    ceiling_messages=30_000,
    throughput_jobs=10_000,
    throughput_waves=3,
    throughput_warmup=1,
    throughput_workers=(1, 2),
    precision_runs=((10_000, 10), (100_000, 100), (2_000, 10)),
    precision_window_s=30.0,
    precision_heavy=(),  # keeps the quick profile under 10 minutes
    precision_heavy_runs=1,
    scale_sizes=(10_000, 100_000),
    rocksdb_sizes=(10_000,),
    stores=("memory://", "rocksdb://"),
    recovery_jobs=100_000,
    million_jobs=0,
    standby_jobs=100_000,
    recovery_new_member=False,  # keeps the quick profile under 10 minutes
)
FULL = Profile(
    name="full",
    repeats=5,
    ceiling_messages=100_000,
    throughput_jobs=30_000,
    throughput_waves=5,
    throughput_warmup=2,
    throughput_workers=(1, 2),
    precision_runs=((10_000, 10), (100_000, 100), (2_000, 10)),
    precision_window_s=60.0,
    precision_heavy=((50_000, 10, 2), (100_000, 10, 2)),  # 5,000 and 10,000 runs/s
    # one run of the 10,000 runs/s case met its target and the next missed it by 8x (a
    # start-up queue that did not drain): a figure from one run says little
    precision_heavy_runs=3,
    scale_sizes=(10_000, 100_000),
    rocksdb_sizes=(10_000, 100_000),
    stores=("memory://", "rocksdb://"),
    recovery_jobs=100_000,
    million_jobs=1_000_000,
    standby_jobs=100_000,
    recovery_new_member=True,
)


def sample_messages() -> tuple[bytes, bytes]:
    """A real DueJob and ExecutionResult of a no-op echo run: the sizes the engine moves."""
    now = int(time.time() * 1000)
    conn: Connection = echo_connection(id="conn-0001234", record_count=0)
    integ: Integration = echo_integration()
    due = DueJob(
        run_id=f"conn-0001234/records@{now}",
        job_id="conn-0001234/records",
        sync_name="records",
        scheduled_for_ms=now,
        emitted_at_ms=now,
        connection=conn,
        integration=integ,
    )
    result = ExecutionResult(
        run_id=due.run_id,
        job_id=due.job_id,
        connection_id=conn.id,
        connector_id="echo",
        name="records",
        scheduled_for_ms=now,
        success=True,
        attempts=1,
        execution_time_ms=0.3,
        started_at_ms=now,
        finished_at_ms=now,
    )
    return due.model_dump_json().encode(), result.model_dump_json().encode()


# -- ceiling ----------------------------------------------------------------------------------
async def _create(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs={"cleanup.policy": "delete"}) for n in names]
        )
    finally:
        await admin.close()
    await asyncio.sleep(1.5)  # leaders elected (else the first sends retry NotLeader)


# the producer settings faust uses in our app (acks=all, linger 2 ms, 16 KiB batches)
FAUST_PRODUCER = {"linger_ms": 2, "max_batch_size": 16384}


async def ceiling_once(bootstrap: str, n: int, value: bytes) -> tuple[float, float]:
    """(produce-only msgs/s, relay msgs/s) on fresh 8-partition topics."""
    tag = uuid.uuid4().hex[:8]
    src, dst = f"ceil-{tag}-in", f"ceil-{tag}-out"
    await _create(bootstrap, [src, dst], 8)
    keys = [f"echo:conn-{i:07d}".encode() for i in range(n)]
    items = list(zip(keys, [value] * n, strict=True))
    seconds = await produce_many(bootstrap, src, items, **FAUST_PRODUCER)
    produce_rate = n / seconds

    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=f"ceil-{tag}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=500,
    )
    prod = producer(bootstrap, **FAUST_PRODUCER)
    await consumer.start()
    await prod.start()
    try:
        done = 0
        t0: float | None = None
        pending: list[asyncio.Future[Any]] = []
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if t0 is None and batches:
                t0 = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    pending.append(await prod.send(dst, key=rec.key, value=rec.value))
                    done += 1
            if len(pending) > 4000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        assert t0 is not None
        relay_rate = n / (time.perf_counter() - t0)
    finally:
        await prod.stop()
        await consumer.stop()
    return produce_rate, relay_rate


async def bench_ceiling(bootstrap: str, p: Profile) -> tuple[list[Row], float]:
    due, _result = sample_messages()
    produce, relay = [], []
    for _ in range(p.repeats):
        a, b = await ceiling_once(bootstrap, p.ceiling_messages, due)
        produce.append(a)
        relay.append(b)
    size = len(due)
    rows = [
        row(
            "ceiling",
            f"raw aiokafka produce-only ({size} B DueJob, 8 partitions, acks=all)",
            median(produce),
            "msg/s",
            noise=spread(produce),
        ),
        row(
            "ceiling",
            "raw aiokafka consume->produce relay (baseline)",
            median(relay),
            "msg/s",
            ratio="1.00x (baseline)",
            noise=spread(relay),
        ),
    ]
    return rows, median(relay)


# -- worker helpers -----------------------------------------------------------------------------
READY = re.compile(r"due index rebuilt for partitions (\[[^\]]*\]): (\d+) jobs in ([\d.]+)s")


async def wait_log(dep: Deployment, name: str, pattern: re.Pattern[str], timeout: float) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = pattern.search(dep.log(name))
        if m:
            return m
        proc = dep.workers.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited:\n{dep.log(name)[-3000:]}")
        await asyncio.sleep(0.1)
    raise TimeoutError(
        f"worker {name}: no {pattern.pattern!r} in {timeout}s:\n{dep.log(name)[-3000:]}"
    )


async def start_workers(dep: Deployment, count: int, **env: str) -> list[int]:
    """Start ``count`` workers; return when they process the catalog (a probe connection's
    job is stored and removed again), whatever the log level."""
    pids = [dep.start_worker(f"w{i + 1}", **env) for i in range(count)]
    if BENCH_ENV.get("DATABITE_LOG_LEVEL", "info") in ("info", "debug"):
        for i in range(count):
            await wait_log(dep, f"w{i + 1}", READY, 120)
    if count > 1:
        await asyncio.sleep(8)  # let the group settle after the last join
    base = await _changelog_size(dep)
    probe = echo_connections(1, "1h", start=9_999_999)
    await publish_catalog(dep, probe)
    await produce_many(dep.bootstrap, dep.topic(CONNECTIONS), [(probe[0][0], None)])
    if await wait_for_offsets(dep.bootstrap, dep.changelog("jobs"), base + 2, 120) is None:
        raise TimeoutError(f"workers not processing the catalog:\n{dep.log('w1')[-3000:]}")
    return pids


async def ingest(
    dep: Deployment, n: int, schedule: str, start: int = 0, timeout: float = 600
) -> float:
    """Publish ``n`` connections; seconds until the worker(s) stored all their jobs."""
    base = await _changelog_size(dep)
    t0 = time.monotonic()
    await publish_catalog(dep, echo_connections(n, schedule, start=start))
    waited = await wait_for_offsets(dep.bootstrap, dep.changelog("jobs"), base + n, timeout)
    if waited is None:
        raise TimeoutError(f"{n} jobs not stored within {timeout}s")
    return time.monotonic() - t0


async def _changelog_size(dep: Deployment) -> int:
    from benchmarks.common import end_offsets_total

    return await end_offsets_total(dep.bootstrap, dep.changelog("jobs"))


# -- throughput ---------------------------------------------------------------------------------
async def bench_throughput(
    bootstrap: str, p: Profile, workers: int, relay: float, profile_hook: Any = None
) -> list[Row]:
    dep = Deployment(bootstrap, env=dict(BENCH_ENV))
    await dep.create_topics()
    n = p.throughput_jobs
    # a wave is over in 1-3 s at the rates seen; the period only has to leave room for that
    period = 12 if n <= 10_000 else 60
    # a wave's runs are handed to the executor before they are due, so part of its work
    # happens before its due instant: the figure that counts all of it starts the clock when
    # the wave's first tick is sent (the tick lead before the due instant; nothing of the
    # wave is done before that)
    lead_ms = tick_lead_ms(
        int(
            dep.env.get(
                "DATABITE_DISPATCH_AHEAD_MS", Settings.model_fields["dispatch_ahead_ms"].default
            )
        )
    )
    tap = await tap_results(dep)
    try:
        await start_workers(dep, workers)
        ingest_s = await ingest(dep, n, f"*/{period} * * * * *")
        # waves: every result of one wave shares scheduled_for_ms; keep complete waves only
        rates: list[float] = []  # from the wave's first tick (due - lead)
        due_rates: list[float] = []  # from the due instant
        mid_rates: list[float] = []
        warm: list[float] = []  # the warm-up waves' rates, reported apart
        complete = 0
        waves_needed = p.throughput_waves + p.throughput_warmup
        deadline = time.monotonic() + (waves_needed + 2) * period + 30
        seen_waves: set[int] = set()
        profiled = False
        while complete < waves_needed and time.monotonic() < deadline:
            await asyncio.sleep(1)
            waves: dict[int, list[int]] = {}
            for sched, _started, end, _seen in tap.rows:
                waves.setdefault(sched, []).append(end)
            if profile_hook is not None and not profiled and waves:
                profiled = True
                await profile_hook(dep)
            now = int(time.time() * 1000)
            for sched, finished in sorted(waves.items()):
                if sched in seen_waves or now - sched < period * 1000 - 2000:
                    continue  # not over yet (the next wave is the latest end)
                seen_waves.add(sched)
                if len(finished) < n:
                    continue  # a wave from before the ingest finished, or runs were skipped
                finished.sort()
                complete += 1
                rate = n / ((finished[-1] - sched + lead_ms) / 1000)
                due_rate = n / ((finished[-1] - sched) / 1000)
                kind = "warm-up" if complete <= p.throughput_warmup else "measured"
                print(
                    f"  wave {complete} ({kind}): {rate:,.0f} runs/s "
                    f"({due_rate:,.0f} from the due instant)",
                    flush=True,
                )
                if kind == "warm-up":
                    warm.append(rate)
                    continue
                rates.append(rate)
                due_rates.append(due_rate)
                lo, hi = finished[n // 10], finished[9 * n // 10]
                mid_rates.append(0.8 * n / max(0.001, (hi - lo) / 1000))
        dups = tap.duplicates
    finally:
        await tap.stop()
        dep.stop_all()
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rate = median(rates)
    rows = [
        row(
            "throughput",
            f"{label}: ingest {n:,} connections -> jobs stored",
            n / ingest_s,
            "conn/s",
        ),
        row(
            "throughput",
            f"{label}: {n:,} no-op runs due at once, first tick (due - {lead_ms} ms) "
            "-> last result",
            rate,
            "runs/s",
            ratio=f"{rate / relay:.1%} of relay",
            target=">= 10,000 and >= 40% of relay",
            met=bool(rates) and rate >= 10_000 and rate / relay >= 0.4,
            noise=spread(rates)
            + f"; {len(rates)} measured after {len(warm)} warm-up wave(s) at "
            + (", ".join(f"{r:,.0f}" for r in warm) or "-")
            + f" runs/s; {dups} duplicate results",
        ),
        row(
            "throughput",
            f"{label}: same, from the due instant (runs handed over early are waiting)",
            median(due_rates),
            "runs/s",
            ratio=f"{median(due_rates) / relay:.1%} of relay",
            noise=spread(due_rates),
        ),
        row(
            "throughput",
            f"{label}: same, rate between 10% and 90% of results",
            median(mid_rates),
            "runs/s",
            ratio=f"{median(mid_rates) / relay:.1%} of relay",
            noise=spread(mid_rates),
        ),
    ]
    return rows


# -- precision ----------------------------------------------------------------------------------
async def bench_precision(
    bootstrap: str, p: Profile, n: int, every: int, *, workers: int = 1, seeded: bool = False
) -> tuple[list[Row], dict[str, Any]]:
    dep = Deployment(bootstrap, env=dict(BENCH_ENV))
    await dep.create_topics()
    tap = await tap_results(dep)
    # next_grid + jitter over the whole interval: once every job exists, n / every runs fall
    # due per second, evenly spread
    schedule = f"{every}s; jitter_ms={every * 1000}"
    try:
        if seeded:
            # each job's first run computed for it, as a live ingest would: spread evenly
            await seed_state(
                dep, n, schedule, policy=POLICY, spread=True, first_after_s=SEED_LEAD_S
            )
        pids = await start_workers(dep, workers)
        if not seeded:
            await ingest(dep, n, schedule)
        settled_s, drained = await _settle(tap, timeout=180.0 if seeded else 90.0)
        # read after the window, not during it: a live consumer here took ~10 % of a core
        # from the workers at 10,000 runs/s (each result carries its own times)
        tap.pause()
        w0 = int(time.time() * 1000)
        cpus = await asyncio.gather(*(cpu_percent(pid, p.precision_window_s) for pid in pids))
        cpu = sum(cpus)
        w1 = int(time.time() * 1000)
        await asyncio.sleep(5)  # stragglers of the window
        if not await tap.catch_up(timeout=60):
            raise RuntimeError("the results of the window could not be read back within 60s")
        rows_in = [r for r in tap.rows if w0 <= r[0] < w1]
        failures = tap.failures
    finally:
        await tap.stop()
        dep.stop_all()
    expected = n * (w1 - w0) / (every * 1000)
    start_late = sorted(r[1] - r[0] for r in rows_in)
    end_late = sorted(r[2] - r[0] for r in rows_in)
    rate = len(rows_in) / ((w1 - w0) / 1000)
    p99 = percentile(start_late, 0.99)
    tag = f"{n:,} jobs x {every}s" + (f", {workers} workers" if workers > 1 else "")
    limit_ms = PRECISION_TARGETS_MS.get(n // every)  # the issue sets targets at two loads
    rows = [
        row(
            "precision",
            f"{tag}: completed runs/s in a {p.precision_window_s:.0f}s window",
            rate,
            "runs/s",
            ratio=f"{len(rows_in) / expected:.1%} of due runs",
            noise=f"{len(rows_in):,} runs, {failures} failures; window began {settled_s:.0f}s "
            + (
                "after the ingest (the backlog it left drained)"
                if drained
                else f"after the ingest, without a median under {SETTLED_MEDIAN_MS} ms for "
                f"{SETTLED_SECONDS} s"
            ),
        ),
        row("precision", f"{tag}: " + "lateness at start: p50", percentile(start_late, 0.5), "ms"),
        row(
            "precision",
            f"{tag}: " + "lateness at start: p99",
            p99,
            "ms",
            target=f"<= {limit_ms} ms (at {n // every:,} runs/s)" if limit_ms else "",
            met=p99 <= limit_ms if limit_ms else None,
        ),
        row(
            "precision",
            f"{tag}: " + "lateness at start: max",
            start_late[-1] if start_late else float("nan"),
            "ms",
        ),
        row("precision", f"{tag}: " + "lateness at finish: p50", percentile(end_late, 0.5), "ms"),
        row("precision", f"{tag}: " + "lateness at finish: p99", percentile(end_late, 0.99), "ms"),
        row(
            "precision",
            f"{tag}: " + "lateness at finish: max",
            end_late[-1] if end_late else float("nan"),
            "ms",
        ),
        row(
            "precision",
            f"{tag}: " + "worker CPU during the window" + (" (all workers)" if workers > 1 else ""),
            cpu,
            "% core",
        ),
    ]
    return rows, {
        "precision_samples": rows_in,
        "window": (w0, w1),
        "jobs": n,
        "target_ms": limit_ms,
    }


async def _settle(tap: Any, timeout: float = 90.0) -> tuple[float, bool]:
    """(seconds, drained?) until the backlog of the start has drained: the median lateness
    of the runs due in each of the last ``SETTLED_SECONDS`` seconds is under
    ``SETTLED_MEDIAN_MS`` (at least 10 s, at most ``timeout``: then the load is more than
    the workers keep up with). The median, not the max: a queue left by the start shows in
    every run of a second, a steady-state tail in a few, and the window measures that tail.

    Why a start leaves a queue: cold workers and a cold broker (its JIT compiles during the
    first minute) fell ~4 s behind at 10,000 runs/s in the first 40 s, and drained it over the
    next ~60 s at a margin of a few percent."""
    t0 = time.monotonic()
    await asyncio.sleep(10)
    calm = 0
    while calm < SETTLED_SECONDS and time.monotonic() - t0 < timeout:
        await asyncio.sleep(1)
        now = int(time.time() * 1000)
        recent = [r[1] - r[0] for r in tap.rows if now - 2000 <= r[0] < now - 1000]
        calm = calm + 1 if recent and median(recent) < SETTLED_MEDIAN_MS else 0
    return time.monotonic() - t0, calm >= SETTLED_SECONDS


def plot_lateness(
    samples: list[tuple[int, int, int, int]],
    window: tuple[int, int],
    path: Path,
    target_ms: int | None = 50,
) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no lateness plot"
    xs = [(r[0] - window[0]) / 1000 for r in samples]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    a.scatter(xs, [r[1] - r[0] for r in samples], s=1, label="start - scheduled")
    a.scatter(xs, [r[2] - r[0] for r in samples], s=1, alpha=0.4, label="finish - scheduled")
    a.set_xlabel("scheduled_for (s into window)")
    a.set_ylabel("lateness (ms)")
    a.legend(markerscale=8)
    a.set_title("lateness over time")
    late = sorted(r[1] - r[0] for r in samples)
    b.plot(late, [i / max(1, len(late) - 1) for i in range(len(late))])
    b.set_xlabel("lateness at start (ms)")
    b.set_ylabel("fraction of runs")
    b.set_title("CDF")
    if target_ms is not None:
        b.axvline(target_ms, color="r", linestyle="--", label=f"target p99 {target_ms} ms")
        b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"lateness plot: {path}"


# -- scale + recovery -------------------------------------------------------------------------
async def _settled_rss(pid: int, seconds: float = 3.0) -> int:
    await asyncio.sleep(seconds)
    return rss_bytes(pid)


async def bench_scale(bootstrap: str, p: Profile, store: str, *, recovery: bool) -> list[Row]:
    dep = Deployment(bootstrap, store=store, env=dict(BENCH_ENV))
    await dep.create_topics()
    rows: list[Row] = []
    label = store.removesuffix("://")
    slot = _static_member(dep)
    try:
        # the first worker has the static id too unless a new member is measured first
        first_env = slot if recovery and not p.recovery_new_member else {}
        (pid,) = await start_workers(dep, 1, **first_env)
        rss0 = await _settled_rss(pid)
        rows.append(row("scale", f"{label}: worker RSS, no schedules", rss0 / 2**20, "MiB"))
        loaded = 0
        for size in p.scale_sizes if store == "memory://" else p.rocksdb_sizes:
            secs = await ingest(dep, size - loaded, "1h", start=loaded)
            rows.append(
                row(
                    "scale",
                    f"{label}: ingest {size - loaded:,} connections -> jobs stored",
                    (size - loaded) / secs,
                    "conn/s",
                )
            )
            loaded = size
            rss = await _settled_rss(pid)
            per = (rss - rss0) / size
            rows.append(
                row("scale", f"{label}: worker RSS at {size:,} schedules", rss / 2**20, "MiB")
            )
            rows.append(
                row(
                    "scale",
                    f"{label}: RSS per schedule at {size:,}",
                    per,
                    "bytes",
                    target="<= 512 B" if store == "memory://" else "",
                    met=(per <= 512) if store == "memory://" else None,
                )
            )
        idle = [await cpu_percent(pid, 5.0) for _ in range(2)]
        rows.append(
            row(
                "scale",
                f"{label}: idle worker CPU, {loaded:,} schedules, nothing due",
                median(idle),
                "% core",
                noise=spread(idle),
            )
        )
        if recovery:
            # a new member waits for the killed one's session timeout before it gets the
            # partitions; a restart with the same static-membership id does not
            old = "w1"
            if p.recovery_new_member:
                rows += await _recovery(dep, loaded, label, old, "w2", **slot)
                old = "w2"
            rows += await _recovery(
                dep, loaded, f"{label}, same group.instance.id", old, "w3", **slot
            )
    finally:
        dep.stop_all()
    return rows


def _static_member(dep: Deployment) -> dict[str, str]:
    """Worker env for one static-membership slot: a restart with it gets its partitions back
    without waiting for the killed worker's session timeout."""
    return {"DATABITE_GROUP_INSTANCE_ID": f"{dep.prefix}-slot-1"}


async def _recovery(
    dep: Deployment, jobs: int, label: str, old: str, new: str, **env: str
) -> list[Row]:
    # a few tracer jobs that are always due, so "emitting again" is observable
    tracers = 20
    if old == "w1":
        await ingest(dep, tracers, "1s", start=10_000_000)
    tap = await tap_results(dep)
    try:
        await asyncio.sleep(3)
        dep.stop_worker(old, kill=True)
        killed = int(time.time() * 1000)
        t0 = time.monotonic()
        dep.start_worker(new, **env)  # fresh data dir: everything comes from the changelogs
        m = await wait_log(dep, new, READY, 300)
        rebuilt = time.monotonic() - t0
        recovered = int(m.group(2))
        while not any(r[1] > killed for r in tap.rows):
            if time.monotonic() - t0 > 300:
                raise TimeoutError("no result after restart")
            await asyncio.sleep(0.02)
        emitting = time.monotonic() - t0
        recovery_s = _recovery_seconds(dep.log(new))
        rss = rss_bytes(dep.workers[new].pid)
    finally:
        await tap.stop()
    rows = [
        row(
            "recovery", f"{label}: kill -9, fresh worker: spawn -> due index rebuilt", rebuilt, "s"
        ),
        row(
            "recovery",
            f"{label}: spawn -> emitting due jobs again",
            emitting,
            "s",
            noise=f"{recovered:,} jobs recovered",
        ),
    ]
    if recovery_s:
        rate = recovered / recovery_s
        rows.append(
            row(
                "recovery",
                f"{label}: schedules recovered per second "
                "(assignment -> tables restored, index rebuilt)",
                rate,
                "jobs/s",
                target=">= 100,000/s",
                met=rate >= 100_000,
                noise=f"{recovery_s:.2f}s from worker log timestamps",
            )
        )
    rows.append(
        row(
            "recovery",
            f"{label}: schedules recovered per second (spawn -> index rebuilt)",
            recovered / rebuilt,
            "jobs/s",
            target=">= 100,000/s",
            met=recovered / rebuilt >= 100_000,
        )
    )
    rows.append(row("recovery", f"{label}: RSS of the recovered worker", rss / 2**20, "MiB"))
    return rows


_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")


def _recovery_seconds(log: str) -> float | None:
    """From the partition assignment (or faust's "Restoring state") to our "due index
    rebuilt" line or the last table's "bulk-restored" line, whichever is later."""
    import datetime as dt

    start = end = None
    for line in log.splitlines():
        m = _TS.match(line)
        if not m:
            continue
        t = (
            dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            + int(m.group(2)) / 1000
        )
        # the assignment line starts both restore paths (faust's per-record recovery and
        # the bulk restore, which logs no "Restoring state" when nothing is left for faust)
        if start is None and (
            "Executing _on_partitions_assigned" in line
            or "Restoring state from changelog" in line
            or "Starting recovery" in line
        ):
            start = t
        # the due index rebuilt and every table restored (the bulk restore of a table can
        # finish after the jobs table's rebuild; streams resume only then)
        if "due index rebuilt" in line or "bulk-restored" in line:
            end = t if end is None else max(end, t)
    if start is None or end is None or end <= start:
        return None
    return end - start


# -- 1M schedules (seeded) and standby takeover ----------------------------------------------
async def bench_million(bootstrap: str, p: Profile, store: str = "memory://") -> list[Row]:
    """A worker recovering ``p.million_jobs`` schedules seeded into the changelogs: recovery
    speed, RSS per schedule and idle CPU at that size, then kill -9 and a restart with an
    empty data dir (with rocksdb:// too: everything comes from the changelogs)."""
    n = p.million_jobs
    dep = Deployment(bootstrap, store=store, env=dict(BENCH_ENV))
    await dep.create_topics()
    size = f"{n // 1000:,}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    tag = size if store == "memory://" else f"{size} {store.removesuffix('://')}"
    rows: list[Row] = []
    try:
        dep.start_worker("w0")  # an empty worker: the RSS baseline
        await wait_log(dep, "w0", READY, 120)
        rss0 = await _settled_rss(dep.workers["w0"].pid)
        dep.stop_worker("w0")
        secs = await seed_state(dep, n, "1h", policy=POLICY)
        rows.append(
            row(
                "million",
                f"{tag}: seed the changelogs (engine row encoders, raw aiokafka, no worker)",
                n / secs,
                "schedules/s",
            )
        )
        slot = _static_member(dep)
        t0 = time.monotonic()
        pid = dep.start_worker("w1", **slot)
        m = await wait_log(dep, "w1", READY, 600)
        rebuilt = time.monotonic() - t0
        if int(m.group(2)) != n:
            raise RuntimeError(f"{int(m.group(2)):,} jobs rebuilt, {n:,} seeded")
        # faust starts the streams once every table is restored (all "bulk-restored" logged)
        await wait_log(dep, "w1", re.compile(r"\[\^Worker\]: Ready"), 600)
        recovery_s = _recovery_seconds(dep.log("w1"))
        rss = await _settled_rss(pid, 10.0)
        if recovery_s:
            rate = n / recovery_s
            rows.append(
                row(
                    "million",
                    f"{tag}: first worker: schedules recovered per second "
                    "(assignment -> tables restored, index rebuilt)",
                    rate,
                    "jobs/s",
                    target=">= 100,000/s",
                    met=rate >= 100_000,
                    noise=f"{recovery_s:.2f}s; spawn -> rebuilt {rebuilt:.1f}s",
                )
            )
        if await _changelog_size(dep) != n:
            raise RuntimeError("the worker re-ingested the seeded connections")
        per = (rss - rss0) / n
        rows.append(row("million", f"{tag}: worker RSS", rss / 2**20, "MiB"))
        # rocksdb://: "well below" memory://'s target, taken here as at most half of it
        target = 512 if store == "memory://" else 256
        rows.append(
            row(
                "million",
                f"{size}: RSS per schedule, {store}",
                per,
                "bytes",
                target=f"<= {target} B",
                met=per <= target,
                noise=f"empty worker {rss0 / 2**20:.0f} MiB",
            )
        )
        idle = [await cpu_percent(pid, 5.0) for _ in range(3)]
        rows.append(
            row(
                "million",
                f"{tag}: idle worker CPU, nothing due",
                median(idle),
                "% core",
                target="<= 2%",
                met=median(idle) <= 2,
                noise=spread(idle),
            )
        )
        rows += await _recovery(dep, n, f"{tag}, same group.instance.id", "w1", "w2", **slot)
    finally:
        dep.stop_all()
    return rows


async def bench_standby(bootstrap: str, p: Profile) -> list[Row]:
    """Two workers with a standby replica of each other's tables; kill -9 one: seconds until
    every partition emits due jobs again (tracer jobs due every second on each partition)."""
    from databite_stream.stream.outbox import partition_for

    n = p.standby_jobs
    timeout_s = 10
    env = {"DATABITE_STANDBY_REPLICAS": "1", "DATABITE_SESSION_TIMEOUT_S": str(timeout_s)}
    dep = Deployment(bootstrap, env={**BENCH_ENV, **env})
    await dep.create_topics()
    await seed_state(dep, n, "1h", policy=POLICY)
    tap = await tap_results(dep)
    try:
        await start_workers(dep, 2)
        # 3 tracer connections per partition, found by the partitioner the engine uses
        per_part: dict[int, list[int]] = {q: [] for q in range(dep.partitions)}
        i = 20_000_000
        while any(len(v) < 3 for v in per_part.values()):
            q = partition_for(f"conn-{i:07d}".encode(), dep.partitions)
            if len(per_part[q]) < 3:
                per_part[q].append(i)
            i += 1
        ids = sorted(x for v in per_part.values() for x in v)
        await publish_catalog(dep, [echo_connections(1, "1s", start=x)[0] for x in ids])
        names = {f"conn-{x:07d}" for x in ids}
        deadline = time.monotonic() + 120
        while not names <= tap.last_start.keys():
            if time.monotonic() > deadline:
                raise TimeoutError("tracers never ran on every partition")
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)  # standbys catch up with the tracers' rows
        dep.stop_worker("w2", kill=True)
        killed = int(time.time() * 1000)
        first: dict[str, int] = {}
        deadline = time.monotonic() + 180
        while len(first) < len(names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(names) - len(first)} tracers never ran again")
            for name in names - first.keys():
                started = tap.last_start[name]
                if started > killed:
                    first[name] = started
            await asyncio.sleep(0.05)
        takeover = (max(first.values()) - killed) / 1000
    finally:
        await tap.stop()
        dep.stop_all()
    return [
        row(
            "standby",
            f"{n // 1000:,}k schedules, 2 workers, standby replicas 1: kill -9 one -> every "
            "partition emitting again",
            takeover,
            "s",
            target="<= 15 s",
            met=takeover <= 15,
            noise=f"session timeout {timeout_s}s (DATABITE_SESSION_TIMEOUT_S; default 30); "
            f"{len(names)} tracer jobs due every second",
        )
    ]


def median_of_runs(
    runs: list[tuple[list[Row], dict[str, Any]]],
) -> tuple[list[Row], dict[str, Any]]:
    """Rows whose values are the medians of the same rows of each run (an odd number), their
    spread and every run's value in the noise column; "met" by the median (for an odd number
    of runs, the median meets a bound exactly when most runs do). The samples (for the plot)
    are those of the run whose p99 lateness is the median."""
    if len(runs) == 1:
        return runs[0]
    assert len(runs) % 2 == 1, "an odd number of runs, so the median is one of them"
    first = runs[0][0]
    out: list[Row] = []
    for i, base in enumerate(first):
        values = [rows[i]["value"] for rows, _data in runs]
        mets = [rows[i]["met"] for rows, _data in runs]
        out.append(
            {
                **base,
                "value": median(values),
                "met": None if base["met"] is None else sum(bool(m) for m in mets) > len(runs) // 2,
                "noise": f"{spread(values)}: {', '.join(f'{v:,.0f}' for v in values)}"
                + (f"; first run: {base['noise']}" if base["noise"] else ""),
            }
        )
    p99 = next(i for i, r in enumerate(first) if r["benchmark"].endswith("lateness at start: p99"))
    by_p99 = sorted(runs, key=lambda run: run[0][p99]["value"])
    return out, by_p99[len(runs) // 2][1]


# -- main ---------------------------------------------------------------------------------------
SECTIONS = (
    "ceiling",
    "throughput",
    "precision",
    "precision-heavy",
    "scale",
    "recovery",
    "standby",
    "million",
    "million-rocksdb",
)


async def run(bootstrap: str, kafka: str, p: Profile, only: set[str]) -> list[Row]:
    facts = machine_facts(bootstrap, kafka)
    rows: list[Row] = []
    notes: list[str] = [
        f"profile {p.name}; every figure is the median of the repeats shown in 'noise' "
        "(single-run figures say '1 run')",
        "broker, worker(s) and this driver share the same cores: absolute figures are "
        "lower bounds for a dedicated machine; ratios are measured in the same run",
        f"worker settings: {BENCH_ENV}; worker source: {SRC}",
    ]
    extra: dict[str, Any] = {}
    t_start = time.monotonic()
    relay = float("nan")
    if "ceiling" in only or "throughput" in only:
        r, relay = await bench_ceiling(bootstrap, p)
        rows += r
        print_table(rows)
    if "throughput" in only:
        for w in p.throughput_workers:
            rows += await bench_throughput(bootstrap, p, w, relay)
            print_table(rows[-3:])

    def precision(r: list[Row], data: dict[str, Any], name: str) -> None:
        rows.extend(r)
        print_table(r)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        png = RESULTS_DIR / f"lateness-{p.name}-{name}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        notes.append(
            plot_lateness(data["precision_samples"], data["window"], png, data["target_ms"])
        )

    if "precision" in only:
        for n, every in p.precision_runs:
            precision(*await bench_precision(bootstrap, p, n, every), f"{n}-jobs")
    if "precision-heavy" in only:
        for n, every, workers in p.precision_heavy:
            runs = [
                await bench_precision(bootstrap, p, n, every, workers=workers, seeded=True)
                for _ in range(p.precision_heavy_runs)
            ]
            precision(*median_of_runs(runs), f"{n}-jobs-{workers}-workers")
    if "scale" in only or "recovery" in only:
        for store in p.stores:
            try:
                r = await bench_scale(
                    bootstrap, p, store, recovery="recovery" in only and store == "memory://"
                )
            except Exception as exc:  # rocksdb may be unavailable: report, don't hide
                notes.append(f"scale with {store} failed: {type(exc).__name__}: {exc}"[:500])
                continue
            rows += r
            print_table(r)
    if "standby" in only and p.standby_jobs:
        r = await bench_standby(bootstrap, p)
        rows += r
        print_table(r)
    if "million" in only and p.million_jobs:
        r = await bench_million(bootstrap, p)
        rows += r
        print_table(r)
    if "million-rocksdb" in only and p.million_jobs:
        r = await bench_million(bootstrap, p, "rocksdb://")
        rows += r
        print_table(r)
    notes.append(f"total wall time {time.monotonic() - t_start:.0f}s")
    js, md = write_report(f"bench_stream-{p.name}", rows, facts, notes, **extra)
    print_table(rows)
    print("\n" + "\n".join(f"- {n}" for n in notes))
    print(f"\nwrote {js} and {md}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the < 10 minute profile")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="DATABITE_X=V",
        help="extra worker setting for an A/B run (repeatable)",
    )
    parser.add_argument(
        "--waves", type=int, default=None, help="measured throughput waves (repeats)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="throughput waves run first and reported apart (the broker JIT warms up)",
    )
    args = parser.parse_args()
    for item in args.worker_env:
        key, _, value = item.partition("=")
        BENCH_ENV[key] = value
    from benchmarks.common import broker

    p = QUICK if args.quick else FULL
    if args.waves:
        p = dataclasses.replace(p, throughput_waves=args.waves)
    if args.warmup is not None:
        p = dataclasses.replace(p, throughput_warmup=args.warmup)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C: workers and broker are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with broker() as (bootstrap, kafka):
        asyncio.run(run(bootstrap, kafka, p, only))


if __name__ == "__main__":
    main()
