"""Rate limits seen from the upstream: R per window, independent keys, 429 pauses.

Arrival times are measured by the fake server, which shares the event loop with the client:
they carry a millisecond of jitter, and tens of milliseconds when the machine is saturated
(seen with CPU hogs on 2 cores). Windows are therefore checked as ``W - SLACK``; the limiter's
exact guarantee is the hypothesis property in tests/unit/execution/test_ratelimit.py, and a
real violation (a fixed window lets 2R through around its edge) is far larger than SLACK.
"""

from __future__ import annotations

import asyncio
import time

from databite_stream.connectors import RateLimit, build_rest_connector
from databite_stream.execution import Executor
from databite_stream.models import ActionRequest
from databite_stream.testing import FakeApi, Fault, rest_connection, rest_integration

from .conftest import Sink

R, W, SLACK = 5, 1.0, 0.1


def create(connection_id: str, n: int) -> ActionRequest:
    return ActionRequest(
        correlation_id=f"{connection_id}-{n}",
        connection_id=connection_id,
        action="create_item",
        input={"name": f"n{n}", "value": n},
        requested_at_ms=0,
    )


async def test_syncs_and_actions_on_one_key_never_exceed_r_per_window(api: FakeApi) -> None:
    api.page_size = 10
    api.add_items(40)  # 4 item pages + 1 deletions page per sync
    rest = build_rest_connector(rate_limit=RateLimit(requests=R, window=W))
    conn, integ = rest_connection(api), rest_integration(api)
    async with Executor() as executor:
        started = time.monotonic()
        syncs, actions = await asyncio.gather(
            asyncio.gather(
                executor.run_sync(rest, "items", conn, integ, run_id="a", on_batch=Sink()),
                executor.run_sync(rest, "items", conn, integ, run_id="b", on_batch=Sink()),
            ),
            asyncio.gather(
                *(
                    executor.run_action(rest, "create_item", conn, integ, create(conn.id, n))
                    for n in range(5)
                )
            ),
        )
        elapsed = time.monotonic() - started
    assert all(r.success for r in syncs), [r.error for r in syncs]
    assert all(r.success for r in actions), [r.error for r in actions]
    token = conn.config["access_token"]
    calls = len(api.requests_to(token=token))  # >= 15: syncs may also see the new items
    assert calls >= 15
    assert api.max_in_window(W - SLACK, token=token) <= R
    assert elapsed >= (calls - 1) * W / R - 0.05  # they waited for slots instead of failing
    assert executor.limiter.stats.waits >= 10


async def test_connections_have_independent_budgets(api: FakeApi) -> None:
    rest = build_rest_connector(rate_limit=RateLimit(requests=R, window=W))
    integ = rest_integration(api)
    a = rest_connection(api, id="conn-a")
    b = rest_connection(api, id="conn-b")
    async with Executor() as executor:
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                executor.run_action(rest, "create_item", a, integ, create("conn-a", n))
                for n in range(R)
            ),
            *(
                executor.run_action(rest, "create_item", b, integ, create("conn-b", n))
                for n in range(R)
            ),
        )
        elapsed = time.monotonic() - started
    assert all(r.success for r in results)
    for conn in (a, b):
        assert api.max_in_window(W - SLACK, token=conn.config["access_token"]) <= R
    # Both keys ran side by side: 2R calls inside one window, in about one key's time.
    assert api.max_in_window(W) == 2 * R
    assert elapsed < (R - 1) * W / R + 0.5


async def test_per_integration_budget_is_shared_by_its_connections(api: FakeApi) -> None:
    rest = build_rest_connector(
        rate_limit=RateLimit(requests=R, window=W, strategy="per-integration")
    )
    integ = rest_integration(api)
    a, b = rest_connection(api, id="conn-a"), rest_connection(api, id="conn-b")
    async with Executor() as executor:
        await asyncio.gather(
            *(
                executor.run_action(rest, "create_item", a, integ, create("conn-a", n))
                for n in range(4)
            ),
            *(
                executor.run_action(rest, "create_item", b, integ, create("conn-b", n))
                for n in range(4)
            ),
        )
    assert api.max_in_window(W - SLACK) <= R


async def test_429_with_retry_after_pauses_the_key(api: FakeApi) -> None:
    api.add_items(10)
    rest = build_rest_connector(rate_limit=RateLimit(requests=50, window=W))
    integ = rest_integration(api)
    a, b = rest_connection(api, id="conn-a"), rest_connection(api, id="conn-b")
    token_a, token_b = a.config["access_token"], b.config["access_token"]
    api.inject(Fault.too_many_requests(retry_after=2, path="/items", token=token_a))
    async with Executor(backoff_base=0.01) as executor:
        sync = asyncio.create_task(
            executor.run_sync(rest, "items", a, integ, run_id="r", on_batch=Sink())
        )
        await api.wait_for(lambda: any(r.status == 429 for r in api.requests))
        limited_at = api.requests_to(token=token_a)[0].at
        # Calls on the paused key wait; calls on another key go through at once.
        action_a = asyncio.create_task(
            executor.run_action(rest, "create_item", a, integ, create("conn-a", 1))
        )
        result_b = await executor.run_action(rest, "create_item", b, integ, create("conn-b", 1))
        assert result_b.success
        assert api.requests_to(token=token_b)[0].at - limited_at < 0.5
        result_a, synced = await asyncio.gather(action_a, sync)
    assert result_a.success
    assert result_a.attempts == 1
    assert synced.success
    assert synced.attempts == 2
    after = [r.at - limited_at for r in api.requests_to(token=token_a)[1:]]
    assert after
    assert min(after) >= 2.0 - SLACK
    assert min(after) < 2.5  # ...and not much longer
