"""Run real worker processes against the session broker and talk to them through Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from databite_stream.admin import create_topics
from databite_stream.models import Connection, ExecutionResult, Integration
from databite_stream.settings import Settings
from databite_stream.topics import COMMANDS, CONNECTIONS, INTEGRATIONS, RESULTS
from databite_stream.wire import Command
from tests.helpers import consume_all, produce, unique_name

REPO = Path(__file__).parents[3]

#: every worker process any Cluster started, in order: a fixture kills those a test leaves
#: behind (a test stopped by its timeout never reaches its own ``finally``)
STARTED_WORKERS: list[subprocess.Popen[bytes]] = []


@dataclass
class Cluster:
    """One databite deployment (unique app id and topic prefix) on the session broker."""

    bootstrap: str
    tmp: Path
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: unique_name("db"))
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(
            broker=self.bootstrap,
            app_id=self.prefix,
            topic_prefix=self.prefix,
            partitions=self.partitions,
        )

    async def create_topics(self) -> None:
        _created, problems = await create_topics(self.settings)
        assert not problems, problems

    def topic(self, spec: Any) -> str:
        return str(spec.name(self.settings))

    def start_worker(self, name: str = "w1", **env: str) -> subprocess.Popen[bytes]:
        data = self.tmp / name
        data.mkdir(parents=True, exist_ok=True)
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DATABITE_")},
            "DATABITE_BROKER": self.bootstrap,
            "DATABITE_APP_ID": self.prefix,
            "DATABITE_TOPIC_PREFIX": self.prefix,
            "DATABITE_PARTITIONS": str(self.partitions),
            "DATABITE_DATA_DIR": str(data),
            "DATABITE_WEB_ENABLED": "false",
            "DATABITE_COMMIT_INTERVAL_S": "0.2",
            **self.extra_env,
            **env,
        }
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "databite_stream.cli", "worker"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.workers.append(proc)
        STARTED_WORKERS.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in self.workers:
            self.stop_worker(proc)

    def log(self, name: str = "w1") -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def put_integration(self, integration: Integration) -> None:
        await produce(
            self.bootstrap,
            self.topic(INTEGRATIONS),
            [(integration.id.encode(), integration.model_dump_json().encode())],
        )

    async def put_connection(self, connection: Connection) -> None:
        await produce(
            self.bootstrap,
            self.topic(CONNECTIONS),
            [(connection.id.encode(), connection.model_dump_json().encode())],
        )

    async def put_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await produce(self.bootstrap, topic, [(key, value)])

    async def command(self, command: Command) -> None:
        await produce(
            self.bootstrap,
            self.topic(COMMANDS),
            [(command.connection_id.encode(), command.model_dump_json().encode())],
        )

    async def read(self, spec: Any) -> list[ConsumerRecord[bytes, bytes]]:
        return await consume_all(self.bootstrap, [self.topic(spec)])

    async def results(self) -> list[ExecutionResult]:
        return [
            ExecutionResult.model_validate_json(r.value)
            for r in await self.read(RESULTS)
            if r.value is not None
        ]


def loads(values: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Any]:
    return [orjson.loads(r.value) for r in values if r.value is not None]
