"""Connectors: the SDK to declare them, the HTTP client they use, built-ins and the registry.

Built-in connectors: ``rest`` (generic REST/JSON API, see :mod:`.rest`) and ``echo``
(offline, see :mod:`.echo`). :func:`default_registry` holds them plus, unless disabled, the
plugins of the ``databite_stream.connectors`` entry-point group.
"""

from __future__ import annotations

from typing import Any

from databite_stream.connectors.echo import echo_connector
from databite_stream.connectors.http import HttpClient, HttpResponse
from databite_stream.connectors.registry import (
    ENTRY_POINT_GROUP,
    ConnectorRegistry,
    ConnectorRegistryError,
)
from databite_stream.connectors.rest import build_rest_connector, rest_connector
from databite_stream.connectors.sdk import (
    ActionContext,
    ActionDefinition,
    Batch,
    Connector,
    ConnectorDefinitionError,
    RefreshContext,
    SyncContext,
    SyncDefinition,
)
from databite_stream.ratelimit import RateLimit

__all__ = (
    "ENTRY_POINT_GROUP",
    "ActionContext",
    "ActionDefinition",
    "Batch",
    "Connector",
    "ConnectorDefinitionError",
    "ConnectorRegistry",
    "ConnectorRegistryError",
    "HttpClient",
    "HttpResponse",
    "RateLimit",
    "RefreshContext",
    "SyncContext",
    "SyncDefinition",
    "build_rest_connector",
    "builtin_connectors",
    "default_registry",
    "echo_connector",
    "rest_connector",
)


def builtin_connectors() -> list[Connector[Any, Any]]:
    """The connectors shipped with databite-stream."""
    return [rest_connector, echo_connector]


def default_registry(*, plugins: bool = True) -> ConnectorRegistry:
    """A registry of the built-in connectors, plus entry-point plugins when ``plugins``."""
    registry = ConnectorRegistry(builtin_connectors())
    if plugins:
        registry.discover_plugins()
    return registry
