"""A generic REST/JSON connector: bearer tokens with refresh, cursor pagination, incremental sync.

The API it speaks (served locally by :mod:`databite_stream.testing.fake_api`):

* ``POST /oauth/token`` ``{grant_type: "refresh_token", refresh_token, client_id,
  client_secret}`` -> ``{access_token, refresh_token}``.
* ``GET /items?updated_since=<ms>&limit=<n>[&cursor=<c>]`` -> ``{items: [{id, name, value,
  updated_at}], next_cursor, now}``, ordered by ``(updated_at, id)``; ``updated_at`` values
  are unique and strictly increasing with each change.
* ``GET /deletions?since=<ms>&limit=<n>[&cursor=<c>]`` -> ``{deletions: [{id, deleted_at}],
  next_cursor, now}``.
* ``POST /items {name, value}`` -> the created item.

Sync ``items`` checkpoint: ``{"items_since": ms, "deletions_since": ms}``. Each page is one
batch whose checkpoint is the last ``updated_at`` (or ``deleted_at``) on it, so a retried
attempt resumes after the last page that was handed on. On the first run (no checkpoint) the
deletion cursor starts at the server time of the first page: older deletions concern records
we never received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from databite_stream.connectors.sdk import (
    ActionContext,
    Batch,
    Connector,
    RefreshContext,
    SyncContext,
)
from databite_stream.ratelimit import RateLimit
from databite_stream.retry import AuthError, InvalidResponse

__all__ = (
    "CreateItemInput",
    "CreatedItem",
    "Item",
    "RestConnectionConfig",
    "RestIntegrationConfig",
    "build_rest_connector",
    "rest_connector",
)


class RestIntegrationConfig(BaseModel):
    """The OAuth app: where the API is and its client credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    page_size: int = Field(default=100, ge=1, le=10_000)


class RestConnectionConfig(BaseModel):
    """One account's tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_token: str = Field(min_length=1)
    refresh_token: str | None = None


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    value: int
    updated_at: int


class CreateItemInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    value: int


class CreatedItem(Item):
    pass


RestContext = SyncContext[RestIntegrationConfig, RestConnectionConfig]


def _auth(config: RestConnectionConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.access_token}"}


def _url(integration: RestIntegrationConfig, path: str) -> str:
    return integration.base_url.rstrip("/") + path


def _cursor(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"checkpoint cursor must be an integer, got {value!r}")
    return int(value)


def _expect(payload: Any, key: str, url: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise InvalidResponse(f"GET {url}: expected a JSON object with a {key!r} list")
    value: list[Any] = payload[key]
    return value


def build_rest_connector(
    *, id: str = "rest", rate_limit: RateLimit | None = None, items_timeout: float = 300.0
) -> Connector[RestIntegrationConfig, RestConnectionConfig]:
    """A REST connector; ``rate_limit`` is the upstream's published budget (none by default)."""
    rest: Connector[RestIntegrationConfig, RestConnectionConfig] = Connector(
        id=id,
        name="Generic REST/JSON API",
        version="1.0.0",
        integration_config=RestIntegrationConfig,
        connection_config=RestConnectionConfig,
        rate_limit=rate_limit,
        description="Items API with bearer tokens, cursor pagination and deletions.",
    )

    @rest.sync("items", record=Item, schedule="15m", max_retries=3, timeout=items_timeout)
    async def items(ctx: RestContext) -> AsyncIterator[Batch]:
        app, tokens = ctx.integration_config, ctx.connection_config
        previous = ctx.checkpoint if isinstance(ctx.checkpoint, dict) else {}
        items_since = _cursor(previous.get("items_since")) or 0
        deletions_since = _cursor(previous.get("deletions_since"))

        url = _url(app, "/items")
        cursor: str | None = None
        while True:
            params: dict[str, str | int | float] = {
                "updated_since": items_since,
                "limit": app.page_size,
            }
            if cursor:
                params["cursor"] = cursor
            page = await ctx.http.get_json(url, params=params, headers=_auth(tokens))
            records = _expect(page, "items", url)
            if deletions_since is None:
                deletions_since = int(page.get("now", 0))
            if records:
                items_since = int(records[-1]["updated_at"])
            checkpoint: dict[str, JsonValue] = {
                "items_since": items_since,
                "deletions_since": deletions_since,
            }
            if records or checkpoint != previous:
                yield Batch(records=records, checkpoint=checkpoint)
                previous = checkpoint
            cursor = page.get("next_cursor")
            if not cursor:
                break

        url = _url(app, "/deletions")
        cursor = None
        while True:
            params = {"since": deletions_since, "limit": app.page_size}
            if cursor:
                params["cursor"] = cursor
            page = await ctx.http.get_json(url, params=params, headers=_auth(tokens))
            deleted = _expect(page, "deletions", url)
            if deleted:
                deletions_since = int(deleted[-1]["deleted_at"])
                yield Batch(
                    deletions=[str(d["id"]) for d in deleted],
                    checkpoint={"items_since": items_since, "deletions_since": deletions_since},
                )
            cursor = page.get("next_cursor")
            if not cursor:
                break

    @rest.action("create_item", input=CreateItemInput, output=CreatedItem, timeout=30.0)
    async def create_item(
        ctx: ActionContext[RestIntegrationConfig, RestConnectionConfig], data: CreateItemInput
    ) -> Any:
        return await ctx.http.post_json(
            _url(ctx.integration_config, "/items"),
            json=data.model_dump(),
            headers=_auth(ctx.connection_config),
        )

    @rest.refresh
    async def refresh(
        ctx: RefreshContext[RestIntegrationConfig, RestConnectionConfig],
    ) -> RestConnectionConfig:
        tokens, app = ctx.connection_config, ctx.integration_config
        if not tokens.refresh_token:
            raise AuthError(
                "the access token was rejected and the connection has no refresh_token; "
                "re-authorize the connection"
            )
        answer = await ctx.http.post_json(
            _url(app, "/oauth/token"),
            json={
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh_token,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
            },
        )
        if not isinstance(answer, dict) or "access_token" not in answer:
            raise InvalidResponse("token endpoint answered without an access_token")
        return RestConnectionConfig(
            access_token=answer["access_token"],
            refresh_token=answer.get("refresh_token", tokens.refresh_token),
        )

    return rest


#: The built-in instance (no rate limit: the upstream's budget is a deployment choice).
rest_connector = build_rest_connector()
