"""Retries, backoff and timeouts against real HTTP failures of the fake API."""

from __future__ import annotations

import itertools
import logging
import random

import pytest

from databite_stream.connectors import build_rest_connector, rest_connector
from databite_stream.execution import Executor
from databite_stream.models import ErrorKind
from databite_stream.retry import backoff_ceiling, backoff_delay
from databite_stream.testing import FakeApi, Fault, rest_connection, rest_integration

from .conftest import Sink

BASE, CAP = 0.2, 5.0


async def test_503_twice_then_200_succeeds_after_jittered_backoff(api: FakeApi, sink: Sink) -> None:
    api.add_items(10)
    api.inject(Fault.error(503, path="/items"), Fault.error(503, path="/items"))
    async with Executor(rng=random.Random(7), backoff_base=BASE, backoff_cap=CAP) as executor:
        result = await executor.run_sync(
            rest_connector,
            "items",
            rest_connection(api),
            rest_integration(api),
            run_id="r",
            on_batch=sink,
        )
    assert result.success
    assert result.attempts == 3
    assert len(sink.record_ids) == 10
    arrivals = [r.at for r in api.requests_to("/items")]
    assert [r.status for r in api.requests_to("/items")] == [503, 503, 200]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    rng = random.Random(7)
    for retry, gap in enumerate(gaps, start=1):
        planned = backoff_delay(retry, BASE, CAP, rng)  # what the seeded executor slept
        assert planned - 0.005 <= gap <= planned + 0.25
        assert gap <= backoff_ceiling(retry, BASE, CAP) + 0.25  # within the jitter bounds


async def test_400_fails_at_once(api: FakeApi, executor: Executor, sink: Sink) -> None:
    api.inject(Fault.error(400, path="/items", body='{"error": "bad updated_since"}'))
    result = await executor.run_sync(
        rest_connector,
        "items",
        rest_connection(api),
        rest_integration(api),
        run_id="r",
        on_batch=sink,
    )
    assert not result.success
    assert result.attempts == 1
    assert result.error_kind is ErrorKind.HTTP_4XX
    assert "returned 400" in (result.error or "")
    assert "bad updated_since" in (result.error or "")
    assert len(api.requests) == 1


async def test_hanging_request_is_cancelled_at_the_timeout(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    api.add_items(10)
    api.inject(Fault.hang(path="/items"))
    rest = build_rest_connector(items_timeout=0.3)
    result = await executor.run_sync(
        rest, "items", rest_connection(api), rest_integration(api), run_id="r", on_batch=sink
    )
    assert result.success
    assert result.attempts == 2
    await api.wait_for(lambda: len(api.disconnects) == 1, timeout=2.0)
    hung = api.requests_to("/items")[0]
    # The server saw the client go away at the timeout, not when the hang limit ran out.
    assert 0.25 <= api.disconnects[0].at - hung.at < 1.0


async def test_every_attempt_timing_out_gives_a_timeout_result(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    api.inject(*(Fault.hang(path="/items") for _ in range(4)))
    rest = build_rest_connector(items_timeout=0.1)
    result = await executor.run_sync(
        rest, "items", rest_connection(api), rest_integration(api), run_id="r", on_batch=sink
    )
    assert not result.success
    assert result.attempts == 4
    assert result.error_kind is ErrorKind.TIMEOUT
    await api.wait_for(lambda: len(api.disconnects) == 4, timeout=2.0)


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        ([Fault.malformed(path="/items")], ErrorKind.BAD_RESPONSE),
        # aiohttp itself retries an idempotent GET once on a dropped connection: drop two.
        ([Fault.reset(path="/items")] * 2, ErrorKind.NETWORK),
        ([Fault.error(502, path="/items")], ErrorKind.HTTP_5XX),
        ([Fault.too_many_requests(retry_after=None, path="/items")], ErrorKind.RATE_LIMITED),
    ],
)
async def test_transient_faults_are_retried(
    api: FakeApi,
    executor: Executor,
    sink: Sink,
    faults: list[Fault],
    kind: ErrorKind,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.add_items(5)
    api.inject(*faults)
    with caplog.at_level(logging.WARNING, logger="databite_stream"):
        result = await executor.run_sync(
            build_rest_connector(),
            "items",
            rest_connection(api),
            rest_integration(api),
            run_id="r",
            on_batch=sink,
        )
    assert result.success, result.error
    assert result.attempts == 2
    assert len(sink.record_ids) == 5
    assert f"attempt 1 failed ({kind.value})" in caplog.text
