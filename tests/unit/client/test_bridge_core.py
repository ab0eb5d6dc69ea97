"""The provider bridge's pure parts: reading legacy provider data, and the catalog diff."""

from __future__ import annotations

from typing import Any

import pytest

from databite_stream.bridge import ProviderDataError, diff_catalog, normalize_provider_data
from databite_stream.models import Connection, Integration

INT = Integration(id="i1", name="Echo", connector_id="echo", config={})


def conn(cid: str, **fields: Any) -> Connection:
    values = {"id": cid, "integration_id": "i1", "connector_id": "echo", "config": {"api_key": "k"}}
    return Connection.model_validate({**values, **fields})


def test_reference_shapes_are_read() -> None:
    data = normalize_provider_data(
        {
            "integrations": [{"id": "i1", "name": "Echo", "connectorId": "echo", "config": {}}],
            "connections": [
                {
                    "id": "c1",
                    "integrationId": "i1",
                    "config": {"api_key": "k"},
                    "syncInterval": 5,
                    "activeSyncs": ["records"],
                    "externalId": "ext-1",
                },
                conn("c2"),
            ],
        }
    )
    assert data.skipped == []
    assert data.integrations == {"i1": INT}
    assert data.connections["c1"] == conn(
        "c1", sync_interval=5, active_syncs=("records",), external_id="ext-1"
    )  # connector id taken from the integration
    assert data.connections["c2"] == conn("c2")


def test_bad_items_are_skipped_with_a_reason() -> None:
    data = normalize_provider_data(
        {
            "integrations": [INT, {"id": "i2"}],
            "connections": [conn("dup"), conn("dup"), {"id": "c3", "createdAt": "2024"}, 42],
        }
    )
    reasons = {(s.kind, s.id): s.reason for s in data.skipped}
    assert "name: Field required" in reasons[("integration", "i2")]
    assert "appears 2 times" in reasons[("connection", "dup")]
    assert "createdAt: Extra inputs are not permitted" in reasons[("connection", "c3")]
    assert ("connection", None) in reasons
    assert data.connections == {}
    assert list(data.integrations) == ["i1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a mapping"),
        ({"connections": []}, "no 'integrations' list"),
        ({"connections": "c1", "integrations": []}, "not a list"),
    ],
)
def test_a_wrong_shape_is_a_provider_error(data: object, message: str) -> None:
    with pytest.raises(ProviderDataError, match=message):
        normalize_provider_data(data)


def test_diff_publishes_only_changes_and_deletes_in_scope() -> None:
    current_c = {"same": conn("same"), "old": conn("old"), "gone": conn("gone"), "bad": conn("bad")}
    current_i = {"i1": INT, "i0": INT.model_copy(update={"id": "i0"})}
    changes = diff_catalog(
        {"i1": INT},
        {"same": conn("same"), "old": conn("old", sync_interval=9), "new": conn("new")},
        current_i,
        current_c,
        keep_connections={"bad"},
    )
    assert changes.upsert_integrations == ()
    assert [c.id for c in changes.upsert_connections] == ["new", "old"]
    assert changes.delete_connections == ("gone",)
    assert changes.delete_integrations == ("i0",)
    assert changes.unchanged == 2

    scoped = diff_catalog(
        {}, {}, current_i, current_c, deletable_connections={"gone"}, deletable_integrations=()
    )
    assert scoped.delete_connections == ("gone",)
    assert scoped.delete_integrations == ()
