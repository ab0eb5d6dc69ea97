"""The HTTP API on two real workers: routing to the owner, auth, readiness, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from databite_stream.devkafka import _free_ports
from databite_stream.models import Connection, Integration
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = pytest.mark.broker

TOKEN = "api-token-for-tests-123"
SECRET = "sk-web-PLANTED-99887766"


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path, extra_env={"DATABITE_API_TOKEN": TOKEN})
    yield c
    c.stop_all()


def path_of(job_id: str) -> str:
    return quote(job_id, safe="/")


async def get(url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        body = await r.json(content_type=None) if "json" in r.content_type else await r.text()
        return r.status, body


async def post(url: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_api_routes_to_the_owner_and_requires_the_token(cluster: Cluster) -> None:
    await cluster.create_topics()
    ports = _free_ports(2)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for name, port in zip(("w1", "w2"), ports, strict=True):
        cluster.start_worker(name, DATABITE_WEB_ENABLED="true", DATABITE_WEB_PORT=str(port))
    await cluster.put_integration(Integration(id="int-1", name="E", connector_id="echo", config={}))
    ids = [f"web-{i}" for i in range(6)]
    for cid in ids:
        await cluster.put_connection(
            Connection(
                id=cid,
                integration_id="int-1",
                connector_id="echo",
                config={"api_key": SECRET, "record_count": 1},
                schedules={"records": "1s"},
            )
        )

    async def both_ready() -> bool:
        try:
            states = [await get(f"{u}/ready") for u in urls]
        except aiohttp.ClientError:
            return False
        return all(s == 200 for s, _ in states) and all(b["partitions"] for _, b in states)

    await wait_for(both_ready, timeout=90, interval=0.5, what="/ready on both workers")

    # auth: everything but /health needs the token
    assert (await get(f"{urls[0]}/health", token=None))[0] == 200
    for route in ("/ready", "/jobs", "/metrics", "/"):
        status, _ = await get(f"{urls[0]}{route}", token=None)
        assert status == 401, route
    assert (await get(f"{urls[0]}/jobs", token="wrong"))[0] == 401

    async def all_jobs() -> bool:
        status, body = await get(f"{urls[0]}/jobs")
        return status == 200 and body["count"] == len(ids)

    await wait_for(all_jobs, timeout=30, what="GET /jobs to list every job of both workers")

    # find a job that w2 owns, ask w1 about it: routed to w2, same answer
    _, local2 = await get(f"{urls[1]}/jobs?scope=local")
    assert local2["jobs"], "w2 owns no job"
    foreign = local2["jobs"][0]["job_id"]
    status, job = await get(f"{urls[0]}/jobs/{path_of(foreign)}")
    assert status == 200
    assert job["job_id"] == foreign
    assert job["partition"] == local2["jobs"][0]["partition"]
    cid = job["connection_id"]
    status, conn_jobs = await get(f"{urls[0]}/connections/{cid}/jobs")
    assert status == 200
    assert [j["job_id"] for j in conn_jobs["jobs"]] == [foreign]
    assert (await get(f"{urls[0]}/jobs/{path_of('nope/records')}"))[0] == 404

    # a command through the other worker reaches the owner
    status, accepted = await post(f"{urls[0]}/jobs/{path_of(foreign)}/pause")
    assert status == 202, accepted

    async def paused() -> bool:
        _, j = await get(f"{urls[1]}/jobs/{path_of(foreign)}")
        return bool(j["paused"])

    await wait_for(paused, timeout=20, what="the job to be paused")

    # metrics: pause everything, then the counters equal the results on the topic
    for job_view in (await get(f"{urls[0]}/jobs"))[1]["jobs"]:
        await post(f"{urls[0]}/jobs/{path_of(job_view['job_id'])}/pause")

    async def settled() -> bool:
        _, body = await get(f"{urls[0]}/jobs")
        return all(j["paused"] and not j["in_flight"] for j in body["jobs"])

    await wait_for(settled, timeout=30, what="every job paused and idle")
    results = await cluster.results()
    total = 0.0
    for url in urls:
        status, text = await get(f"{url}/metrics")
        assert status == 200
        assert SECRET not in text
        for line in text.splitlines():
            if line.startswith("databite_runs_total{") and 'kind="sync"' in line:
                total += float(line.rsplit(" ", 1)[1])
        assert "databite_due_index_size" in text
        assert "databite_consumer_lag" in text
    assert total == len(results)

    # no response leaks the planted secret
    for url in urls:
        for route in ("/jobs", f"/connections/{cid}/jobs", "/"):
            _, body = await get(f"{url}{route}")
            assert SECRET not in str(body)
