"""Shared helpers of the stream benchmarks: broker, worker processes, fast publishing, reports.

Nothing here is timed by itself. A benchmark gets a broker (``DATABITE_BROKER`` or a fresh local
one, started with the JIT fully on), starts real worker processes exactly as the integration
tests do (``python -m databite_stream.cli worker`` + ``DATABITE_*``), publishes connections with
raw aiokafka in batches, reads ``databite.results`` with a raw consumer (orjson, no pydantic),
and writes its table as JSON and markdown into ``benchmarks/results/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from databite_stream.admin import create_topics
from databite_stream.models import Connection
from databite_stream.schedule import Policy, job_id
from databite_stream.settings import Settings
from databite_stream.testing.fixtures import echo_connection, echo_integration
from databite_stream.topics import CONNECTIONS, INTEGRATIONS, RESULTS, changelog_topic

REPO = Path(__file__).resolve().parents[1]
#: source tree the workers run from (``--src``): the repo, or e.g. a ``git archive`` snapshot
#: to A/B a change or to keep measuring while the working tree is being edited
SRC = Path(os.environ.get("BENCH_SRC", str(REPO))).resolve()
RESULTS_DIR = REPO / "benchmarks" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# -- facts and statistics ------------------------------------------------------------------
def machine_facts(bootstrap: str, kafka_version: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    load = os.getloadavg()

    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu or platform.processor(),
        "memory_gb": round(mem_gb, 1),
        "load_avg_at_start": [round(x, 2) for x in load],
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka_version,
        "broker": bootstrap,
        "faust-streaming": ver("faust-streaming"),
        "aiokafka": ver("aiokafka"),
        "pydantic": ver("pydantic"),
        "orjson": ver("orjson"),
        "rocksdict": ver("rocksdict"),
        "databite-stream": ver("databite-stream"),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``min..max`` of the repeats, for the noise column."""
    if len(values) < 2:
        return "1 run"
    return f"{min(values):,.0f}..{max(values):,.0f} (n={len(values)})"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# -- broker ---------------------------------------------------------------------------------
@contextlib.contextmanager
def broker() -> Iterator[tuple[str, str]]:
    """(bootstrap, kafka version): ``DATABITE_BROKER`` if set, else a local node we own."""
    external = os.environ.get("DATABITE_BROKER")
    if external:
        yield external, os.environ.get("DATABITE_KAFKA_VERSION", "external (unknown)")
        return
    from databite_stream.devkafka import KafkaCluster

    cluster = KafkaCluster(nodes=1, fast_jit=False, heap="1g").start()
    print(f"# local Kafka {cluster.version} at {cluster.bootstrap} ({cluster.start_seconds:.1f}s)")
    try:
        yield cluster.bootstrap, cluster.version
    finally:
        cluster.stop()


# -- a databite deployment on the broker ------------------------------------------------------
@dataclass
class Deployment:
    """One databite deployment (unique app id and topic prefix) and its worker processes."""

    bootstrap: str
    partitions: int = 8
    store: str = "memory://"
    env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="databite-bench-")))
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return Settings(
            broker=self.bootstrap,
            app_id=self.prefix,
            topic_prefix=self.prefix,
            partitions=self.partitions,
        )

    def topic(self, spec: Any) -> str:
        return str(spec.name(self.settings))

    def changelog(self, table: str) -> str:
        return changelog_topic(self.settings, table)

    async def create_topics(self) -> None:
        _created, problems = await create_topics(self.settings)
        if problems:
            raise RuntimeError(f"topic problems: {problems}")

    def start_worker(self, name: str = "w1", *, command: Sequence[str] = (), **env: str) -> int:
        """Start a worker process (``command`` replaces ``python -m databite_stream.cli
        worker``, e.g. to run it under a profiler); return its pid."""
        data = self.tmp / name
        data.mkdir(parents=True, exist_ok=True)
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DATABITE_")},
            "DATABITE_BROKER": self.bootstrap,
            "DATABITE_APP_ID": self.prefix,
            "DATABITE_TOPIC_PREFIX": self.prefix,
            "DATABITE_PARTITIONS": str(self.partitions),
            "DATABITE_DATA_DIR": str(data),
            "DATABITE_STORE": self.store,
            "DATABITE_WEB_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join(
                [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **self.env,
            **env,
        }
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            list(command) or [sys.executable, "-m", "databite_stream.cli", "worker"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=SRC,
        )
        self.workers[name] = proc
        atexit.register(_kill_if_alive, proc)  # never leave a worker behind a crashed bench
        return proc.pid

    def log(self, name: str = "w1") -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_worker(self, name: str, *, kill: bool = False) -> None:
        proc = self.workers.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)


def _kill_if_alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# -- process facts (from /proc: no extra dependency) ----------------------------------------
def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of ``pid`` (and its reaped children: none here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def cpu_percent(pid: int, seconds: float) -> float:
    before, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)


# -- publishing -----------------------------------------------------------------------------
def producer(bootstrap: str, **kw: Any) -> AIOKafkaProducer:
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
    }
    opts.update(kw)
    return AIOKafkaProducer(**opts)


async def produce_many(
    bootstrap: str, topic: str, items: Sequence[tuple[bytes | None, bytes | None]], **kw: Any
) -> float:
    """Send ``items`` with futures awaited in chunks; return seconds taken."""
    prod = producer(bootstrap, **kw)
    await prod.start()
    try:
        t0 = time.perf_counter()
        pending = []
        for key, value in items:
            pending.append(await prod.send(topic, value=value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - t0
    finally:
        await prod.stop()


def echo_connections(
    n: int, schedule: str, *, start: int = 0, integration_id: str = "int-echo"
) -> list[tuple[bytes, bytes]]:
    """``n`` echo connections with no-op syncs (``record_count: 0``) and ``schedule``; one
    job each (echo has one sync, ``records``), each with its own key (:func:`echo_key`)."""
    template = echo_connection(id="conn-X", integration_id=integration_id, record_count=0)
    doc = orjson.loads(template.model_dump_json())
    doc["sync_interval"] = schedule
    items = []
    for i in range(start, start + n):
        doc["id"] = f"conn-{i:07d}"
        doc["config"]["api_key"] = echo_key(i)
        items.append((doc["id"].encode(), orjson.dumps(doc)))
    return items


def echo_key(i: int) -> str:
    """Connection ``i``'s secret. Distinct per connection, as real tokens are: with one
    shared config the executor's per-config redactor memo hit on every run, which a
    deployment with more connections than the memo holds (16,384) never sees."""
    return f"echo-key-{i:07d}"


async def seed_state(
    dep: Deployment,
    n: int,
    schedule: str,
    *,
    start: int = 0,
    policy: Policy | None = None,
    spread: bool = False,
    first_after_s: float = 0.0,
) -> float:
    """Write what a deployment holding ``n`` echo connections leaves in Kafka, without a
    worker: the connections (input topic, offsets committed for the worker group), the
    connections table changelog and the jobs table changelog, each record on the partition
    the engine would use, encoded by the engine's own row functions. Return seconds taken.

    Live ingest runs at ~1,000 connections/s on the reference VM (1M would take 17 min);
    this takes seconds, so the 1M figures (memory, idle CPU, recovery) are affordable. A
    worker started afterwards must report ``n`` jobs rebuilt (checked by the caller).

    Every job gets the first job's row (one due time for all) unless ``spread``: then each
    job's first run is computed for it (a schedule with jitter spreads them; ~10 µs a job),
    as of ``first_after_s`` from now: first runs that fall due while the workers start and
    recover would all run at once when they are up, a catch-up wave rather than the steady
    state a precision run measures."""
    from databite_stream.catalog import plan_connection
    from databite_stream.connectors import default_registry
    from databite_stream.schedule import create_job, parse_schedule
    from databite_stream.stream.outbox import partition_for
    from databite_stream.stream.rows import ConnectionRow, JobRow, encode_job_row

    settings = dep.settings
    (_key0, doc0) = echo_connections(1, schedule, start=start)[0]
    conn0 = Connection.model_validate_json(doc0)
    (planned,) = plan_connection(
        conn0, echo_integration(), default_registry(), default_schedule=settings.default_interval
    )
    now = int(time.time() * 1000)
    first = now + int(first_after_s * 1000)
    spec = parse_schedule(planned.schedule)
    pol = policy or Policy()
    state0 = create_job(conn0.id, planned.sync_name, spec, first, pol)  # anchor: as below
    conn_row0 = orjson.loads(ConnectionRow(0, conn0, (planned.job_id,)).encode())
    job_row0 = orjson.loads(encode_job_row(JobRow(0, state0)))
    doc = orjson.loads(doc0)
    topics = (dep.topic(CONNECTIONS), dep.changelog("connections"), dep.changelog("jobs"))
    integ = echo_integration()
    await produce_many(
        dep.bootstrap,
        dep.topic(INTEGRATIONS),
        [(integ.id.encode(), integ.model_dump_json().encode())],
    )
    prod = producer(dep.bootstrap)
    await prod.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for i in range(start, start + n):
            cid = f"conn-{i:07d}"
            jid = job_id(cid, planned.sync_name)
            part = partition_for(cid.encode(), dep.partitions)
            doc["id"] = cid
            conn_row0[1], conn_row0[2] = part, cid  # format 2: [2, p, id, ...]
            doc["config"]["api_key"] = conn_row0[5]["api_key"] = echo_key(i)  # [.., config, ..]
            job_row0[1] = part  # format 3: [3, p, schedule, anchor, next, ...] (key: job id)
            if spread:
                job_row0[4] = create_job(cid, planned.sync_name, spec, first, pol).next_run_ms
            for topic, key, value in (
                (topics[0], cid.encode(), orjson.dumps(doc)),
                (topics[1], orjson.dumps(cid), orjson.dumps(conn_row0)),
                (topics[2], orjson.dumps(jid), orjson.dumps(job_row0)),
            ):
                pending.append(await prod.send(topic, value=value, key=key, partition=part))
            if len(pending) >= 15_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    # the worker group has consumed the input topic: commit its end offsets
    consumer = AIOKafkaConsumer(
        bootstrap_servers=dep.bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topics[0], p) for p in range(dep.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit({tp: ends[tp] for tp in parts})
    finally:
        await consumer.stop()
    return time.perf_counter() - t0


async def publish_catalog(dep: Deployment, connections: Sequence[tuple[bytes, bytes]]) -> float:
    integ = echo_integration()
    await produce_many(
        dep.bootstrap,
        dep.topic(INTEGRATIONS),
        [(integ.id.encode(), integ.model_dump_json().encode())],
    )
    return await produce_many(dep.bootstrap, dep.topic(CONNECTIONS), connections)


async def end_offsets_total(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        offsets = await consumer.end_offsets(tps) if tps else {}
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


async def wait_for_offsets(
    bootstrap: str, topic: str, target: int, timeout: float, *, poll: float = 0.5
) -> float | None:
    """Seconds until ``topic`` holds ``target`` messages, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await end_offsets_total(bootstrap, topic) >= target:
            return time.monotonic() - t0
        await asyncio.sleep(poll)
    return None


# -- reading results ------------------------------------------------------------------------
@dataclass
class ResultTap:
    """Reads ``databite.results`` in the background: (scheduled, started, finished, seen) ms."""

    bootstrap: str
    topic: str
    rows: list[tuple[int, int, int, int]] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    failures: int = 0
    #: connection id -> started_at_ms of its latest result
    last_start: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            seen = int(time.time() * 1000)
            for records in batches.values():
                for rec in records:
                    if rec.value is None:
                        continue
                    d = orjson.loads(rec.value)
                    if d["run_id"] in self.run_ids:
                        self.duplicates += 1
                        continue
                    self.run_ids.add(d["run_id"])
                    if not d["success"]:
                        self.failures += 1
                    self.last_start[d["connection_id"]] = d["started_at_ms"]
                    self.rows.append(
                        (
                            d.get("scheduled_for_ms") or 0,
                            d["started_at_ms"],
                            d["finished_at_ms"],
                            seen,
                        )
                    )

    def pause(self) -> None:
        """Stop fetching (the loop keeps polling, fetching nothing) until :meth:`catch_up`.
        The results carry their own start and scheduled times, so reading them later gives
        the same figures, without this process taking CPU from the workers meanwhile."""
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())

    async def catch_up(self, timeout: float) -> bool:
        """Fetch again and wait until every result published so far has been read."""
        consumer = self._consumer
        assert consumer is not None
        parts = consumer.assignment()
        consumer.resume(*parts)
        ends = await consumer.end_offsets(list(parts))
        t0 = time.monotonic()
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                if time.monotonic() - t0 > timeout:
                    return False
                await asyncio.sleep(0.1)
        return True

    async def wait_count(self, n: int, timeout: float) -> bool:
        t0 = time.monotonic()
        while len(self.rows) < n:
            if time.monotonic() - t0 > timeout:
                return False
            await asyncio.sleep(0.1)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def tap_results(dep: Deployment) -> ResultTap:
    tap = ResultTap(dep.bootstrap, dep.topic(RESULTS))
    await tap.start()
    return tap


# -- reports --------------------------------------------------------------------------------
Row = dict[str, Any]  # section, benchmark, value, unit, ratio, target, met, noise


def row(
    section: str,
    name: str,
    value: float,
    unit: str,
    *,
    ratio: str = "",
    target: str = "",
    met: bool | None = None,
    noise: str = "",
) -> Row:
    return {
        "section": section,
        "benchmark": name,
        "value": value,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "met": met,
        "noise": noise,
    }


def _fmt(value: float) -> str:
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _met(m: bool | None) -> str:
    return "" if m is None else ("met" if m else "MISSED")


def print_table(rows: Sequence[Row]) -> None:
    width = max((len(r["benchmark"]) for r in rows), default=10)
    print(f"\n{'benchmark':<{width}}  {'median':>12}  {'unit':<8}  {'ratio':<22}  target")
    print("-" * (width + 80))
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            print(f"[{section}]")
        target = f"{r['target']} {_met(r['met'])}".strip()
        print(
            f"{r['benchmark']:<{width}}  {_fmt(r['value']):>12}  {r['unit']:<8}  "
            f"{r['ratio']:<22}  {target}"
        )


def markdown(rows: Sequence[Row], facts: dict[str, Any], title: str, notes: Sequence[str]) -> str:
    out = [f"# {title}", ""]
    out.append("| section | benchmark | median | unit | ratio to baseline | target | met | noise |")
    out.append("|---|---|---:|---|---|---|---|---|")
    for r in rows:
        out.append(
            f"| {r['section']} | {r['benchmark']} | {_fmt(r['value'])} | {r['unit']} | "
            f"{r['ratio']} | {r['target']} | {_met(r['met'])} | {r['noise']} |"
        )
    out += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), ""]
    out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def write_report(
    name: str, rows: Sequence[Row], facts: dict[str, Any], notes: Sequence[str], **extra: Any
) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    js = RESULTS_DIR / f"{name}-{stamp}.json"
    md = RESULTS_DIR / f"{name}-{stamp}.md"
    payload = {"name": name, "facts": facts, "rows": list(rows), "notes": list(notes), **extra}
    js.write_text(json.dumps(payload, indent=2, default=str))
    md.write_text(markdown(rows, facts, name, notes))
    for link, target in ((f"{name}-latest.json", js), (f"{name}-latest.md", md)):
        path = RESULTS_DIR / link
        path.unlink(missing_ok=True)
        path.write_text(target.read_text())
    return js, md
