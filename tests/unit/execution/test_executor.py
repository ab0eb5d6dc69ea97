"""Executor without network: checkpoints, retries, timeouts, refresh, validation, errors."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from databite_stream.connectors import Batch, Connector, echo_connector
from databite_stream.connectors.sdk import ActionContext, RefreshContext, SyncContext
from databite_stream.execution import Executor
from databite_stream.models import (
    ActionRequest,
    Connection,
    ErrorKind,
    Integration,
    SyncBatch,
)
from databite_stream.retry import (
    AuthError,
    HttpClientError,
    RateLimited,
    ServerError,
    backoff_delay,
)
from databite_stream.testing import echo_connection, echo_integration


class Sleeps:
    """Injected backoff sleep: records delays, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Sink:
    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[SyncBatch] = []
        self.fail_at = fail_at

    async def __call__(self, batch: SyncBatch) -> None:
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise ConnectionError("broker unavailable")
        self.batches.append(batch)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def executor(sleeps: Sleeps) -> AsyncIterator[Executor]:
    async with Executor(sleep=sleeps, rng=random.Random(42), backoff_base=1.0) as ex:
        yield ex


class Cfg(BaseModel):
    token: str = "tok-initial"


class Rec(BaseModel):
    id: str
    value: int


def custom(**kwargs: Any) -> tuple[Connector[Cfg, Cfg], Connection, Integration]:
    connector: Connector[Cfg, Cfg] = Connector(
        id="custom", name="Custom", version="0", integration_config=Cfg, connection_config=Cfg
    )
    connection = Connection(
        id="c1", integration_id="i1", connector_id="custom", config={"token": "tok-initial"}
    )
    integration = Integration(id="i1", name="i", connector_id="custom", config={})
    return connector, connection, integration


Ctx = SyncContext[Cfg, Cfg]


async def test_echo_sync_hands_on_batches_with_checkpoints(executor: Executor) -> None:
    sink = Sink()
    conn = echo_connection(record_count=250, batch_size=100)
    result = await executor.run_sync(
        echo_connector, "records", conn, echo_integration(), run_id="job:1", on_batch=sink
    )
    assert result.success
    assert result.attempts == 1
    assert result.error_kind is ErrorKind.NONE
    assert [b.checkpoint for b in sink.batches] == [
        {"offset": 100},
        {"offset": 200},
        {"offset": 250},
    ]
    assert [len(b.records) for b in sink.batches] == [100, 100, 50]
    first = sink.batches[0].records[0]
    assert (first.record_id, first.run_id, first.data["text"]) == ("rec-0", "job:1", "record 0")
    assert result.summary is not None
    assert (result.summary.records, result.summary.batches) == (250, 3)
    assert result.summary.checkpoint == {"offset": 250}
    assert result.execution_time_ms > 0
    assert result.finished_at_ms >= result.started_at_ms

    again = await executor.run_sync(
        echo_connector,
        "records",
        conn,
        echo_integration(),
        run_id="job:2",
        on_batch=sink,
        checkpoint=result.summary.checkpoint,
    )
    assert again.success
    assert again.summary is not None
    assert again.summary.records == 0


async def test_checkpoint_is_committed_only_after_the_sink_returns(executor: Executor) -> None:
    sink = Sink(fail_at=1)
    result = await executor.run_sync(
        echo_connector,
        "records",
        echo_connection(record_count=300, batch_size=100),
        echo_integration(),
        run_id="r",
        on_batch=sink,
    )
    assert not result.success
    assert result.error_kind is ErrorKind.SINK
    assert "broker unavailable" in (result.error or "")
    assert result.summary is not None
    assert result.summary.checkpoint == {"offset": 100}  # batch 2 was never handed on
    assert result.summary.records == 100


async def test_retry_resumes_from_last_committed_checkpoint(
    executor: Executor, sleeps: Sleeps
) -> None:
    connector, conn, integ = custom()
    seen: list[Any] = []

    @connector.sync("numbers", record=Rec, max_retries=2, timeout=5)
    async def numbers(ctx: Ctx) -> AsyncIterator[Batch]:
        seen.append(ctx.checkpoint)
        start = ctx.checkpoint or 0
        assert isinstance(start, int)
        for i in range(start, 4):
            if i == 2 and ctx.attempt == 1:
                raise ServerError("upstream 502", status=502)
            yield Batch(records=[{"id": f"n{i}", "value": i}], checkpoint=i + 1)

    sink = Sink()
    result = await executor.run_sync(connector, "numbers", conn, integ, run_id="r", on_batch=sink)
    assert result.success
    assert result.attempts == 2
    assert seen == [None, 2]
    assert [r.record_id for b in sink.batches for r in b.records] == ["n0", "n1", "n2", "n3"]
    assert [b.attempt for b in sink.batches] == [1, 1, 2, 2]
    assert [b.index for b in sink.batches] == [0, 1, 2, 3]
    assert result.summary is not None
    assert result.summary.checkpoint == 4
    assert len(sleeps.delays) == 1


async def test_backoff_uses_full_jitter_from_the_injected_rng(
    executor: Executor, sleeps: Sleeps
) -> None:
    connector, conn, integ = custom()

    @connector.sync("down", record=Rec, max_retries=3, timeout=5)
    async def down(ctx: Ctx) -> AsyncIterator[Batch]:
        raise ServerError("GET /x returned 503", status=503)
        yield Batch()

    result = await executor.run_sync(connector, "down", conn, integ, run_id="r", on_batch=Sink())
    assert not result.success
    assert result.attempts == 4
    assert result.error_kind is ErrorKind.HTTP_5XX
    assert "gave up after 4 attempt(s)" in (result.error or "")
    rng = random.Random(42)
    assert sleeps.delays == [backoff_delay(n, 1.0, 30.0, rng) for n in (1, 2, 3)]


async def test_retry_after_is_honoured(executor: Executor, sleeps: Sleeps) -> None:
    connector, conn, integ = custom()
    calls = 0

    @connector.sync("limited", record=Rec, max_retries=1, timeout=5)
    async def limited(ctx: Ctx) -> AsyncIterator[Batch]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited("429", retry_after=7.5)
        yield Batch()

    result = await executor.run_sync(connector, "limited", conn, integ, run_id="r", on_batch=Sink())
    assert result.success
    assert result.attempts == 2
    assert sleeps.delays[0] >= 7.5


async def test_timeout_cancels_the_attempt_and_counts_it(executor: Executor) -> None:
    connector, conn, integ = custom()
    cancelled = 0

    @connector.sync("slow", record=Rec, max_retries=1, timeout=0.05)
    async def slow(ctx: Ctx) -> AsyncIterator[Batch]:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        yield Batch()

    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await executor.run_sync(connector, "slow", conn, integ, run_id="r", on_batch=Sink())
    assert loop.time() - started < 1.0
    assert not result.success
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.attempts == 2
    assert cancelled == 2
    assert "exceeded the 0.05 s timeout" in (result.error or "")


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (HttpClientError("GET /x returned 404", status=404), ErrorKind.HTTP_4XX, "404"),
        (KeyError("missing"), ErrorKind.HANDLER, "KeyError: 'missing'"),
        (asyncio.CancelledError(), ErrorKind.CANCELLED, "cancelled"),
    ],
)
async def test_permanent_failures_are_results_not_exceptions(
    executor: Executor, exc: BaseException, kind: ErrorKind, text: str
) -> None:
    connector, conn, integ = custom()

    @connector.sync("broken", record=Rec, max_retries=3, timeout=5)
    async def broken(ctx: Ctx) -> AsyncIterator[Batch]:
        raise exc
        yield Batch()

    result = await executor.run_sync(connector, "broken", conn, integ, run_id="r", on_batch=Sink())
    assert not result.success
    assert result.attempts == 1
    assert result.error_kind is kind
    assert text in (result.error or "")


async def test_invalid_record_names_the_field(executor: Executor) -> None:
    connector, conn, integ = custom()

    @connector.sync("bad", record=Rec, timeout=5)
    async def bad(ctx: Ctx) -> AsyncIterator[Batch]:
        yield Batch(records=[{"id": "a", "value": 1}, {"id": "b", "value": "many"}])

    sink = Sink()
    result = await executor.run_sync(connector, "bad", conn, integ, run_id="r", on_batch=sink)
    assert result.error_kind is ErrorKind.VALIDATION
    assert result.attempts == 1
    assert "records[1].value: Input should be a valid integer" in (result.error or "")
    assert "many" not in (result.error or "")  # values are not quoted
    assert sink.batches == []


async def test_non_generator_handler_is_explained(executor: Executor) -> None:
    connector, conn, integ = custom()

    async def not_a_generator(ctx: Ctx) -> list[Batch]:
        return []

    connector.sync("wrong", record=Rec)(not_a_generator)  # type: ignore[arg-type]
    result = await executor.run_sync(connector, "wrong", conn, integ, run_id="r", on_batch=Sink())
    assert "must be an async generator function" in (result.error or "")


async def test_caller_cancellation_propagates(executor: Executor) -> None:
    connector, conn, integ = custom()
    started = asyncio.Event()

    @connector.sync("forever", record=Rec, timeout=60)
    async def forever(ctx: Ctx) -> AsyncIterator[Batch]:
        started.set()
        await asyncio.sleep(60)
        yield Batch()

    task = asyncio.create_task(
        executor.run_sync(connector, "forever", conn, integ, run_id="r", on_batch=Sink())
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("conn_update", "kind", "text"),
    [
        ({"connector_id": "other"}, ErrorKind.CONFIG, "belongs to connector 'other'"),
        ({"integration_id": "i9"}, ErrorKind.CONFIG, "belongs to integration 'i9'"),
        ({"config": {"api_key": ""}}, ErrorKind.VALIDATION, "connection.config.api_key"),
    ],
)
async def test_mismatches_and_bad_configs_fail_before_any_attempt(
    executor: Executor, conn_update: dict, kind: ErrorKind, text: str
) -> None:
    conn = echo_connection().model_copy(update=conn_update)
    result = await executor.run_sync(
        echo_connector, "records", conn, echo_integration(), run_id="r", on_batch=Sink()
    )
    assert result.error_kind is kind
    assert result.attempts == 0
    assert text in (result.error or "")


async def test_unknown_sync_is_a_config_error(executor: Executor) -> None:
    result = await executor.run_sync(
        echo_connector, "nope", echo_connection(), echo_integration(), run_id="r", on_batch=Sink()
    )
    assert result.error_kind is ErrorKind.CONFIG
    assert "known syncs: ['records']" in (result.error or "")


def echo_request(data: dict[str, Any]) -> ActionRequest:
    return ActionRequest(
        correlation_id="corr-1",
        connection_id="conn-echo",
        action="echo",
        input=data,
        requested_at_ms=0,
    )


async def test_echo_action_validates_input_and_output(executor: Executor) -> None:
    ok = await executor.run_action(
        echo_connector, "echo", echo_connection(), echo_integration(), echo_request({"text": "hi"})
    )
    assert ok.success
    assert ok.output == {"text": "hi", "length": 2}
    assert ok.attempts == 1
    bad = await executor.run_action(
        echo_connector, "echo", echo_connection(), echo_integration(), echo_request({})
    )
    assert not bad.success
    assert bad.attempts == 0
    assert bad.error_kind is ErrorKind.VALIDATION
    assert "input.text: Field required" in (bad.error or "")


async def test_action_output_must_match_its_model(executor: Executor) -> None:
    connector, conn, integ = custom()

    @connector.action("make", input=Cfg, output=Rec)
    async def make(ctx: ActionContext[Cfg, Cfg], data: Cfg) -> dict[str, Any]:
        return {"id": "x"}

    request = ActionRequest(
        correlation_id="r", connection_id="c1", action="make", requested_at_ms=0
    )
    result = await executor.run_action(connector, "make", conn, integ, request)
    assert result.error_kind is ErrorKind.VALIDATION
    assert "output.value: Field required" in (result.error or "")


async def test_auth_error_refreshes_once_and_emits_the_new_config(executor: Executor) -> None:
    connector, conn, integ = custom()
    refreshes = 0
    emitted: list[tuple[str, dict[str, Any]]] = []

    @connector.sync("me", record=Rec, max_retries=0, timeout=5)
    async def me(ctx: Ctx) -> AsyncIterator[Batch]:
        if ctx.connection_config.token != "tok-refreshed":
            raise AuthError("401 from upstream", status=401)
        yield Batch(records=[{"id": "me", "value": 1}])

    @connector.refresh
    async def refresh(ctx: RefreshContext[Cfg, Cfg]) -> Cfg:
        nonlocal refreshes
        refreshes += 1
        return Cfg(token="tok-refreshed")

    async def on_config(connection_id: str, config: dict[str, Any]) -> None:
        emitted.append((connection_id, config))

    sink = Sink()
    result = await executor.run_sync(
        connector, "me", conn, integ, run_id="r", on_batch=sink, on_connection_config=on_config
    )
    assert result.success
    assert result.attempts == 2
    assert refreshes == 1
    assert emitted == [("c1", {"token": "tok-refreshed"})]
    assert "tok-refreshed" not in result.model_dump_json()
    assert "tok-refreshed" not in sink.batches[0].model_dump_json()


async def test_a_second_auth_error_after_refresh_ends_the_run(executor: Executor) -> None:
    connector, conn, integ = custom()
    refreshes = 0

    @connector.sync("me", record=Rec, max_retries=3, timeout=5)
    async def me(ctx: Ctx) -> AsyncIterator[Batch]:
        raise AuthError("401 from upstream", status=401)
        yield Batch()

    @connector.refresh
    async def refresh(ctx: RefreshContext[Cfg, Cfg]) -> dict[str, str]:
        nonlocal refreshes
        refreshes += 1
        return {"token": "tok-new"}

    result = await executor.run_sync(connector, "me", conn, integ, run_id="r", on_batch=Sink())
    assert not result.success
    assert result.error_kind is ErrorKind.AUTH
    assert result.attempts == 2
    assert refreshes == 1
    assert "after a token refresh" in (result.error or "")


async def test_failed_refresh_is_an_auth_error(executor: Executor) -> None:
    connector, conn, integ = custom()

    @connector.sync("me", record=Rec, timeout=5)
    async def me(ctx: Ctx) -> AsyncIterator[Batch]:
        raise AuthError("401", status=401)
        yield Batch()

    @connector.refresh
    async def refresh(ctx: RefreshContext[Cfg, Cfg]) -> dict[str, str]:
        raise HttpClientError("POST /oauth/token returned 400: invalid_grant", status=400)

    result = await executor.run_sync(connector, "me", conn, integ, run_id="r", on_batch=Sink())
    assert result.error_kind is ErrorKind.AUTH
    assert result.attempts == 1
    assert "token refresh failed: POST /oauth/token returned 400" in (result.error or "")


@pytest.mark.parametrize("failure", ["http_4xx", "http_5xx_retried", "handler", "timeout"])
async def test_failed_runs_leave_no_cyclic_garbage(executor: Executor, failure: str) -> None:
    """The worker raises the young-generation GC threshold to 500,000 (``stream.heap``): a
    run that left cyclic garbage (an exception's traceback holding its frame, say) would
    make collections of ~1 s under a failure-heavy load instead of none."""
    connector, conn, integ = custom()

    @connector.sync("failing", record=Rec, max_retries=2, timeout=0.01)
    async def failing(ctx: Ctx) -> AsyncIterator[Batch]:
        if failure == "http_4xx":
            raise HttpClientError("GET /x returned 404", status=404)
        if failure == "http_5xx_retried":
            raise ServerError("GET /x returned 503", status=503)
        if failure == "handler":
            raise KeyError("missing")
        await asyncio.sleep(10)
        yield Batch()

    async def runs(n: int) -> None:
        for i in range(n):
            result = await executor.run_sync(
                connector, "failing", conn, integ, run_id=f"r{i}", on_batch=Sink()
            )
            assert not result.success, result

    await runs(5)  # first-use caches (loggers, validators) are not per-run garbage
    gc.collect()
    gc.disable()
    try:
        await runs(50)
        assert gc.collect() == 0
    finally:
        gc.enable()
