"""The REST connector's incremental sync against the fake API: paging, checkpoints, resume."""

from __future__ import annotations

from databite_stream.connectors import rest_connector
from databite_stream.execution import Executor
from databite_stream.models import SyncBatch
from databite_stream.testing import FakeApi, Fault, rest_connection, rest_integration

from .conftest import Sink


async def test_full_sync_pages_through_10000_records_with_checkpoints(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    api.add_items(10_000)
    result = await executor.run_sync(
        rest_connector,
        "items",
        rest_connection(api),
        rest_integration(api),
        run_id="j:1",
        on_batch=sink,
    )
    assert result.success, result.error
    assert sorted(sink.record_ids) == sorted(api.items)  # every record once
    assert len(sink.batches) == 40  # 10,000 / page_size 250
    # Each batch's checkpoint is the updated_at of its last record: resumable after any page.
    for batch in sink.batches:
        assert isinstance(batch.checkpoint, dict)
        assert batch.checkpoint["items_since"] == batch.records[-1].data["updated_at"]
    marks = [b.records[-1].data["updated_at"] for b in sink.batches]
    assert marks == sorted(marks)
    assert len(set(marks)) == len(marks)
    assert result.summary is not None
    assert result.summary.records == 10_000
    assert result.summary.checkpoint == sink.batches[-1].checkpoint
    assert len(api.requests_to("/items")) == 40
    assert len(api.requests_to("/deletions")) == 1


async def test_incremental_run_returns_only_changes_and_deletions(
    api: FakeApi, executor: Executor, sink: Sink
) -> None:
    api.add_items(1_000)
    conn, integ = rest_connection(api), rest_integration(api)
    first = await executor.run_sync(
        rest_connector, "items", conn, integ, run_id="j:1", on_batch=sink
    )
    assert first.success
    assert first.summary is not None

    changed = {api.update_item(i, value=-1).id for i in ("item-000010", "item-000500")}
    changed |= {item.id for item in api.add_items(3)}
    for gone in ("item-000001", "item-000999"):
        api.delete_item(gone)
    api.requests.clear()

    second_sink = Sink()
    second = await executor.run_sync(
        rest_connector,
        "items",
        conn,
        integ,
        run_id="j:2",
        on_batch=second_sink,
        checkpoint=first.summary.checkpoint,
    )
    assert second.success, second.error
    assert sorted(second_sink.record_ids) == sorted(changed)
    assert sorted(second_sink.deletions) == ["item-000001", "item-000999"]
    assert second.summary is not None
    assert (second.summary.records, second.summary.deletions) == (5, 2)
    assert [r.query["updated_since"] for r in api.requests_to("/items")] == [
        str(first.summary.checkpoint["items_since"])  # type: ignore[index,call-overload]
    ]

    third_sink = Sink()
    third = await executor.run_sync(
        rest_connector,
        "items",
        conn,
        integ,
        run_id="j:3",
        on_batch=third_sink,
        checkpoint=second.summary.checkpoint,
    )
    assert third.success
    assert third_sink.record_ids == []
    assert third_sink.deletions == []


async def test_a_failed_page_is_retried_from_the_last_committed_checkpoint(
    api: FakeApi, executor: Executor
) -> None:
    api.add_items(2_000)
    batches: list[SyncBatch] = []

    async def sink(batch: SyncBatch) -> None:
        batches.append(batch)
        if len(batches) == 3:  # upstream breaks while we are mid-sync
            api.inject(Fault.error(503, path="/items"))

    result = await executor.run_sync(
        rest_connector,
        "items",
        rest_connection(api),
        rest_integration(api),
        run_id="j:1",
        on_batch=sink,
    )
    assert result.success
    assert result.attempts == 2
    ids = [r.record_id for b in batches for r in b.records]
    assert len(ids) == len(set(ids)) == 2_000  # resumed exactly after batch 3, no duplicates
    retried = api.requests_to("/items")[4]  # 3 good pages, the 503, then the retry
    assert retried.query["updated_since"] == str(batches[2].records[-1].data["updated_at"])
    assert "cursor" not in retried.query
