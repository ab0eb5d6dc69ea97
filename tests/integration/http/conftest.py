"""Fixtures: the fake items API on loopback and an executor with fast backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from databite_stream.execution import Executor
from databite_stream.models import SyncBatch
from databite_stream.testing import FakeApi


class Sink:
    """on_batch sink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[SyncBatch] = []

    async def __call__(self, batch: SyncBatch) -> None:
        self.batches.append(batch)

    @property
    def record_ids(self) -> list[str]:
        return [r.record_id for b in self.batches for r in b.records]

    @property
    def deletions(self) -> list[str]:
        return [d for b in self.batches for d in b.deletions]


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi.run(page_size=250) as server:
        yield server


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    async with Executor(backoff_base=0.05, backoff_cap=0.5) as ex:
        yield ex


@pytest.fixture
def sink() -> Sink:
    return Sink()
