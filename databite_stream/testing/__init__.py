"""Test support shipped with the package: a fake third-party API and model factories.

``fake_api`` is imported lazily so that ``python -m databite_stream.testing.fake_api`` runs
the module once, as ``__main__``, without a second copy imported by this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from databite_stream.testing.fixtures import (
    echo_connection,
    echo_integration,
    rest_connection,
    rest_integration,
)

if TYPE_CHECKING:
    from databite_stream.testing.fake_api import (
        Disconnect,
        FakeApi,
        FakeItem,
        Fault,
        RequestRecord,
        TokenPair,
    )

__all__ = (
    "Disconnect",
    "FakeApi",
    "FakeItem",
    "Fault",
    "RequestRecord",
    "TokenPair",
    "echo_connection",
    "echo_integration",
    "rest_connection",
    "rest_integration",
)

_FAKE_API_NAMES = frozenset(
    {"Disconnect", "FakeApi", "FakeItem", "Fault", "RequestRecord", "TokenPair"}
)


def __getattr__(name: str) -> Any:
    if name in _FAKE_API_NAMES:
        from databite_stream.testing import fake_api

        return getattr(fake_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
