"""Secrets never leave: after the scenarios (this module runs last), a worker with its HTTP API
on, connections carrying planted tokens, and a failing REST connector whose error body quotes the
token. Every databite topic (but those that legitimately carry configs, listed by the scan),
every worker log and every HTTP response fetched: zero occurrences. Earlier scenarios' scans
(every scenario scans its own deployment) are listed too."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from databite_stream.models import Connection, Integration
from databite_stream.testing.fake_api import FakeApi, Fault
from databite_stream.topics import RESULTS
from tests.faults.support import (
    LEDGER,
    TopicTail,
    echo_connection,
    echo_integration,
    planted_secret,
    scan_for_secrets,
    summary,
)
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.timeout(150)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_no_planted_secret_anywhere(kafka_bootstrap: str, tmp_path: Path) -> None:
    echo_key, api_token, client_secret = (
        planted_secret("sk-echo"),
        planted_secret("api"),
        planted_secret("cs"),
    )
    port = _free_port()
    cluster = Cluster(
        kafka_bootstrap,
        tmp_path,
        partitions=2,
        extra_env={
            "DATABITE_WEB_ENABLED": "true",
            "DATABITE_WEB_PORT": str(port),
            "DATABITE_API_TOKEN": api_token,
            "DATABITE_CONNECTORS": "tests.faults.limited_connector:connector",
        },
    )
    bodies: list[bytes] = []
    async with FakeApi.run(client_secret=client_secret) as api:
        api.add_items(3)
        tok = api.issue_tokens()
        # every request of this token fails with a body that quotes the token
        api.inject(*[Fault("status", status=403, body="denied for {token}") for _ in range(50)])
        await cluster.create_topics()
        tail = await TopicTail(cluster.bootstrap, cluster.topic(RESULTS)).start()
        try:
            cluster.start_worker("w1")
            await cluster.put_integration(echo_integration())
            await cluster.put_connection(echo_connection("echo-1", "2s", echo_key))
            await cluster.put_integration(
                Integration(
                    id="int-rest",
                    name="REST",
                    connector_id="rest-limited",
                    config={
                        "base_url": api.base_url,
                        "client_id": api.client_id,
                        "client_secret": client_secret,
                    },
                )
            )
            await cluster.put_connection(
                Connection(
                    id="rest-1",
                    integration_id="int-rest",
                    connector_id="rest-limited",
                    config={"access_token": tok.access_token, "refresh_token": tok.refresh_token},
                    schedules={"items": "2s"},
                )
            )
            await wait_for(
                lambda: {"echo-1", "rest-1"} <= {r.connection_id for r in tail.results()},
                timeout=90,
                interval=0.5,
                what="results of both connections",
            )
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {api_token}"}
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    try:
                        async with http.get(f"{base}/ready", headers=headers) as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_for(ready, timeout=60, interval=0.5, what="the worker's /ready")
                for path in (
                    "/",
                    "/jobs",
                    "/jobs?scope=local",
                    "/jobs/echo-1%2Frecords",
                    "/jobs/rest-1%2Fitems",
                    "/connections/echo-1/jobs",
                    "/connections/rest-1/jobs",
                    "/metrics",
                    "/ready",
                    "/health",
                    "/openapi.json",
                    "/jobs/nope%2Fnothing",
                ):
                    async with http.get(base + path, headers=headers) as resp:
                        bodies.append(await resp.read())
                async with http.get(base + "/jobs") as resp:  # without the token
                    bodies.append(await resp.read())
            failed = [r for r in tail.results() if r.connection_id == "rest-1" and not r.success]
        finally:
            await tail.stop()
            # off the loop: the fake API (same loop) keeps answering while workers stop
            await asyncio.to_thread(cluster.stop_all)
        issued = [*api._tokens, *api._refresh_tokens]
    scan = await scan_for_secrets(
        "secrets_final",
        cluster.bootstrap,
        [cluster.prefix],
        [echo_key, api_token, client_secret, *issued],
        log_dir=tmp_path,
        http_bodies=bodies,
    )
    earlier = [s for s in LEDGER["scans"] if s is not scan]
    summary(
        "secrets",
        http_responses=len(bodies),
        topics_scanned=len(scan.topics),
        messages_scanned=scan.messages,
        logs_scanned=len(scan.files),
        excluded=",".join(t.removeprefix(cluster.prefix) for t in scan.excluded),
        rest_failures_quoting_token=len(failed),
        hits=len(scan.hits),
        earlier_scans=len(earlier),
        earlier_hits=sum(len(s.hits) for s in earlier),
    )
    assert failed, "the REST connection never failed: the quoting error body was not exercised"
    assert not scan.hits, scan.hits
    assert not [h for s in earlier for h in s.hits]
