"""Session fixtures: one real Kafka broker for the whole test session.

The broker is started by :mod:`databite_stream.devkafka` (or taken from ``DATABITE_BROKER``).
If it cannot start, every test that needs it *errors*; nothing is skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from databite_stream.devkafka import KafkaCluster


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("DATABITE_BROKER")
    if external:
        yield external
        return
    t0 = time.monotonic()
    cluster = KafkaCluster(nodes=1).start()
    print(
        f"\n[kafka] {cluster.version} ready at {cluster.bootstrap} in {time.monotonic() - t0:.1f}s"
    )
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()
