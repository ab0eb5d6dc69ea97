"""Connector registry: built-in connectors plus plugins found through entry points.

A plugin distribution declares, in its packaging metadata::

    [project.entry-points."databite_stream.connectors"]
    shop = "shop_connector:connector"

The entry point may name a :class:`~databite_stream.connectors.sdk.Connector`, an iterable of
them, or a zero-argument callable returning either.

Invariants: one connector per id (registering a second one with the same id is an error,
built-in or plugin alike: nothing is silently overridden); a plugin that fails to load raises
:class:`ConnectorRegistryError` naming the entry point, instead of vanishing.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Iterator
from typing import Any

from databite_stream.connectors.sdk import Connector
from databite_stream.retry import ConfigurationError

__all__ = ("ENTRY_POINT_GROUP", "ConnectorRegistry", "ConnectorRegistryError")

ENTRY_POINT_GROUP = "databite_stream.connectors"

AnyConnector = Connector[Any, Any]


class ConnectorRegistryError(ValueError):
    """Duplicate connector id, or a plugin that could not be loaded."""


class ConnectorRegistry:
    """Connectors by id."""

    def __init__(self, connectors: Iterable[AnyConnector] = ()) -> None:
        self._connectors: dict[str, AnyConnector] = {}
        for connector in connectors:
            self.register(connector)

    def register(self, connector: AnyConnector) -> None:
        """Add ``connector``; ConnectorRegistryError if its id is taken."""
        if not isinstance(connector, Connector):
            raise ConnectorRegistryError(f"expected a Connector, got {type(connector).__name__}")
        existing = self._connectors.get(connector.id)
        if existing is not None:
            raise ConnectorRegistryError(
                f"a connector with id {connector.id!r} is already registered "
                f"(version {existing.version}); connector ids must be unique"
            )
        self._connectors[connector.id] = connector

    def get(self, connector_id: str) -> AnyConnector:
        """The connector ``connector_id``; ConfigurationError naming the known ids otherwise."""
        try:
            return self._connectors[connector_id]
        except KeyError:
            raise ConfigurationError(
                f"connector {connector_id!r} is not registered; known: {sorted(self._connectors)}"
            ) from None

    def __contains__(self, connector_id: object) -> bool:
        return connector_id in self._connectors

    def __iter__(self) -> Iterator[AnyConnector]:
        return iter(self._connectors.values())

    def __len__(self) -> int:
        return len(self._connectors)

    def ids(self) -> list[str]:
        return sorted(self._connectors)

    def discover_plugins(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Load and register every connector of the entry-point ``group``; return their ids."""
        added: list[str] = []
        for entry_point in importlib.metadata.entry_points(group=group):
            where = f"entry point {entry_point.name!r} ({entry_point.value}) of group {group!r}"
            try:
                loaded = entry_point.load()
                if callable(loaded) and not isinstance(loaded, Connector):
                    loaded = loaded()
            except Exception as exc:
                raise ConnectorRegistryError(
                    f"could not load {where}: {type(exc).__name__}: {exc}"
                ) from exc
            connectors = [loaded] if isinstance(loaded, Connector) else loaded
            try:
                items = list(connectors)
            except TypeError:
                raise ConnectorRegistryError(
                    f"{where} gave {type(loaded).__name__}, expected a Connector or an "
                    "iterable of Connectors"
                ) from None
            for connector in items:
                try:
                    self.register(connector)
                except ConnectorRegistryError as exc:
                    raise ConnectorRegistryError(f"{where}: {exc}") from None
                added.append(connector.id)
        return added
