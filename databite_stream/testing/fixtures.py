"""Factories of integrations and connections for the built-in connectors (tests, demo, bench).

Nothing here talks to Kafka; the REST helpers point at a running :class:`FakeApi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from databite_stream.models import Connection, Integration

if TYPE_CHECKING:
    from databite_stream.testing.fake_api import FakeApi, TokenPair

__all__ = ("echo_connection", "echo_integration", "rest_connection", "rest_integration")


def rest_integration(
    api: FakeApi, *, id: str = "int-rest", connector_id: str = "rest", **config: Any
) -> Integration:
    """An integration of the REST connector with the fake API's client credentials."""
    return Integration(
        id=id,
        name=f"REST app {id}",
        connector_id=connector_id,
        config={
            "base_url": api.base_url,
            "client_id": api.client_id,
            "client_secret": api.client_secret,
            "page_size": api.page_size,
            **config,
        },
    )


def rest_connection(
    api: FakeApi,
    *,
    id: str = "conn-rest",
    integration_id: str = "int-rest",
    connector_id: str = "rest",
    tokens: TokenPair | None = None,
    **fields: Any,
) -> Connection:
    """A connection with a fresh token pair issued by ``api`` (or the given ``tokens``)."""
    pair = tokens or api.issue_tokens()
    return Connection(
        id=id,
        integration_id=integration_id,
        connector_id=connector_id,
        config={"access_token": pair.access_token, "refresh_token": pair.refresh_token},
        **fields,
    )


def echo_integration(*, id: str = "int-echo") -> Integration:
    return Integration(id=id, name="Echo", connector_id="echo", config={})


def echo_connection(
    *,
    id: str = "conn-echo",
    integration_id: str = "int-echo",
    api_key: str = "echo-key-0000",
    record_count: int = 100,
    batch_size: int = 100,
) -> Connection:
    return Connection(
        id=id,
        integration_id=integration_id,
        connector_id="echo",
        config={"api_key": api_key, "record_count": record_count, "batch_size": batch_size},
    )
