"""``databite-stream demo``: the whole engine on one machine, results live in the terminal.

Starts (unless ``DATABITE_BROKER`` names one) a local Kafka, the fake third-party API on
loopback (with expiring tokens and a few flaky responses, so refreshes and retries happen), one
worker process, publishes an integration and a handful of connections with second-level
schedules, and shows every ``ExecutionResult`` as it arrives. Ctrl-C (or ``--duration``) stops
everything in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from databite_stream.admin import create_topics
from databite_stream.devkafka import BrokerError, KafkaCluster
from databite_stream.models import Connection, ExecutionResult
from databite_stream.settings import Settings
from databite_stream.testing.fake_api import FakeApi
from databite_stream.testing.fixtures import (
    echo_connection,
    echo_integration,
    rest_connection,
    rest_integration,
)
from databite_stream.topics import CONNECTIONS, DEADLETTER, INTEGRATIONS, RESULTS

__all__ = ("build_parser", "main")


@dataclass
class _Board:
    rows: deque[ExecutionResult] = field(default_factory=lambda: deque(maxlen=18))
    runs: int = 0
    failures: int = 0
    records: int = 0
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)

    def render(self, header: str) -> Group:
        table = Table(expand=True, title=None, header_style="bold")
        for col, justify in (
            ("connection", "left"),
            ("sync", "left"),
            ("scheduled for (UTC)", "left"),
            ("lateness", "right"),
            ("records", "right"),
            ("attempts", "right"),
            ("status", "left"),
        ):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for r in reversed(self.rows):
            at = r.scheduled_for_ms or r.started_at_ms
            late = r.started_at_ms - at
            status = (
                Text("ok", style="green")
                if r.success
                else Text(f"{r.error_kind}: {(r.error or '')[:50]}", style="red")
            )
            table.add_row(
                r.connection_id,
                r.name,
                datetime.fromtimestamp(at / 1000, UTC).strftime("%H:%M:%S.%f")[:-3],
                f"{late} ms",
                str(r.summary.records if r.summary else 0),
                str(r.attempts),
                status,
            )
        elapsed = time.monotonic() - self.started
        summary = Text(
            f"{header}\nruns {self.runs}  failed {self.failures}  records {self.records}  "
            f"dead letters {self.dead_letters}  uptime {elapsed:.0f}s   (Ctrl-C to stop)",
            style="bold",
        )
        return Group(summary, table)


def _connections(api: FakeApi) -> list[Connection]:
    return [
        rest_connection(api, id="acme-crm", schedules={"items": "5s"}),
        rest_connection(api, id="globex-crm", schedules={"items": "*/10 * * * * *"}),
        rest_connection(api, id="initech-crm", schedules={"items": "1m"}),
        echo_connection(id="umbrella-echo").model_copy(update={"schedules": {"records": "3s"}}),
        echo_connection(id="hooli-echo", record_count=500, batch_size=50).model_copy(
            update={"schedules": {"records": "7s"}}
        ),
    ]


async def _churn(api: FakeApi, stop: asyncio.Event) -> None:
    """Upstream keeps changing: incremental syncs find new, updated and deleted items."""
    rng = random.Random(7)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        ids = list(api.items)
        if ids:
            api.update_item(rng.choice(ids), value=rng.randint(0, 1000))
        api.add_items(rng.randint(0, 3), prefix="new")
        if len(ids) > 50 and rng.random() < 0.3:
            api.delete_item(rng.choice(ids))


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The worker is its own process, as in production (a fork: quick enough to do inline)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "databite_stream.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _run(args: argparse.Namespace, bootstrap: str, console: Console) -> int:
    prefix = os.environ.get("DATABITE_TOPIC_PREFIX") or f"demo-{secrets.token_hex(3)}"
    settings = Settings(broker=bootstrap, app_id=prefix, topic_prefix=prefix, partitions=4)
    await create_topics(settings)
    api = FakeApi(page_size=25, token_ttl=args.token_ttl, error_rate=args.error_rate, seed=1)
    await api.start()
    api.add_items(120)
    data = Path(args.data_dir) / prefix
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "worker.log"
    env = {
        **os.environ,
        "DATABITE_BROKER": bootstrap,
        "DATABITE_APP_ID": prefix,
        "DATABITE_TOPIC_PREFIX": prefix,
        "DATABITE_PARTITIONS": "4",
        "DATABITE_DATA_DIR": str(data),
        "DATABITE_WEB_ENABLED": "false",
    }
    worker = _start_worker(env, log_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        settings.topic(RESULTS.suffix),
        settings.topic(DEADLETTER.suffix),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
    )
    churn = asyncio.create_task(_churn(api, stop))
    board = _board = _Board()
    header = (
        f"databite-stream demo — Kafka {bootstrap}, fake API {api.base_url}, "
        f"topics {prefix}.*, worker log {log_path}"
    )
    try:
        await producer.start()
        await consumer.start()
        integrations = [rest_integration(api), echo_integration()]
        for integration in integrations:
            await producer.send_and_wait(
                settings.topic(INTEGRATIONS.suffix),
                key=integration.id.encode(),
                value=integration.model_dump_json().encode(),
            )
        for connection in _connections(api):
            await producer.send_and_wait(
                settings.topic(CONNECTIONS.suffix),
                key=connection.id.encode(),
                value=connection.model_dump_json().encode(),
            )
        deadline = time.monotonic() + args.duration if args.duration else None
        with Live(board.render(header), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                if worker.poll() is not None:
                    console.print(f"[red]worker exited ({worker.returncode}); see {log_path}")
                    return 1
                if deadline is not None and time.monotonic() > deadline:
                    break
                batch = await consumer.getmany(timeout_ms=250)
                for tp, messages in batch.items():
                    for m in messages:
                        if m.value is None:
                            continue
                        if tp.topic.endswith(".deadletter"):
                            board.dead_letters += 1
                            continue
                        result = ExecutionResult.model_validate_json(m.value)
                        board.rows.append(result)
                        board.runs += 1
                        board.failures += 0 if result.success else 1
                        board.records += result.summary.records if result.summary else 0
                live.update(board.render(header))
        console.print(
            f"stopped: {_board.runs} runs, {_board.failures} failed, {_board.records} records"
        )
        return 0 if _board.runs > 0 else 1
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(worker.wait, 30)
        if worker.poll() is None:
            worker.kill()
        churn.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await churn
        await consumer.stop()
        await producer.stop()
        await api.stop()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="databite-stream demo")
    parser.description = (
        "Run the whole engine locally: a Kafka broker (unless DATABITE_BROKER is set), a fake "
        "third-party API, one worker, five demo connections; results appear live."
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)"
    )
    parser.add_argument(
        "--token-ttl", type=float, default=30.0, help="fake API token lifetime, s (refreshes)"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.05, help="fake API random 503 rate (retries)"
    )
    parser.add_argument("--data-dir", default=".databite-data", help="worker state folder")
    return parser


def run(args: argparse.Namespace) -> int:
    console = Console()
    # leader elections right after topic creation make aiokafka log retries; not news here
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    external = os.environ.get("DATABITE_BROKER")
    cluster: KafkaCluster | None = None
    try:
        if external:
            bootstrap = external
        else:
            with console.status("starting a local Apache Kafka (KRaft) on 127.0.0.1…"):
                cluster = KafkaCluster(nodes=1).start()
            console.print(f"Kafka {cluster.version} ready in {cluster.start_seconds:.1f}s")
            bootstrap = cluster.bootstrap
        return asyncio.run(_run(args, bootstrap, console))
    except BrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if cluster is not None:
            with console.status("stopping Kafka…"):
                cluster.stop()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
