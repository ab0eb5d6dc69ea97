"""Rows written through the outbox use faust's changelog key bytes, puts and deletes alike
(a tombstone with other key bytes would not delete the row: compaction keeps both, and a
restore that decodes keys the way faust does fails on it)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from databite_stream.settings import Settings
from databite_stream.stream.app import StreamApp, build_app


@pytest.fixture
def sa() -> StreamApp:
    settings = Settings.from_env({"DATABITE_BROKER": "127.0.0.1:1", "DATABITE_WEB_ENABLED": "0"})
    return build_app(settings)


def test_puts_and_deletes_share_faust_key_bytes(
    sa: StreamApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, ...]] = []

    def add(
        topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> Any:
        sent.append((topic, key, value, partition))
        return asyncio.Future(loop=asyncio.new_event_loop())

    monkeypatch.setattr(sa.outbox, "add", add)
    job = "conn-é/records"
    sa.durable_put(sa.jobs, job, b'{"p": 3}', 3)
    assert sa.jobs.data[job] == b'{"p": 3}'
    sa.durable_delete(sa.jobs, job, 3)
    assert job not in sa.jobs.data

    table: Any = sa.jobs  # faust types TableT without its serializers
    faust_key = sa.app.serializers.dumps_key(str, job, serializer=table.key_serializer)
    assert [s[1] for s in sent] == [faust_key, faust_key]
    assert orjson.loads(faust_key or b"") == job
    assert [s[2] for s in sent] == [b'{"p": 3}', None]
    assert {s[0] for s in sent} == {sa.jobs.changelog_topic.get_topic_name()}
    assert [s[3] for s in sent] == [3, 3]


@pytest.mark.parametrize(
    "key", ["conn-1/items", "ünï/cödé", 'q"uote\\/x', "emoji😀/s", "tab\t/x", "ctl\x01/x", ""]
)
def test_changelog_key_is_faust_key_bytes(sa: StreamApp, key: str) -> None:
    table: Any = sa.jobs
    assert sa.changelog_key(key) == sa.app.serializers.dumps_key(
        str, key, serializer=table.key_serializer
    )


def test_local_get_reads_what_the_table_holds(sa: StreamApp) -> None:
    get = sa.local_get(sa.jobs)
    assert get("conn-1/items") is None
    sa.jobs.data["conn-1/items"] = b"[3,1]"  # what durable_put writes locally
    assert get("conn-1/items") == b"[3,1]" == sa.jobs.get("conn-1/items")
    del sa.jobs.data["conn-1/items"]
    assert get("conn-1/items") is None
    assert sa.local_get(sa.jobs) is get  # resolved once


def test_local_items_survive_changes_while_iterating(sa: StreamApp) -> None:
    """The due-index rebuild pauses while iterating; faust may apply standby batches then."""
    for i in range(5):
        sa.jobs.data[f"conn-{i}/items"] = f"[3,{i}]".encode()
    seen = []
    for key, raw in sa.local_items(sa.jobs):
        seen.append((key, raw))
        if key == "conn-1/items":
            del sa.jobs.data["conn-3/items"]  # a tombstone applied meanwhile
            sa.jobs.data["conn-9/items"] = b"[3,9]"  # a row added meanwhile
    assert [k for k, _ in seen] == ["conn-0/items", "conn-1/items", "conn-2/items", "conn-4/items"]
    assert dict(seen)["conn-2/items"] == b"[3,2]"


def test_runs_done_rows_name_runs_by_their_time_and_old_rows_still_count(sa: StreamApp) -> None:
    from databite_stream.stream.executor_agent import run_key

    job = "conn-1/items"
    assert run_key(job, "conn-1/items@1796460107877") == "1796460107877"
    assert run_key(job, "conn-2/items@5") == "conn-2/items@5"  # not this job's: left whole
    runner: Any = sa.runner  # type: ignore[attr-defined]
    # a row written before run keys (whole run ids) still marks those runs done
    sa.runs_done.data[job] = orjson.dumps({"conn-1/items@1000": True, "conn-1/items@2000": False})
    assert runner._done(job) == {"1000": True, "2000": False}
    sa.runs_done.data[job] = b'{"3000":true}'
    assert runner._done(job) == {"3000": True}
    assert runner._done("conn-9/items") == {}
