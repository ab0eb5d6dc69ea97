"""Benchmark of the pure scheduling core: next-run maths and the due index.

Prints one table: next-run computations per second (croniter as a naive engine would call it,
our uncached cron path, our cached cron path, intervals), due-index upserts/pops per second and
bytes per entry at 1,000,000 entries (tracemalloc), the cost of an idle tick (``peek`` on a
full index), and the scheduler's pure work per run (decode a job row, plan the run, encode the
row, record the run's completion, encode it again: what a worker does per run besides Kafka
and the executor), and the executor's own work for one no-op sync run (``Executor.run_sync``
of the echo connector with 0 records: validation, redaction, the attempt's timeout, the
result; no Kafka). Each figure is the median of several repeats; ratios are against the croniter
baseline measured in the same run. Run: ``.venv/bin/python benchmarks/bench_schedule.py``
(``--quick`` for a smoke run with smaller sizes).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import uvloop
from croniter import croniter

from databite_stream.connectors.echo import echo_connector
from databite_stream.execution import Executor
from databite_stream.models import Connection, Integration, SyncBatch
from databite_stream.schedule import (
    DueIndex,
    FirstRun,
    Policy,
    create_job,
    next_run_after,
    on_run_finished,
    parse_schedule,
    plan_due,
)
from databite_stream.schedule.cron import CronRule, compiled_cron
from databite_stream.stream.rows import JobRow, decode_job_row, encode_job_row

T0 = 1_700_000_000_000
Row = tuple[str, float, str, str]  # name, value, unit, target/ratio


def median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Median operations per second of ``fn`` (which returns its operation count)."""
    rates = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        ops = fn()
        rates.append(ops / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_next_run(n: int, repeats: int) -> list[Row]:
    expr = "0 * * * *"
    spec = parse_schedule(expr, tz="Europe/Berlin")
    jittered = parse_schedule(expr, tz="Europe/Berlin", jitter_ms=300_000)
    interval = parse_schedule("15m")
    assert isinstance(spec.rule, CronRule)
    compiled = compiled_cron(spec.rule, spec.tz)
    jobs = [f"conn-{i}/messages" for i in range(1000)]

    def cold_croniter() -> int:
        for i in range(n // 20):
            croniter(expr, (T0 + i * 997_000) / 1000).get_next(float)
        return n // 20

    def ours_uncached() -> int:
        for i in range(n // 20):
            compiled.next_after_uncached(T0 + i * 997_000)
        return n // 20

    def ours_cached() -> int:
        # many jobs on one cron, each asking for its next run after its previous one
        t = T0
        for i in range(n):
            t2 = next_run_after(spec, t)
            if i % 1000 == 999:
                t = t2 or t
        return n

    def ours_cached_jitter() -> int:
        t = T0
        for i in range(n):
            job = jobs[i % 1000]
            next_run_after(jittered, t, job_id=job)
            if i % 1000 == 999:
                t += 3_600_000
        return n

    def ours_interval() -> int:
        for i in range(n):
            next_run_after(interval, T0 + i * 1000, anchor_ms=T0 - i)
        return n

    base = median_rate(cold_croniter, repeats)
    rows: list[Row] = [
        ("next run: croniter, new iterator per call (baseline)", base, "ops/s", "1.0x")
    ]
    for name, fn, target in [
        ("next run: our cron, uncached (DST-aware)", ours_uncached, ""),
        ("next run: our cron, cached, 1 cron shared by jobs", ours_cached, ">= 200k"),
        ("next run: our cron, cached + per-job jitter", ours_cached_jitter, ">= 200k"),
        ("next run: interval (fixed-rate grid)", ours_interval, ""),
    ]:
        rate = median_rate(fn, repeats)
        note = f"{rate / base:.0f}x" + (f", target {target}" if target else "")
        rows.append((name, rate, "ops/s", note))
    return rows


def bench_index(n: int, repeats: int) -> list[Row]:
    ids = [f"conn-{i:07d}/messages" for i in range(n)]
    times = [T0 + (i * 7_919) % 3_600_000 for i in range(n)]

    def fill() -> DueIndex:
        index = DueIndex()
        for j, t in zip(ids, times, strict=True):
            index.upsert(j, t)
        return index

    upserts: list[float] = []
    reschedules: list[float] = []
    pops: list[float] = []
    peeks: list[float] = []
    mem: list[float] = []
    mem_with_ids: list[float] = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        index = fill()
        upserts.append(n / (time.perf_counter() - start))

        # superseding upserts on a full index (the steady state: a run re-arms its job)
        k = n // 4
        start = time.perf_counter()
        for j, t in zip(ids[:k], times[:k], strict=True):
            index.upsert(j, t + 3_600_000)
        reschedules.append(k / (time.perf_counter() - start))

        # idle tick: peek on a full index
        m = 200_000
        peek = index.peek_next_ms
        start = time.perf_counter_ns()
        for _ in range(m):
            peek()
        peeks.append((time.perf_counter_ns() - start) / m)

        start = time.perf_counter()
        popped = 0
        while True:
            batch = index.pop_due(T0 + 10_000_000, 1000)
            if not batch:
                break
            popped += len(batch)
        pops.append(popped / (time.perf_counter() - start))
        del index

        # memory: index structures only (ids already exist in the schedules table) ...
        gc.collect()
        tracemalloc.start()
        index = fill()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        mem.append(current / n)
        del index
        # ... and including freshly allocated id strings, as after a rebuild from bytes
        gc.collect()
        tracemalloc.start()
        fresh = [(f"conn-{i:07d}/messages", t) for i, t in enumerate(times)]
        index = DueIndex.from_items(fresh)
        del fresh
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        mem_with_ids.append(current / n)
        del index

    med = statistics.median
    return [
        (f"due index: upsert into empty (n={n:,})", med(upserts), "ops/s", "target >= 500k"),
        (
            "due index: superseding upsert on full index",
            med(reschedules),
            "ops/s",
            "target >= 500k",
        ),
        (
            "due index: pop_due, live entries (+25% stale skipped)",
            med(pops),
            "ops/s",
            "target >= 500k",
        ),
        ("due index: memory per entry (ids not counted)", med(mem), "bytes", "target <= 200"),
        ("due index: memory per entry incl. 24-char ids", med(mem_with_ids), "bytes", ""),
        (f"idle tick: peek_next_ms on {n:,} entries", med(peeks), "ns", "target < 1000"),
    ]


def bench_run_transitions(n: int, repeats: int) -> list[Row]:
    """Per run: decode the job's row, ``plan_due``, encode, ``on_run_finished``, encode, for
    ``n`` jobs of distinct connections (a worker's share of 100,000 is 50,000: caches in
    front of the row codec must not be what makes the figure)."""
    policy = Policy(first_run=FirstRun.GRID)
    spec = parse_schedule("10s")
    rows = []
    for i in range(n):
        state = create_job(f"conn-{i:06d}", "records", spec, T0, policy)
        rows.append((encode_job_row(JobRow(3, state)), state.job_id))
    at = T0 + 20_000

    def one_round() -> int:
        for raw, key in rows:
            row = decode_job_row(raw, key)
            state, runs = plan_due(row.state, at, policy)
            encode_job_row(JobRow(3, state))
            for run in runs:
                done, _ = on_run_finished(state, run.run_id, True, at + 5, policy)
                encode_job_row(JobRow(3, done))
        return n

    rate = median_rate(one_round, repeats)
    return [(f"scheduler: one run's transitions + row codec (n={n:,})", 1e6 / rate, "µs", "")]


def bench_executor_run(n: int, repeats: int) -> list[Row]:
    """Per run: ``Executor.run_sync`` of a no-op echo sync, awaited one after another on the
    event loop the worker uses by default (uvloop): the executor's share of a worker's
    per-run CPU in the 10,000 runs/s case, without Kafka or the stream layer around it."""
    connection = Connection(
        id="conn-000001",
        integration_id="int-1",
        connector_id=echo_connector.id,
        config={"api_key": "k-123456", "record_count": 0},
    )
    integration = Integration(id="int-1", name="Echo", connector_id=echo_connector.id)

    async def on_batch(_batch: SyncBatch) -> None:
        return None

    async def rounds() -> list[float]:
        rates = []
        async with Executor() as executor:
            for _ in range(repeats):
                started = time.perf_counter()
                for i in range(n):
                    result = await executor.run_sync(
                        echo_connector,
                        "records",
                        connection,
                        integration,
                        run_id=f"conn-000001/records@{i}",
                        on_batch=on_batch,
                        job_id="conn-000001/records",
                        scheduled_for_ms=i,
                    )
                    if not result.success:
                        raise RuntimeError(f"the no-op run failed: {result.error}")
                rates.append(n / (time.perf_counter() - started))
        return rates

    rates = uvloop.run(rounds())
    rate = statistics.median(rates)
    return [(f"executor: one no-op sync run, run_sync (n={n:,})", 1e6 / rate, "µs", "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (median)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    n_next = 20_000 if args.quick else 200_000
    n_index = 100_000 if args.quick else 1_000_000

    rows = (
        bench_next_run(n_next, repeats)
        + bench_index(n_index, repeats)
        + bench_run_transitions(20_000 if args.quick else 50_000, repeats)
        + bench_executor_run(10_000 if args.quick else 50_000, repeats)
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>14}  {'unit':<6}  note")
    print("-" * (width + 40))
    for name, value, unit, note in rows:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
        print(f"{name:<{width}}  {shown:>14}  {unit:<6}  {note}")
    print(f"\n(median of {repeats} repeats; index n={n_index:,}; next-run n={n_next:,})")


if __name__ == "__main__":
    main()
