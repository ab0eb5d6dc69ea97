"""Connector SDK: how a connector is declared in Python.

A connector is a :class:`Connector` object plus decorated async functions::

    shop = Connector(
        id="shop", name="Shop", version="1.0.0",
        integration_config=ShopApp, connection_config=ShopTokens,
        rate_limit=RateLimit(requests=100, window=60, strategy="per-connection"),
    )

    @shop.sync("orders", record=Order, schedule="15m", max_retries=3, timeout=120)
    async def orders(ctx: SyncContext[ShopApp, ShopTokens]) -> AsyncIterator[Batch]:
        since = (ctx.checkpoint or {}).get("since", 0)
        async for page in ...:
            yield Batch(records=page.orders, deletions=page.deleted_ids,
                        checkpoint={"since": page.watermark})

    @shop.action("refund", input=RefundIn, output=RefundOut, timeout=30)
    async def refund(ctx: ActionContext[ShopApp, ShopTokens], data: RefundIn) -> RefundOut: ...

    @shop.refresh
    async def refresh(ctx: RefreshContext[ShopApp, ShopTokens]) -> ShopTokens: ...

Contracts (enforced by the executor, see :mod:`databite_stream.execution.executor`):

* A **sync handler** is an async generator of :class:`Batch`. Each batch's records are
  validated against the sync's record model; its checkpoint becomes the committed checkpoint
  only after the executor's sink has accepted the batch. A retried attempt starts again from
  the last committed checkpoint (``ctx.checkpoint``), so handlers must resume from it.
* An **action handler** gets the validated input model and returns the output model (or a
  mapping validated against it).
* A **refresh** handler returns the new connection config; it is called at most once per
  execution, after an :class:`~databite_stream.retry.AuthError`.
* Handlers raise the typed errors of :mod:`databite_stream.retry` to control retries; any
  other exception is a ``handler`` failure and is not retried.

Invariants: connector id, name and version are non-empty; sync and action names are
non-empty, have no surrounding whitespace, and are unique within their kind; a record model
has the declared id field; timeouts are > 0 and max_retries >= 0. Violations raise
:class:`ConnectorDefinitionError` when the connector is declared, not when it first runs.
No default rate limit is applied: a connector without ``rate_limit`` is not throttled.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from databite_stream.connectors.http import HttpClient
from databite_stream.models import Checkpoint, Connection, Integration
from databite_stream.ratelimit import RateLimit
from databite_stream.retry import ConfigurationError

__all__ = (
    "ActionContext",
    "ActionDefinition",
    "ActionHandler",
    "Batch",
    "Connector",
    "ConnectorDefinitionError",
    "RefreshContext",
    "RefreshHandler",
    "SyncContext",
    "SyncDefinition",
    "SyncHandler",
)

IC = TypeVar("IC", bound=BaseModel)
CC = TypeVar("CC", bound=BaseModel)
F = TypeVar("F")


class ConnectorDefinitionError(ValueError):
    """A connector is declared wrongly (empty or duplicate names, bad limits...)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One unit of sync output.

    Attributes:
        records: new or changed records (record-model instances or mappings).
        deletions: ids of records removed upstream.
        checkpoint: the cursor after this batch; ``None`` keeps the previous one.
    """

    records: Sequence[BaseModel | Mapping[str, Any]] = ()
    deletions: Sequence[str | int] = ()
    checkpoint: Checkpoint = None


@dataclass(frozen=True, slots=True)
class SyncContext(Generic[IC, CC]):
    """What a sync handler gets for one attempt.

    Attributes:
        connection / integration: the models (config holds the decrypted secrets).
        connection_config / integration_config: the configs parsed into the connector's models.
        http: rate-limited HTTP client bound to this connection's budget and deadline.
        checkpoint: the last committed checkpoint (None: full sync).
        run_id: identity of the run (same across attempts).
        attempt: 1-based attempt number.
        logger: logger for connector code (never log the config).
    """

    connection: Connection
    integration: Integration
    connection_config: CC
    integration_config: IC
    http: HttpClient
    checkpoint: Checkpoint
    run_id: str
    attempt: int
    logger: logging.Logger


@dataclass(frozen=True, slots=True)
class ActionContext(Generic[IC, CC]):
    """What an action handler gets for one attempt (see SyncContext)."""

    connection: Connection
    integration: Integration
    connection_config: CC
    integration_config: IC
    http: HttpClient
    correlation_id: str
    attempt: int
    logger: logging.Logger


@dataclass(frozen=True, slots=True)
class RefreshContext(Generic[IC, CC]):
    """What a refresh handler gets: the current (rejected) credentials and an HTTP client."""

    connection: Connection
    integration: Integration
    connection_config: CC
    integration_config: IC
    http: HttpClient
    logger: logging.Logger


SyncHandler = Callable[[SyncContext[IC, CC]], AsyncIterator[Batch]]
ActionHandler = Callable[[ActionContext[IC, CC], Any], Awaitable[Any]]
RefreshHandler = Callable[[RefreshContext[IC, CC]], Awaitable[BaseModel | Mapping[str, Any]]]


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConnectorDefinitionError(f"{kind} name must be a non-empty string, got {name!r}")
    if name != name.strip():
        raise ConnectorDefinitionError(
            f"{kind} name {name!r} has leading/trailing whitespace; remove it"
        )


def _check_limits(what: str, max_retries: int, timeout: float) -> None:
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConnectorDefinitionError(f"{what}: max_retries must be an int >= 0")
    if not timeout > 0:
        raise ConnectorDefinitionError(f"{what}: timeout must be > 0 seconds, got {timeout}")


@dataclass(frozen=True, slots=True)
class SyncDefinition(Generic[IC, CC]):
    """A declared sync.

    Attributes:
        name: unique within the connector; part of job ids and record keys.
        handler: async generator function yielding Batch.
        record_model: pydantic model every record is validated against.
        schedule: default schedule string (e.g. ``"15m"``, ``"0 9 * * 1-5"``), or None to
            use the connection's ``sync_interval``.
        max_retries: retries after the first attempt (default 3).
        timeout: seconds per attempt, the whole handler included (default 300).
        id_field: record model field that identifies a record (default ``"id"``).
    """

    name: str
    handler: SyncHandler[IC, CC]
    record_model: type[BaseModel]
    schedule: str | None = None
    max_retries: int = 3
    timeout: float = 300.0
    id_field: str = "id"
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("sync", self.name)
        _check_limits(f"sync {self.name!r}", self.max_retries, self.timeout)
        if self.schedule is not None and not self.schedule.strip():
            raise ConnectorDefinitionError(f"sync {self.name!r}: schedule must not be blank")
        if self.id_field not in self.record_model.model_fields:
            raise ConnectorDefinitionError(
                f"sync {self.name!r}: record model {self.record_model.__name__} has no "
                f"field {self.id_field!r} to use as record id"
            )


@dataclass(frozen=True, slots=True)
class ActionDefinition(Generic[IC, CC]):
    """A declared action.

    Attributes:
        name: unique within the connector.
        handler: ``async (ctx, input_model) -> output``.
        input_model / output_model: validated before / after the handler.
        max_retries: retries after the first attempt (default 0: actions usually write, and a
            retried write after a timeout may happen twice; opt in for idempotent actions).
        timeout: seconds per attempt (default 30).
    """

    name: str
    handler: ActionHandler[IC, CC]
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    max_retries: int = 0
    timeout: float = 30.0
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("action", self.name)
        _check_limits(f"action {self.name!r}", self.max_retries, self.timeout)


class Connector(Generic[IC, CC]):
    """A connector: identity, config models, optional rate limit and refresh, syncs, actions.

    Args:
        id: unique connector id (registry key, part of rate-limit keys).
        name: human name.
        version: connector version string.
        integration_config / connection_config: pydantic models of the two configs.
        rate_limit: upstream budget; None (default) means not throttled.
        description: free text.
    """

    def __init__(
        self,
        *,
        id: str,
        name: str,
        version: str,
        integration_config: type[IC],
        connection_config: type[CC],
        rate_limit: RateLimit | None = None,
        description: str = "",
    ) -> None:
        for label, value in (("id", id), ("name", name), ("version", version)):
            if not isinstance(value, str) or not value.strip():
                raise ConnectorDefinitionError(f"connector {label} must be a non-empty string")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConnectorDefinitionError("rate_limit must be a RateLimit or None")
        self.id = id
        self.name = name
        self.version = version
        self.description = description
        self.integration_config = integration_config
        self.connection_config = connection_config
        self.rate_limit = rate_limit
        self.refresh_handler: RefreshHandler[IC, CC] | None = None
        self._syncs: dict[str, SyncDefinition[IC, CC]] = {}
        self._actions: dict[str, ActionDefinition[IC, CC]] = {}

    def __repr__(self) -> str:
        return (
            f"Connector(id={self.id!r}, version={self.version!r}, syncs={list(self._syncs)}, "
            f"actions={list(self._actions)})"
        )

    @property
    def syncs(self) -> Mapping[str, SyncDefinition[IC, CC]]:
        return MappingProxyType(self._syncs)

    @property
    def actions(self) -> Mapping[str, ActionDefinition[IC, CC]]:
        return MappingProxyType(self._actions)

    def add_sync(self, definition: SyncDefinition[IC, CC]) -> None:
        if definition.name in self._syncs:
            raise ConnectorDefinitionError(
                f"connector {self.id!r} already has a sync named {definition.name!r}"
            )
        self._syncs[definition.name] = definition

    def add_action(self, definition: ActionDefinition[IC, CC]) -> None:
        if definition.name in self._actions:
            raise ConnectorDefinitionError(
                f"connector {self.id!r} already has an action named {definition.name!r}"
            )
        self._actions[definition.name] = definition

    def sync(
        self,
        name: str,
        *,
        record: type[BaseModel],
        schedule: str | None = None,
        max_retries: int = 3,
        timeout: float = 300.0,
        id_field: str = "id",
        description: str = "",
    ) -> Callable[[SyncHandler[IC, CC]], SyncHandler[IC, CC]]:
        """Decorator declaring a sync (see SyncDefinition)."""

        def register(handler: SyncHandler[IC, CC]) -> SyncHandler[IC, CC]:
            self.add_sync(
                SyncDefinition(
                    name=name,
                    handler=handler,
                    record_model=record,
                    schedule=schedule,
                    max_retries=max_retries,
                    timeout=timeout,
                    id_field=id_field,
                    description=description,
                )
            )
            return handler

        return register

    def action(
        self,
        name: str,
        *,
        input: type[BaseModel],
        output: type[BaseModel],
        max_retries: int = 0,
        timeout: float = 30.0,
        description: str = "",
    ) -> Callable[[ActionHandler[IC, CC]], ActionHandler[IC, CC]]:
        """Decorator declaring an action (see ActionDefinition)."""

        def register(handler: ActionHandler[IC, CC]) -> ActionHandler[IC, CC]:
            self.add_action(
                ActionDefinition(
                    name=name,
                    handler=handler,
                    input_model=input,
                    output_model=output,
                    max_retries=max_retries,
                    timeout=timeout,
                    description=description,
                )
            )
            return handler

        return register

    def refresh(self, handler: RefreshHandler[IC, CC]) -> RefreshHandler[IC, CC]:
        """Decorator declaring the token refresh; at most one per connector."""
        if self.refresh_handler is not None:
            raise ConnectorDefinitionError(f"connector {self.id!r} already has a refresh")
        self.refresh_handler = handler
        return handler

    def get_sync(self, name: str) -> SyncDefinition[IC, CC]:
        """The sync ``name``; ConfigurationError listing the known syncs otherwise."""
        try:
            return self._syncs[name]
        except KeyError:
            raise ConfigurationError(
                f"sync {name!r} not found in connector {self.id!r}; "
                f"known syncs: {sorted(self._syncs) or 'none'}"
            ) from None

    def get_action(self, name: str) -> ActionDefinition[IC, CC]:
        """The action ``name``; ConfigurationError listing the known actions otherwise."""
        try:
            return self._actions[name]
        except KeyError:
            raise ConfigurationError(
                f"action {name!r} not found in connector {self.id!r}; "
                f"known actions: {sorted(self._actions) or 'none'}"
            ) from None
