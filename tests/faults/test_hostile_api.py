"""A hostile third-party API: hangs, 500s, 429 storms with Retry-After, malformed JSON, expired
tokens, an error body that quotes the caller's token. Two workers share one upstream budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from databite_stream.models import Connection, ErrorKind, ExecutionResult, Integration
from databite_stream.testing.fake_api import FakeApi, Fault
from databite_stream.topics import RESULTS
from tests.faults import limited_connector as lc
from tests.faults.support import TopicTail, now_ms, planted_secret, scan_for_secrets, summary
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.timeout(200)]

EVERY_S = 3
ATTEMPTS = 4  # the items sync: max_retries=3


async def test_hostile_api_rate_limit_error_kinds_and_isolation(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    client_secret = planted_secret("cs")
    cluster = Cluster(
        kafka_bootstrap,
        tmp_path,
        partitions=4,
        extra_env={
            "DATABITE_CONNECTORS": "tests.faults.limited_connector:connector",
            "DATABITE_SESSION_TIMEOUT_S": "8",
        },
    )
    async with FakeApi.run(page_size=5, client_secret=client_secret) as api:
        api.add_items(12)
        names = ["ok-1", "ok-2", "hang", "e500", "e429", "malformed", "expired"]
        tokens = {n: api.issue_tokens() for n in names}
        secrets = [client_secret] + [
            s for t in tokens.values() for s in (t.access_token, t.refresh_token)
        ]
        await cluster.create_topics()
        results_tail = await TopicTail(cluster.bootstrap, cluster.topic(RESULTS)).start()
        try:
            cluster.start_worker("w1")
            cluster.start_worker("w2")
            # publish once both are in the group, so the budget's partition does not move
            await wait_for(
                lambda: all("[^Worker]: Ready" in cluster.log(n) for n in ("w1", "w2")),
                timeout=90,
                interval=0.5,
                what="both workers ready",
            )
            await cluster.put_integration(
                Integration(
                    id="int-rest",
                    name="REST",
                    connector_id="rest-limited",
                    config={
                        "base_url": api.base_url,
                        "client_id": api.client_id,
                        "client_secret": client_secret,
                        "page_size": 5,
                    },
                )
            )
            for n in names:
                await cluster.put_connection(
                    Connection(
                        id=n,
                        integration_id="int-rest",
                        connector_id="rest-limited",
                        config={
                            "access_token": tokens[n].access_token,
                            "refresh_token": tokens[n].refresh_token,
                        },
                        schedules={"items": f"{EVERY_S}s"},
                    )
                )

            def by_conn() -> dict[str, list[ExecutionResult]]:
                out: dict[str, list[ExecutionResult]] = defaultdict(list)
                for r in results_tail.results():
                    out[r.connection_id].append(r)
                return out

            await wait_for(
                lambda: all(len(by_conn()[n]) >= 1 for n in names),
                timeout=90,
                interval=0.5,
                what="a first result for every connection",
            )
            # phase 1: only the hang, so the others' lateness measures its effect alone
            t = {n: tokens[n].access_token for n in names}
            api.inject(*[Fault("hang", token=t["hang"]) for _ in range(ATTEMPTS)])
            faults_at = now_ms()
            hang_started = time.monotonic()

            def hang_done() -> bool:
                return any(
                    not r.success and (r.scheduled_for_ms or 0) >= faults_at - EVERY_S * 1000
                    for r in by_conn()["hang"]
                )

            await wait_for(hang_done, timeout=90, interval=0.5, what="the hanging run to end")
            hang_s = time.monotonic() - hang_started
            hang_end = now_ms()
            during_hang = [
                r
                for rs in by_conn().values()
                for r in rs
                if r.connection_id != "hang" and faults_at <= (r.scheduled_for_ms or 0) <= hang_end
            ]
            # phase 2: everything else, each for one connection's token (a refreshed token
            # escapes them) or for any caller
            api.inject(*[Fault.error(500) for _ in range(2)])  # any caller
            api.inject(Fault("status", status=500, token=t["e500"]))
            api.inject(*[Fault.too_many_requests(1, token=t["e429"]) for _ in range(3)])
            api.inject(*[Fault.too_many_requests(1) for _ in range(8)])  # a 429 storm on all
            api.inject(*[Fault("malformed", token=t["malformed"]) for _ in range(ATTEMPTS)])
            # an error body quoting the token, then an expired token (refresh must happen)
            api.inject(
                Fault(
                    "status",
                    status=400,
                    token=t["expired"],
                    body='{"error": "bad_request", "detail": "token {token} is not allowed"}',
                )
            )
            api.expire_token(t["expired"])

            def malformed_done() -> bool:
                return any(
                    not r.success and (r.scheduled_for_ms or 0) >= hang_end - EVERY_S * 1000
                    for r in by_conn()["malformed"]
                )

            await wait_for(malformed_done, timeout=90, interval=0.5, what="malformed run end")
            done_at = now_ms()

            async def all_after() -> bool:
                got = by_conn_of(await cluster.results())  # a fresh read, end to end
                return all(
                    sum(1 for r in got[n] if (r.scheduled_for_ms or 0) > done_at) >= 2
                    for n in names
                )

            # a stall is reported (and asserted) below, after the other figures
            with contextlib.suppress(AssertionError):
                await wait_for(all_after, timeout=60, interval=1.0, what="everyone running after")
            results = await cluster.results()
        finally:
            await results_tail.stop()
            # off the loop: the fake API (same loop) keeps answering while workers stop
            await asyncio.to_thread(cluster.stop_all)

        # -- every run ends with a result that says why --------------------------------
        unexplained = [
            r.run_id
            for r in results
            if (r.success and r.error_kind is not ErrorKind.NONE)
            or (not r.success and (r.error_kind is ErrorKind.NONE or not r.error))
        ]
        kinds = Counter(str(r.error_kind) for r in results)
        got = by_conn_of(results)
        hang_kinds = {str(r.error_kind) for r in got["hang"] if not r.success}
        mal_kinds = {str(r.error_kind) for r in got["malformed"] if not r.success}
        # -- a hanging connection does not delay the others by more than its timeout -------
        worst_late = max(
            ((r.started_at_ms - (r.scheduled_for_ms or 0)) / 1e3 for r in during_hang),
            default=0.0,
        )
        densest = _densest(api, lc.WINDOW_S)
        # -- the budget holds cluster-wide --------------------------------------------------
        max_in_w = api.max_in_window(lc.WINDOW_S)
        refreshes = api.token_refreshes
        ids = Counter(r.run_id for r in results)
        dupes = [k for k, n in ids.items() if n > 1]
        stalled = sorted(
            n for n in names if sum(1 for r in got[n] if (r.scheduled_for_ms or 0) > done_at) < 2
        )
        body_leaks = [r.run_id for r in results if any(s in (r.error or "") for s in secrets)]
        summary(
            "hostile_api",
            workers=2,
            requests=len(api.requests),
            limit=f"{lc.REQUESTS}/{lc.WINDOW_S:g}s",
            max_in_window=max_in_w,
            max_in_window_minus_10ms=api.max_in_window(lc.WINDOW_S - 0.01),
            results=len(results),
            error_kinds=dict(kinds),
            unexplained=len(unexplained),
            hang_run_s=f"{hang_s:.1f}",
            others_runs_during_hang=len(during_hang),
            others_worst_late_during_hang_s=f"{worst_late:.2f}",
            timeout_s=lc.TIMEOUT_S,
            token_refreshes=refreshes,
            hang_disconnects=len(api.disconnects),
            duplicates=len(dupes),
            stalled_after_faults=stalled,
        )
        assert not stalled, f"connections that stopped running (job stuck in flight): {stalled}"
        assert max_in_w <= lc.REQUESTS, f"{max_in_w} requests in {lc.WINDOW_S}s: {densest}"
        assert not unexplained, unexplained[:10]
        assert hang_kinds == {"timeout"}, hang_kinds
        assert mal_kinds == {"bad_response"}, mal_kinds
        assert len(api.disconnects) >= ATTEMPTS  # each hanging attempt was really abandoned
        assert refreshes >= 1
        assert all(got[n][-1].success for n in ("ok-1", "ok-2", "e500", "e429", "expired")), {
            n: (got[n][-1].error_kind, got[n][-1].error) for n in names
        }
        assert during_hang, "no run of another connection while the hang lasted"
        assert worst_late <= lc.TIMEOUT_S, f"others delayed {worst_late:.2f}s"
        assert not dupes, dupes
        assert not body_leaks, body_leaks
        scan = await scan_for_secrets(
            "hostile_api",
            cluster.bootstrap,
            [cluster.prefix],
            [*secrets, *(s for s in _refreshed(api))],
            log_dir=tmp_path,
        )
        assert not scan.hits, scan.hits


def by_conn_of(results: list[ExecutionResult]) -> dict[str, list[ExecutionResult]]:
    out: dict[str, list[ExecutionResult]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r.finished_at_ms):
        out[r.connection_id].append(r)
    return out


def _refreshed(api: FakeApi) -> list[str]:
    """Every access and refresh token the fake API ever issued (refreshed ones included)."""
    return [*api._tokens, *api._refresh_tokens]


def _densest(api: FakeApi, window: float) -> list[str]:
    """The requests of the densest window: offset from its first (ms), status, path, token."""
    reqs = sorted(api.requests, key=lambda r: r.at)
    best: tuple[int, int] = (0, 0)
    low = 0
    for high, r in enumerate(reqs):
        while r.at - reqs[low].at >= window:
            low += 1
        if high - low + 1 > best[1] - best[0]:
            best = (low, high + 1)
    first = reqs[best[0]].at if reqs else 0.0
    return [
        f"+{(r.at - first) * 1000:.0f}ms {r.status} {r.path} {(r.token or '')[:8]}"
        for r in reqs[best[0] : best[1]]
    ]
