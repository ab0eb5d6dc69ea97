"""The client's pure checks: what is refused before anything is published, and the job view."""

from __future__ import annotations

from typing import Any

import pytest

from databite_stream.client import (
    ClientError,
    InvalidConnection,
    InvalidIntegration,
    ScheduledJob,
    UnknownConnector,
    UnknownIntegration,
    UnknownSync,
    check_connection,
    check_integration,
    to_connection,
)
from databite_stream.connectors import default_registry
from databite_stream.models import Connection, Integration
from databite_stream.schedule import Policy, create_job, on_run_finished, parse_schedule, plan_due

REGISTRY = default_registry(plugins=False)
ECHO = Integration(id="int-1", name="Echo", connector_id="echo", config={})


def conn(**fields: Any) -> Connection:
    values: dict[str, Any] = {
        "id": "c1",
        "integration_id": "int-1",
        "connector_id": "echo",
        "config": {"api_key": "k"},
        **fields,
    }
    return Connection.model_validate(values)


def test_a_valid_connection_plans_one_job_per_active_sync() -> None:
    jobs = check_connection(conn(sync_interval=15), ECHO, REGISTRY)
    assert [(j.job_id, j.schedule) for j in jobs] == [("c1/records", "15m")]
    assert check_connection(conn(active_syncs=[]), ECHO, REGISTRY) == []


@pytest.mark.parametrize(
    ("fields", "integration", "error", "message"),
    [
        ({"connector_id": "nope"}, ECHO, UnknownConnector, "unknown connector 'nope'"),
        ({}, None, UnknownIntegration, "integration 'int-1' does not exist"),
        ({"connector_id": "rest"}, ECHO, InvalidConnection, "is for 'echo'"),
        ({"active_syncs": ["nope"]}, ECHO, UnknownSync, "no sync 'nope'"),
        ({"schedules": {"nope": "1h"}}, ECHO, UnknownSync, "unknown sync 'nope'"),
        ({"schedules": {"records": "soon"}}, ECHO, InvalidConnection, "'soon'"),
        ({"config": {}}, ECHO, InvalidConnection, r"config\.api_key: Field required"),
        ({"config": {"api_key": "k", "x": 1}}, ECHO, InvalidConnection, r"config\.x: Extra"),
        ({"config": {"api_key": "k", "record_count": -1}}, ECHO, InvalidConnection, "record_c"),
    ],
)
def test_invalid_connections_raise_typed_errors(
    fields: dict[str, Any], integration: Integration | None, error: type[ClientError], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_connection(conn(**fields), integration, REGISTRY)


def test_config_errors_never_echo_the_secret() -> None:
    with pytest.raises(InvalidConnection) as info:
        check_connection(conn(config={"api_key": "sk-SECRET", "x": "sk-SECRET"}), ECHO, REGISTRY)
    assert "sk-SECRET" not in str(info.value)


def test_integrations_are_checked_against_the_connector() -> None:
    check_integration(ECHO, REGISTRY)
    with pytest.raises(UnknownConnector, match="'nope'"):
        check_integration(ECHO.model_copy(update={"connector_id": "nope"}), REGISTRY)
    with pytest.raises(InvalidIntegration, match=r"config\.region"):
        check_integration(ECHO.model_copy(update={"config": {"region": "eu"}}), REGISTRY)


def test_mappings_become_models_or_invalid_connection() -> None:
    assert to_connection(conn().model_dump()) == conn()
    with pytest.raises(InvalidConnection, match=r"'c9'.*connector_id: Field required"):
        to_connection({"id": "c9", "integration_id": "i"})


def test_scheduled_job_mirrors_the_job_state() -> None:
    policy = Policy()
    state = create_job("c-1", "Fetch Messages", parse_schedule("15m"), 1_000, policy)
    state, runs = plan_due(state, 1_000, policy)
    job = ScheduledJob.from_state(state)
    assert job.job_id == "c-1/Fetch Messages"
    assert (job.connection_id, job.sync_name, job.schedule) == ("c-1", "Fetch Messages", "15m")
    assert job.in_flight == (runs[0].run_id,)
    assert job.is_active
    assert job.model_dump(mode="json")["in_flight"] == [runs[0].run_id]
    state, _ = on_run_finished(state, runs[0].run_id, False, 2_000, policy, result="boom")
    job = ScheduledJob.from_state(state)
    assert (job.last_success, job.last_result, job.consecutive_failures) == (False, "boom", 1)
    assert job.in_flight == ()
