"""The worker's Kafka consumer fetches with our fetch wait, not faust's fixed 1,500 ms."""

from __future__ import annotations

from pathlib import Path

import pytest

from databite_stream.settings import Settings
from databite_stream.stream.app import StreamApp

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("wait_ms", [None, 40])
async def test_the_started_consumer_fetches_with_the_configured_wait(
    kafka_bootstrap: str, tmp_path: Path, wait_ms: int | None
) -> None:
    env = {"DATABITE_BROKER": kafka_bootstrap, "DATABITE_DATA_DIR": str(tmp_path)}
    if wait_ms is not None:
        env["DATABITE_FETCH_MAX_WAIT_MS"] = str(wait_ms)
    settings = Settings.from_env(env)
    sa = StreamApp(settings)
    # the consumer a worker starts: built by faust's consumer thread through our transport
    thread = sa.app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(sa.app.transport)
    await consumer.start()  # aiokafka builds its fetcher here, from the constructor's value
    try:
        assert consumer._fetcher._fetch_max_wait_ms == settings.fetch_max_wait_ms
    finally:
        await consumer.stop()
    assert settings.fetch_max_wait_ms == (wait_ms or 100)
