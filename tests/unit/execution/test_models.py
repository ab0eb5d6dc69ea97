"""Models: frozen, unknown fields rejected, configs masked in repr/str."""

from __future__ import annotations

import pydantic
import pytest

from databite_stream.models import (
    ActionRequest,
    Connection,
    ErrorKind,
    ExecutionResult,
    Integration,
    SyncRecord,
)

SECRET = "tok-0123456789abcdef"


def connection(**kwargs: object) -> Connection:
    fields: dict[str, object] = {
        "id": "c1",
        "integration_id": "i1",
        "connector_id": "rest",
        "config": {"access_token": SECRET},
    }
    fields.update(kwargs)
    return Connection.model_validate(fields)


def test_models_are_frozen() -> None:
    conn = connection()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        conn.id = "other"


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Connection, {"id": "c", "integration_id": "i", "connector_id": "x", "colour": "red"}),
        (Integration, {"id": "i", "name": "n", "connector_id": "x", "extra": 1}),
        (
            ActionRequest,
            {
                "correlation_id": "r",
                "connection_id": "c",
                "action": "a",
                "requested_at_ms": 1,
                "priority": 9,
            },
        ),
    ],
)
def test_unknown_fields_are_rejected(model: type[pydantic.BaseModel], fields: dict) -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(fields)


def test_repr_and_str_never_show_config_values() -> None:
    conn = connection()
    integ = Integration(id="i1", name="app", connector_id="rest", config={"client_secret": SECRET})
    for text in (repr(conn), str(conn), repr(integ), str(integ), f"{conn!r}"):
        assert SECRET not in text
        assert "***" in text
    assert conn.redacted().config == {"access_token": "***"}
    assert conn.model_dump()["config"]["access_token"] == SECRET  # the wire keeps it


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"sync_interval": 0}, "must be > 0"),
        ({"sync_interval": "  "}, "must not be blank"),
        ({"id": ""}, "at least 1 character"),
    ],
)
def test_connection_validation(fields: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        connection(**fields)


def test_connection_defaults_and_active_syncs() -> None:
    conn = connection(sync_interval="15m", schedules={"items": "0 9 * * 1-5"})
    assert conn.timezone == "UTC"
    assert conn.is_sync_active("anything")
    only = connection(active_syncs=["items"])
    assert only.active_syncs == ("items",)
    assert only.is_sync_active("items")
    assert not only.is_sync_active("users")


def test_results_round_trip_json() -> None:
    result = ExecutionResult(
        run_id="j:1",
        connection_id="c1",
        connector_id="rest",
        name="items",
        success=False,
        error="boom",
        error_kind=ErrorKind.HTTP_5XX,
        attempts=3,
        execution_time_ms=1.5,
        started_at_ms=1,
        finished_at_ms=2,
    )
    assert ExecutionResult.model_validate_json(result.model_dump_json()) == result
    assert result.model_dump(mode="json")["error_kind"] == "http_5xx"
    record = SyncRecord(connection_id="c", sync_name="s", record_id="r", run_id="j:1", data={})
    assert SyncRecord.model_validate_json(record.model_dump_json()) == record
