"""Fixtures of the fault suite: a databite deployment on the session broker, strict policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import STRICT_POLICY
from tests.integration.stream.harness import Cluster


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh app id / topic prefix on the session broker; workers are stopped afterwards."""
    c = Cluster(kafka_bootstrap, tmp_path, partitions=6, extra_env=dict(STRICT_POLICY))
    yield c
    c.stop_all()
