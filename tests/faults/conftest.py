"""Fixtures of the fault suite: a databite deployment on the session broker, strict policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import STRICT_POLICY
from tests.integration.stream.harness import STARTED_WORKERS, Cluster


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    """Kill the worker processes a test started and left running (its own cleanup did not
    run: stopped by its timeout, or failed before its ``try``). Without this they outlive
    the run, busy against a broker that is gone."""
    before = len(STARTED_WORKERS)
    yield
    left = [p for p in STARTED_WORKERS[before:] if p.poll() is None]
    for proc in left:
        proc.kill()
    for proc in left:
        proc.wait(timeout=30)


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh app id / topic prefix on the session broker; workers are stopped afterwards."""
    c = Cluster(kafka_bootstrap, tmp_path, partitions=6, extra_env=dict(STRICT_POLICY))
    yield c
    c.stop_all()
