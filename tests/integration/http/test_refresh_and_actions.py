"""Token refresh on an expired token, and action input validation before any HTTP call."""

from __future__ import annotations

from typing import Any

from databite_stream.connectors import rest_connector
from databite_stream.execution import Executor
from databite_stream.models import ActionRequest, ErrorKind
from databite_stream.testing import FakeApi, rest_connection, rest_integration

from .conftest import Sink


def request(data: dict[str, Any], connection_id: str = "conn-rest") -> ActionRequest:
    return ActionRequest(
        correlation_id="corr-1",
        connection_id=connection_id,
        action="create_item",
        input=data,
        requested_at_ms=1_700_000_000_000,
    )


async def test_expired_token_is_refreshed_once_and_the_run_succeeds(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    api.add_items(20)
    conn = rest_connection(api)
    api.expire_token(conn.config["access_token"])
    emitted: list[tuple[str, dict[str, Any]]] = []

    async def on_config(connection_id: str, config: dict[str, Any]) -> None:
        emitted.append((connection_id, config))

    result = await executor.run_sync(
        rest_connector,
        "items",
        conn,
        rest_integration(api),
        run_id="r",
        on_batch=sink,
        on_connection_config=on_config,
    )
    assert result.success, result.error
    assert result.attempts == 2
    assert api.token_refreshes == 1
    assert len(sink.record_ids) == 20
    [(connection_id, config)] = emitted
    assert connection_id == conn.id
    assert config["access_token"] != conn.config["access_token"]
    assert config["refresh_token"] != conn.config["refresh_token"]  # rotated
    assert [(r.path, r.status) for r in api.requests[:3]] == [
        ("/items", 401),
        ("/oauth/token", 200),
        ("/items", 200),
    ]
    assert api.requests[2].token == config["access_token"]


async def test_unusable_refresh_token_fails_with_an_auth_error(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    conn = rest_connection(api)
    api.expire_token(conn.config["access_token"])
    stale = conn.model_copy(update={"config": {**conn.config, "refresh_token": "rt-revoked"}})
    result = await executor.run_sync(
        rest_connector, "items", stale, rest_integration(api), run_id="r", on_batch=sink
    )
    assert not result.success
    assert result.error_kind is ErrorKind.AUTH
    assert "token refresh failed" in (result.error or "")
    assert "re-authorize the connection" in (result.error or "")
    assert api.token_refreshes == 0


async def test_invalid_action_input_is_rejected_before_any_http_call(
    api: FakeApi, executor: Executor
) -> None:
    conn = rest_connection(api)
    result = await executor.run_action(
        rest_connector,
        "create_item",
        conn,
        rest_integration(api),
        request({"value": "not a number"}),
    )
    assert not result.success
    assert result.attempts == 0
    assert result.error_kind is ErrorKind.VALIDATION
    assert "input.name: Field required" in (result.error or "")
    assert "input.value: Input should be a valid integer" in (result.error or "")
    assert api.requests == []


async def test_action_creates_an_item(api: FakeApi, executor: Executor) -> None:
    result = await executor.run_action(
        rest_connector,
        "create_item",
        rest_connection(api),
        rest_integration(api),
        request({"name": "widget", "value": 3}),
    )
    assert result.success, result.error
    assert result.attempts == 1
    assert isinstance(result.output, dict)
    assert api.items[str(result.output["id"])].name == "widget"
