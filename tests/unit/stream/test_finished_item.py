"""The executor's hand-built ``RunFinished`` must say exactly what the pydantic model says."""

from __future__ import annotations

import orjson
import pytest

from databite_stream.models import ErrorKind, ExecutionResult, SyncSummary
from databite_stream.stream.executor_agent import finished_item
from databite_stream.testing.fixtures import echo_connection, echo_integration
from databite_stream.wire import DueJob, RunFinished, RunsFinished, inbox_adapter

DUE = DueJob(
    run_id="conn-1/records@1000",
    job_id="conn-1/records",
    sync_name="records",
    scheduled_for_ms=1000,
    emitted_at_ms=900,
    connection=echo_connection(id="conn-1"),
    integration=echo_integration(),
)


def _result(**changes: object) -> ExecutionResult:
    fields: dict[str, object] = {
        "run_id": DUE.run_id,
        "job_id": DUE.job_id,
        "connection_id": "conn-1",
        "connector_id": "echo",
        "name": "records",
        "scheduled_for_ms": 1000,
        "success": True,
        "summary": SyncSummary(records=3, batches=1, checkpoint={"cursor": "c3"}),
        "attempts": 1,
        "execution_time_ms": 2.5,
        "started_at_ms": 1000,
        "finished_at_ms": 1003,
    }
    fields.update(changes)
    return ExecutionResult.model_validate(fields)


def _finished(**changes: object) -> RunFinished:
    fields: dict[str, object] = {
        "job_id": DUE.job_id,
        "connection_id": "conn-1",
        "run_id": DUE.run_id,
        "success": True,
        "finished_ms": 1003,
    }
    fields.update(changes)
    return RunFinished.model_validate(fields)


@pytest.mark.parametrize(
    ("result", "kwargs", "expected"),
    [
        pytest.param(
            _result(),
            {"checkpoint_changed": True},
            _finished(checkpoint={"cursor": "c3"}, checkpoint_changed=True, records=3),
            id="success with records and a new checkpoint",
        ),
        pytest.param(
            _result(summary=SyncSummary()),
            {},
            _finished(),
            id="no-op success: defaults only",
        ),
        pytest.param(
            _result(success=False, error="HTTP 500 from the API", error_kind=ErrorKind.HTTP_5XX),
            {"checkpoint_changed": False},
            _finished(
                success=False,
                checkpoint={"cursor": "c3"},
                error="HTTP 500 from the API",
                error_kind=ErrorKind.HTTP_5XX,
                records=3,
            ),
            id="failure",
        ),
    ],
)
def test_finished_item_matches_the_model(
    result: ExecutionResult, kwargs: dict[str, bool], expected: RunFinished
) -> None:
    changed = kwargs.get("checkpoint_changed", False)
    raw = finished_item(DUE, result.success, result, checkpoint_changed=changed)
    assert RunFinished.model_validate_json(raw) == expected
    # and the scheduler's decoder takes it inside a batch
    batch = inbox_adapter.validate_json(b'{"type":"runs_finished","runs":[' + raw + b"]}")
    assert isinstance(batch, RunsFinished)
    assert batch.runs == [expected]


def test_finished_item_without_a_result_carries_the_error() -> None:
    raw = finished_item(DUE, False, None, error="internal error in the executor")
    decoded = RunFinished.model_validate_json(raw)
    assert decoded.success is False
    assert decoded.error == "internal error in the executor"
    assert decoded.error_kind is ErrorKind.NONE
    assert decoded.checkpoint_changed is False
    assert decoded.finished_ms > 0
    assert set(orjson.loads(raw)) == {
        "type",
        "job_id",
        "connection_id",
        "run_id",
        "success",
        "finished_ms",
        "error",
    }
