"""Connector declaration rules and the registry (built-ins, entry-point plugins, errors)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from databite_stream.connectors import (
    ENTRY_POINT_GROUP,
    Batch,
    Connector,
    ConnectorDefinitionError,
    ConnectorRegistry,
    ConnectorRegistryError,
    default_registry,
)
from databite_stream.retry import ConfigurationError


class Cfg(BaseModel):
    pass


class Rec(BaseModel):
    id: str


def make(connector_id: str = "shop") -> Connector[Cfg, Cfg]:
    return Connector(
        id=connector_id,
        name="Shop",
        version="1.0",
        integration_config=Cfg,
        connection_config=Cfg,
    )


async def noop_sync(ctx: Any) -> AsyncIterator[Batch]:
    yield Batch()


async def noop_action(ctx: Any, data: Any) -> Any:
    return {}


def test_decorators_register_syncs_and_actions() -> None:
    shop = make()
    shop.sync("orders", record=Rec, schedule="15m", max_retries=2, timeout=5)(noop_sync)
    shop.action("refund", input=Cfg, output=Cfg)(noop_action)
    assert list(shop.syncs) == ["orders"]
    assert shop.get_sync("orders").max_retries == 2
    assert shop.get_action("refund").max_retries == 0  # writes are not retried by default
    assert shop.rate_limit is None  # no silent default limit


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda c: c.sync("", record=Rec)(noop_sync), "non-empty"),
        (lambda c: c.sync(" orders", record=Rec)(noop_sync), "whitespace"),
        (lambda c: c.action("  ", input=Cfg, output=Cfg)(noop_action), "non-empty"),
        (lambda c: c.sync("s", record=Rec, timeout=0)(noop_sync), "timeout must be > 0"),
        (lambda c: c.sync("s", record=Rec, max_retries=-1)(noop_sync), "max_retries"),
        (lambda c: c.sync("s", record=Cfg)(noop_sync), "no field 'id'"),
        (lambda c: c.sync("s", record=Rec, schedule=" ")(noop_sync), "schedule"),
    ],
)
def test_invalid_declarations_fail_at_declaration(declare: Any, message: str) -> None:
    with pytest.raises(ConnectorDefinitionError, match=message):
        declare(make())


def test_duplicate_names_fail() -> None:
    shop = make()
    shop.sync("orders", record=Rec)(noop_sync)
    with pytest.raises(ConnectorDefinitionError, match="already has a sync named 'orders'"):
        shop.sync("orders", record=Rec)(noop_sync)
    shop.action("refund", input=Cfg, output=Cfg)(noop_action)
    with pytest.raises(ConnectorDefinitionError, match="already has an action"):
        shop.action("refund", input=Cfg, output=Cfg)(noop_action)


def test_connector_identity_is_required() -> None:
    with pytest.raises(ConnectorDefinitionError, match="id must be a non-empty"):
        make("")


def test_unknown_sync_error_lists_known_ones() -> None:
    shop = make()
    shop.sync("orders", record=Rec)(noop_sync)
    with pytest.raises(ConfigurationError, match=r"sync 'users' not found.*\['orders'\]"):
        shop.get_sync("users")


def test_registry_rejects_duplicate_ids_and_unknown_lookups() -> None:
    registry = ConnectorRegistry([make("a")])
    with pytest.raises(ConnectorRegistryError, match="'a' is already registered"):
        registry.register(make("a"))
    with pytest.raises(ConfigurationError, match=r"'zzz' is not registered; known: \['a'\]"):
        registry.get("zzz")


def test_default_registry_has_builtins() -> None:
    registry = default_registry(plugins=False)
    assert registry.ids() == ["echo", "rest"]
    assert "items" in registry.get("rest").syncs


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.value = f"plugin_module:{name}"
        self._target = target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def patch_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[FakeEntryPoint]) -> None:
    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        return eps if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_plugins_are_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_entry_points(
        monkeypatch,
        [
            FakeEntryPoint("one", make("plugin-one")),
            FakeEntryPoint("factory", lambda: [make("plugin-two"), make("plugin-three")]),
        ],
    )
    registry = default_registry()
    assert registry.ids() == ["echo", "plugin-one", "plugin-three", "plugin-two", "rest"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (make("rest"), "'rest' is already registered"),
        (ImportError("no module named shop"), "could not load entry point 'bad'"),
        (42, "expected a Connector or an iterable"),
    ],
)
def test_bad_plugins_fail_loudly(
    monkeypatch: pytest.MonkeyPatch, target: Any, message: str
) -> None:
    patch_entry_points(monkeypatch, [FakeEntryPoint("bad", target)])
    with pytest.raises(ConnectorRegistryError, match=message):
        default_registry()
