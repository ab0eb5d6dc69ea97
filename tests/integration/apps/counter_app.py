"""A minimal faust app for the foundation test: an agent sums values per key into a
changelog-backed table; once recovered, a timer dumps the table to a JSON file.

Configured by environment: COUNTER_BROKER, COUNTER_APP_ID, COUNTER_TOPIC, COUNTER_DUMP,
COUNTER_DATADIR.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import faust
import orjson
from faust.tables.manager import TableManager

app = faust.App(
    os.environ["COUNTER_APP_ID"],
    broker=f"kafka://{os.environ['COUNTER_BROKER']}",
    store="memory://",
    topic_partitions=2,
    datadir=os.environ["COUNTER_DATADIR"],
    web_enabled=False,
    producer_linger=0.0,
)
source = app.topic(
    os.environ["COUNTER_TOPIC"],
    key_type=str,
    value_type=None,
    partitions=2,
    key_serializer="raw",
    value_serializer="json",
)
counts = app.Table("counts", default=int, partitions=2)
dump_path = Path(os.environ["COUNTER_DUMP"])


@app.agent(source)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for key, value in stream.items():
        counts[key] += int(value)


@app.timer(0.2)
async def dump() -> None:
    if app.rebalancing or not cast(TableManager, app.tables).recovery.completed.is_set():
        return
    tmp = dump_path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(dict(counts.items())))
    tmp.replace(dump_path)


if __name__ == "__main__":
    app.main()
