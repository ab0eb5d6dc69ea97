"""Shared machinery of the fault suite: live topic tails, run accounting, figures, secret scans.

Every wait is a deadline (``wait_for``); figures are computed from what landed on Kafka, never
from what the test believes it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from databite_stream.models import Connection, ExecutionResult, Integration
from tests.helpers import unique_name

__all__ = (
    "LEDGER",
    "Accounting",
    "SecretScan",
    "TopicTail",
    "account_runs",
    "echo_connection",
    "echo_integration",
    "now_ms",
    "planted_secret",
    "scan_for_secrets",
    "summary",
)

#: One line per scenario (printed and collected for RESULTS.md), and every secret scan made.
LEDGER: dict[str, list[Any]] = {"summaries": [], "scans": []}

#: Environment of every load worker in the suite: run_all + no grace + overlap=allow makes every
#: grid time a run (a late time is caught up, and a time that falls while the previous run is
#: still in flight on a dead worker is emitted too, not skipped), so "every scheduled time has
#: a result" can be checked exactly. With the defaults (run_once, overlap=skip) the grid times
#: that fall during a fail-over are collapsed/skipped by design.
STRICT_POLICY = {
    "DATABITE_MISFIRE": "run_all",
    "DATABITE_OVERLAP": "allow",
    "DATABITE_MISFIRE_GRACE_S": "0",
    "DATABITE_CATCH_UP_MAX": "200",
    "DATABITE_CATCH_UP_WINDOW_S": "3600",
    "DATABITE_SESSION_TIMEOUT_S": "8",
    "DATABITE_LOG_LEVEL": "info",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def planted_secret(kind: str = "sk") -> str:
    """A distinctive secret value; scans look for it verbatim."""
    return f"{kind}-PLANTED-{unique_name('s')}"


def echo_integration(iid: str = "int-echo") -> Integration:
    return Integration(id=iid, name="Echo", connector_id="echo", config={})


def echo_connection(cid: str, schedule: str, secret: str, iid: str = "int-echo") -> Connection:
    return Connection(
        id=cid,
        integration_id=iid,
        connector_id="echo",
        config={"api_key": secret, "record_count": 2, "batch_size": 2},
        schedules={"records": schedule},
    )


class TopicTail:
    """A consumer outside any group that keeps reading ``topics`` from the beginning.

    It survives broker restarts (aiokafka reconnects by itself); ``records`` only grows.
    """

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicTail:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=2000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200)
            except asyncio.CancelledError:
                raise
            except Exception:  # broker away: aiokafka reconnects; keep polling
                await asyncio.sleep(0.2)
                continue
            for msgs in batch.values():
                self.records.extend(msgs)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    def values(self) -> list[bytes]:
        return [r.value for r in self.records if r.value is not None]

    def results(self) -> list[ExecutionResult]:
        return [ExecutionResult.model_validate_json(v) for v in self.values()]


@dataclass
class Accounting:
    """What the results topic says about a set of interval jobs over a window."""

    expected: int = 0  # grid times in the checked window
    seen: int = 0  # results (all, including duplicates)
    distinct: int = 0  # distinct run ids
    duplicates: list[str] = field(default_factory=list)  # run ids with more than one result
    lost: list[str] = field(default_factory=list)  # grid times in the window with no result
    off_grid: list[str] = field(default_factory=list)  # results not on the job's grid
    silent: list[str] = field(default_factory=list)  # connections with no result at all
    failed: int = 0  # results with success=False
    max_late_s: float = 0.0  # worst started_at - scheduled_for

    def line(self) -> str:
        return (
            f"expected={self.expected} results={self.seen} distinct={self.distinct} "
            f"duplicates={len(self.duplicates)} lost={len(self.lost)} "
            f"off_grid={len(self.off_grid)} failed={self.failed} "
            f"max_late={self.max_late_s:.1f}s"
        )


def account_runs(
    results: Iterable[ExecutionResult],
    connections: Sequence[str],
    interval_ms: int,
    *,
    until_ms: int,
) -> Accounting:
    """Check every grid time ``anchor + k*interval <= until_ms`` of each connection's job.

    The anchor is the job's first scheduled time (first run is immediate, at creation). A grid
    time is lost if no result carries it; a run id with two results is a duplicate.
    """
    acc = Accounting()
    by_conn: dict[str, list[ExecutionResult]] = defaultdict(list)
    for r in results:
        by_conn[r.connection_id].append(r)
        acc.seen += 1
    ids = Counter(r.run_id for rs in by_conn.values() for r in rs)
    acc.distinct = len(ids)
    acc.duplicates = sorted(k for k, n in ids.items() if n > 1)
    for cid in connections:
        rs = by_conn.get(cid, [])
        if not rs:
            acc.silent.append(cid)
            continue
        acc.failed += sum(1 for r in rs if not r.success)
        times = {r.scheduled_for_ms or 0 for r in rs}
        anchor = min(times)
        for r in rs:
            acc.max_late_s = max(
                acc.max_late_s, (r.started_at_ms - (r.scheduled_for_ms or 0)) / 1e3
            )
            if ((r.scheduled_for_ms or 0) - anchor) % interval_ms:
                acc.off_grid.append(r.run_id)
        point = anchor
        while point <= until_ms:
            acc.expected += 1
            if point not in times:
                acc.lost.append(f"{cid}@{point}")
            point += interval_ms
    return acc


def duplicates_outside(
    results: Iterable[ExecutionResult],
    duplicates: Sequence[str],
    faults_ms: Sequence[int],
    window_ms: int,
) -> list[str]:
    """Duplicated run ids whose first result was NOT published in the ``window_ms`` before a
    fault (kill -9, broker loss): those cannot be explained by the at-least-once window."""
    first: dict[str, int] = {}
    for r in results:
        first[r.run_id] = min(first.get(r.run_id, 1 << 62), r.finished_at_ms)
    return [
        d for d in duplicates if not any(f - window_ms <= first[d] <= f + 1000 for f in faults_ms)
    ]


def recovery_seconds(
    results: Iterable[ExecutionResult], connections: Sequence[str], fault_ms: int
) -> float:
    """Seconds from ``fault_ms`` until every connection had finished a run scheduled after it."""
    first: dict[str, int] = {}
    for r in results:
        if (r.scheduled_for_ms or 0) > fault_ms:
            first[r.connection_id] = min(first.get(r.connection_id, 1 << 62), r.finished_at_ms)
    if any(c not in first for c in connections):
        return float("inf")
    return max(first[c] for c in connections) / 1e3 - fault_ms / 1e3


def summary(test: str, **figures: object) -> str:
    """Print and keep the one-line summary of a scenario."""
    parts = " ".join(f"{k}={v}" for k, v in figures.items())
    line = f"[faults] {test}: {parts}"
    print("\n" + line)
    LEDGER["summaries"].append(line)
    return line


# -- secrets ---------------------------------------------------------------------------------

#: Topic suffixes that legitimately carry connection/integration configs, so they are not
#: scanned: the two compacted inputs (upstream publishes the configs there, and token refresh
#: republishes the connection), the internal work topic (each DueJob/ActionWork carries the
#: connection snapshot the executor needs) and the connections table's changelog (its rows
#: hold the connection).
EXCLUDED_SUFFIXES = (".connections", ".integrations", ".internal.work", "-connections-changelog")


@dataclass
class SecretScan:
    label: str
    topics: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    messages: int = 0
    files: list[str] = field(default_factory=list)
    http_bodies: int = 0
    hits: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"scanned {len(self.topics)} topics/{self.messages} messages, "
            f"{len(self.files)} logs, {self.http_bodies} HTTP bodies; "
            f"excluded {len(self.excluded)} topics; hits={len(self.hits)}"
        )


def _logs(log_dir: Path | None) -> list[tuple[str, bytes]]:
    """Every worker log (``*.log``) under ``log_dir``, with its bytes."""
    if log_dir is None:
        return []
    return [(str(p), p.read_bytes()) for p in sorted(log_dir.glob("*.log"))]


async def scan_for_secrets(
    label: str,
    bootstrap: str,
    prefixes: Sequence[str],
    secrets: Iterable[str],
    *,
    log_dir: Path | None = None,
    http_bodies: Iterable[bytes] = (),
) -> SecretScan:
    """Look for every secret in every topic of ``prefixes`` (but the excluded ones), in the
    given logs and HTTP bodies. Records the scan in the ledger and returns it."""
    needles = [s.encode() for s in secrets if s]
    scan = SecretScan(label)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        names = sorted(await admin.list_topics())
    finally:
        await admin.close()
    mine = [t for t in names if any(t.startswith(p) for p in prefixes)]
    scan.excluded = [t for t in mine if t.endswith(EXCLUDED_SUFFIXES)]
    scan.topics = [t for t in mine if t not in scan.excluded]
    if scan.topics:
        from tests.helpers import consume_all

        for rec in await consume_all(bootstrap, scan.topics, timeout=60):
            scan.messages += 1
            blob = (rec.key or b"") + b"\x00" + (rec.value or b"")
            for n in needles:
                if n in blob:
                    scan.hits.append(f"topic {rec.topic}[{rec.partition}]@{rec.offset}")
    for path, data in _logs(log_dir):
        scan.files.append(path)
        for n in needles:
            if n in data:
                scan.hits.append(f"log {path}")
    for body in http_bodies:
        scan.http_bodies += 1
        for n in needles:
            if n in body:
                scan.hits.append(f"http body {body[:80]!r}")
    LEDGER["scans"].append(scan)
    print(f"\n[faults] secrets {label}: {scan.line()}; excluded: {', '.join(scan.excluded)}")
    return scan
