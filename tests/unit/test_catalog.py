"""From a connection to its jobs: validation and schedule precedence."""

from __future__ import annotations

import pytest

from databite_stream.catalog import CatalogError, plan_connection
from databite_stream.connectors import default_registry
from databite_stream.models import Connection, Integration

REGISTRY = default_registry(plugins=False)
ECHO = Integration(id="i", name="Echo", connector_id="echo", config={})


def conn(**fields: object) -> Connection:
    base: dict[str, object] = {
        "id": "c",
        "integration_id": "i",
        "connector_id": "echo",
        "config": {"api_key": "k-123456"},
    }
    base.update(fields)
    return Connection.model_validate(base)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "1m"),  # the sync's default schedule
        ({"sync_interval": 15}, "15m"),  # a bare number means minutes
        ({"sync_interval": "90m"}, "1h30m"),  # 90 minutes stays 90 minutes
        ({"sync_interval": 15, "schedules": {"records": "0 9 * * 1-5"}}, "0 9 * * 1-5"),
    ],
)
def test_schedule_precedence(fields: dict[str, object], expected: str) -> None:
    (job,) = plan_connection(conn(**fields), ECHO, REGISTRY, default_schedule="1h")
    assert job.schedule.split(";")[0] == expected
    assert job.sync_name == "records"


def test_engine_default_applies_when_the_sync_has_none() -> None:
    jobs = plan_connection(
        conn(connector_id="rest", integration_id="r"),
        Integration(id="r", name="R", connector_id="rest", config={}),
        REGISTRY,
        default_schedule="2h",
    )
    assert {j.sync_name for j in jobs} == set(REGISTRY.get("rest").syncs)


def test_connection_time_zone_is_kept() -> None:
    (job,) = plan_connection(
        conn(timezone="Europe/Berlin", schedules={"records": "0 9 * * *"}),
        ECHO,
        REGISTRY,
        default_schedule="1h",
    )
    assert job.timezone == "Europe/Berlin"
    assert "tz=Europe/Berlin" in job.schedule


def test_no_active_syncs_means_no_jobs() -> None:
    assert plan_connection(conn(active_syncs=()), ECHO, REGISTRY, default_schedule="1h") == []


@pytest.mark.parametrize(
    ("connection", "integration", "kind", "text"),
    [
        (conn(connector_id="nope"), ECHO, "unknown_connector", "unknown connector 'nope'"),
        (conn(), None, "missing_integration", "integration 'i' does not exist"),
        (
            conn(),
            Integration(id="i", name="x", connector_id="rest", config={}),
            "connector_mismatch",
            "is for 'rest'",
        ),
        (conn(active_syncs=("nah",)), ECHO, "unknown_sync", "has no sync 'nah'"),
        (conn(schedules={"records": "0 25 * * *"}), ECHO, "invalid_schedule", "hour 25"),
        (conn(schedules={"other": "1h"}), ECHO, "unknown_sync", "unknown sync 'other'"),
    ],
)
def test_invalid_connections_are_refused_with_a_reason(
    connection: Connection, integration: Integration | None, kind: str, text: str
) -> None:
    with pytest.raises(CatalogError, match=text) as err:
        plan_connection(connection, integration, REGISTRY, default_schedule="1h")
    assert err.value.kind == kind
