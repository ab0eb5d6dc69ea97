"""No planted secret reaches a result, an error, a record, a batch or a log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from databite_stream.connectors import rest_connector
from databite_stream.execution import Executor
from databite_stream.models import ActionRequest, ErrorKind
from databite_stream.testing import FakeApi, Fault, rest_connection, rest_integration

from .conftest import Sink


async def test_no_secret_leaks_anywhere(
    api: FakeApi, executor: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    conn, integ = rest_connection(api), rest_integration(api)
    access, refresh = conn.config["access_token"], conn.config["refresh_token"]
    api.add_items(30)
    api.put_item("item-leaky", f"pasted {access} by mistake", 1)  # upstream data holds a secret
    api.inject(
        Fault.error(503, path="/items", body="upstream rejects token {token}"),  # retried
        Fault.error(401, path="/items", body="invalid token {token}"),  # refresh
        Fault.error(400, path="/deletions", body="bad request from {token}"),  # final failure
    )
    emitted: list[dict[str, Any]] = []

    async def on_config(connection_id: str, config: dict[str, Any]) -> None:
        emitted.append(config)

    sink = Sink()
    produced: list[str] = []
    with caplog.at_level(logging.DEBUG):
        synced = await executor.run_sync(
            rest_connector,
            "items",
            conn,
            integ,
            run_id="r",
            on_batch=sink,
            on_connection_config=on_config,
        )
        assert synced.error_kind is ErrorKind.HTTP_4XX
        assert api.token_refreshes == 1
        [new_config] = emitted
        refreshed = conn.model_copy(update={"config": new_config})
        created = await executor.run_action(
            rest_connector,
            "create_item",
            refreshed,
            integ,
            ActionRequest(
                correlation_id="c",
                connection_id=conn.id,
                action="create_item",
                input={"name": f"echo {new_config['access_token']}", "value": 1},
                requested_at_ms=0,
            ),
        )
        assert created.success
        produced.append(repr(conn))
        produced.append(str(integ))

    produced += [synced.model_dump_json(), created.model_dump_json(), str(synced.error)]
    produced += [batch.model_dump_json() for batch in sink.batches]
    produced += [record.getMessage() for record in caplog.records]
    produced += [record.exc_text or "" for record in caplog.records]
    secrets = {
        access,
        refresh,
        api.client_secret,
        new_config["access_token"],
        new_config["refresh_token"],
    }
    everything = "\n".join(produced)
    for secret in secrets:
        assert secret not in everything
    # ...and the places that held them show the mask instead.
    leaky = [r for b in sink.batches for r in b.records if r.record_id == "item-leaky"]
    assert leaky[0].data["name"] == "pasted *** by mistake"
    assert "bad request from ***" in (synced.error or "")
    assert isinstance(created.output, dict)
    assert created.output["name"] == "echo ***"
    assert "upstream rejects token ***" in caplog.text
