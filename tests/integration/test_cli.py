"""The `databite-stream` command line against the real broker (and a real worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from databite_stream.models import Connection, Integration
from databite_stream.topics import CONNECTIONS
from tests.helpers import create_topic, unique_name, wait_for
from tests.integration.stream.harness import Cluster

pytestmark = pytest.mark.broker


def cli(
    *args: str, broker: str, prefix: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABITE_")},
        "DATABITE_BROKER": broker,
        "DATABITE_APP_ID": prefix,
        "DATABITE_TOPIC_PREFIX": prefix,
        "DATABITE_PARTITIONS": "4",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "databite_stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path)
    yield c
    c.stop_all()


def test_help_is_there_for_every_command() -> None:
    for args in (
        [],
        ["worker"],
        ["kafka"],
        ["topics"],
        ["topics", "create"],
        ["results", "tail"],
        ["deadletter", "replay"],
        ["demo"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "databite_stream.cli", *args, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, (args, out.stderr)
        assert "usage:" in out.stdout


def test_topics_create_then_describe(kafka_bootstrap: str) -> None:
    prefix = unique_name("cli")
    first = cli("topics", "create", broker=kafka_bootstrap, prefix=prefix)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{prefix}.connections" in first.stdout
    assert "created 14 topic(s)" in first.stdout  # 11 databite topics + 3 changelogs
    again = cli("topics", "create", broker=kafka_bootstrap, prefix=prefix)
    assert again.returncode == 0
    assert "created 0 topic(s)" in again.stdout
    described = cli("topics", "describe", broker=kafka_bootstrap, prefix=prefix)
    assert described.returncode == 0
    assert described.stdout.count("ok") >= 11


async def test_a_compacted_input_created_as_delete_is_an_error(kafka_bootstrap: str) -> None:
    prefix = unique_name("cli")
    await create_topic(kafka_bootstrap, f"{prefix}.connections", partitions=4)  # cleanup=delete
    out = cli("topics", "create", broker=kafka_bootstrap, prefix=prefix)
    assert out.returncode == 1
    assert "must be 'compact'" in out.stdout


def test_broker_down_is_one_actionable_line() -> None:
    out = cli("topics", "describe", broker="127.0.0.1:1", prefix="x", timeout=90)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:1")
    assert "DATABITE_BROKER" in lines[0]


def test_bad_settings_and_bad_files_are_usage_errors(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = cli(
        "deadletter", "replay", str(tmp_path / "missing.jsonl"), broker=kafka_bootstrap, prefix="x"
    )
    assert out.returncode == 2
    assert "cannot read" in out.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"nope": 1}\n')
    out = cli("deadletter", "replay", str(junk), broker=kafka_bootstrap, prefix="x")
    assert out.returncode == 2
    assert "junk.jsonl:1: not a dead letter" in out.stderr
    out = cli("topics", "describe", broker="not-a-host-port", prefix="x")
    assert out.returncode == 2
    assert "DATABITE_BROKER" in out.stderr


async def test_results_tail_and_dead_letter_replay(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.create_topics()
    cluster.start_worker()
    await cluster.put_integration(Integration(id="int-1", name="E", connector_id="echo", config={}))
    good = Connection(
        id="tailed",
        integration_id="int-1",
        connector_id="echo",
        config={"api_key": "key-for-cli-01"},
        schedules={"records": "1s"},
    )
    await cluster.put_connection(good)
    # a connection whose schedule is broken: dead-lettered
    broken = good.model_copy(update={"id": "fixme", "schedules": {"records": "every blue moon"}})
    await cluster.put_connection(broken)

    def tail(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, broker=cluster.bootstrap, prefix=cluster.prefix)

    await wait_for(
        lambda: "tailed" in tail("results", "tail").stdout,
        timeout=60,
        what="results tail to show a run",
    )
    await wait_for(
        lambda: "fixme" in tail("deadletter", "tail").stdout,
        timeout=60,
        what="deadletter tail to show the broken connection",
    )
    lines = [ln for ln in tail("deadletter", "tail", "--json").stdout.splitlines() if "fixme" in ln]
    letter = orjson.loads(lines[0])
    assert letter["source_topic"] == cluster.topic(CONNECTIONS)
    assert letter["value"]["config"] == {"api_key": "***"}  # secrets masked in dead letters
    assert "key-for-cli-01" not in lines[0]
    # fix it: a valid schedule and the real config back
    letter["value"]["schedules"] = {"records": "1s"}
    letter["value"]["config"] = {"api_key": "key-for-cli-01"}
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(orjson.dumps(letter) + b"\n")
    masked = tmp_path / "masked.jsonl"
    masked.write_text(lines[0] + "\n")
    refused = tail("deadletter", "replay", str(masked))
    assert refused.returncode == 2
    assert "masked secrets" in refused.stderr
    replayed = tail("deadletter", "replay", str(fixed))
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 message(s)" in replayed.stdout
    await wait_for(
        lambda: "fixme" in tail("results", "tail", "--connection", "fixme").stdout,
        timeout=60,
        what="the replayed connection to run",
    )


async def test_catalog_and_job_commands(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.create_topics()
    cluster.start_worker()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, broker=cluster.bootstrap, prefix=cluster.prefix, timeout=120)

    integ = tmp_path / "integration.yaml"
    integ.write_text("id: int-1\nname: Echo\nconnector_id: echo\nconfig: {}\n")
    conns = tmp_path / "connections.yaml"
    conns.write_text(
        "- id: cli-a\n  integration_id: int-1\n  connector_id: echo\n"
        "  config: {api_key: cli-secret-0001}\n  schedules: {records: 1h}\n"
        "- id: cli-b\n  integration_id: int-1\n  connector_id: echo\n"
        "  config: {api_key: cli-secret-0002}\n  sync_interval: 30\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- id: ok-one\n  integration_id: int-1\n  connector_id: echo\n  config: {api_key: x1234}\n"
        "- id: wrong\n  integration_id: int-1\n  connector_id: echo\n  config: {}\n"
    )
    assert run("integrations", "put", str(integ)).returncode == 0
    out = run("connections", "put", str(conns))
    assert out.returncode == 0, out.stderr
    assert "put connection cli-a (1 job(s))" in out.stdout

    refused = run("connections", "put", str(bad))
    assert refused.returncode == 2
    assert "nothing published" in refused.stderr
    assert "wrong" in refused.stderr
    listed = run("connections", "list")
    assert "cli-a" in listed.stdout
    assert "ok-one" not in listed.stdout  # the valid item of a bad file was not published either
    assert "cli-secret" not in listed.stdout

    def jobs_listed() -> bool:
        return "cli-b/records" in run("jobs", "list").stdout

    await wait_for(jobs_listed, timeout=60, interval=1, what="jobs list to show the jobs")
    assert run("jobs", "pause", "cli-a/records").returncode == 0

    def paused() -> bool:
        shown = run("jobs", "show", "cli-a/records")
        return shown.returncode == 0 and orjson.loads(shown.stdout)["paused"] is True

    await wait_for(paused, timeout=60, interval=1, what="the job to show as paused")
    ran = run("jobs", "run", "cli-b/records", "--timeout", "60")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = orjson.loads(ran.stdout[ran.stdout.index("{") :])
    assert result["success"] is True
    assert result["run_id"].startswith("cli-b/records@")

    missing = run("connections", "delete", "no-such-connection")
    assert missing.returncode == 1
    assert "no-such-connection" in missing.stderr
    unknown_job = run("jobs", "show", "nope/records")
    assert unknown_job.returncode == 1
    assert run("connections", "delete", "cli-a").returncode == 0
