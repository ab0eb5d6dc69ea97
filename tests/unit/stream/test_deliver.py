"""The worker consumer's batch delivery (``transport._Consumer._deliver``) without a broker:
what faust's per-message loop guaranteed still holds for a whole batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from databite_stream.stream.transport import YIELD_EVERY, _Consumer

ACKED, UNACKED = "acked-topic", "unacked-topic"


class _FakeConsumer:
    """The attributes ``_deliver`` uses, recording what it does with them."""

    def __init__(self) -> None:
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: t == ACKED))
        self.delivered: list[tuple[str, int, int]] = []
        self.gaps: list[tuple[TP, int, int]] = []

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.topic, message.partition, message.offset))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


def _batch(topic: str, partition: int, offsets: list[int]) -> list[tuple[TP, Any]]:
    tp = TP(topic, partition)
    return [(tp, SimpleNamespace(topic=topic, partition=partition, offset=o)) for o in offsets]


async def _deliver(consumer: _FakeConsumer, batch: list[tuple[TP, Any]]) -> None:
    await _Consumer._deliver(consumer, batch)  # type: ignore[arg-type]


async def test_a_batch_is_delivered_in_order_and_read_offsets_follow() -> None:
    consumer = _FakeConsumer()
    batch = _batch(ACKED, 0, [0, 1, 2]) + _batch(ACKED, 1, [5, 6]) + _batch(ACKED, 0, [3])
    await _deliver(consumer, batch)
    assert consumer.delivered == [
        (ACKED, 0, 0),
        (ACKED, 0, 1),
        (ACKED, 0, 2),
        (ACKED, 1, 5),
        (ACKED, 1, 6),
        (ACKED, 0, 3),
    ]
    assert consumer._read_offset[TP(ACKED, 0)] == 3
    assert consumer._read_offset[TP(ACKED, 1)] == 6


async def test_offsets_below_the_read_offset_are_not_delivered_again() -> None:
    consumer = _FakeConsumer()
    consumer._read_offset[TP(ACKED, 0)] = 10
    await _deliver(consumer, _batch(ACKED, 0, [8, 9, 10, 11]))
    # 10 itself is delivered again, as faust does (offset >= read offset)
    assert [o for _t, _p, o in consumer.delivered] == [10, 11]


async def test_gaps_are_recorded_for_acked_topics_only() -> None:
    consumer = _FakeConsumer()
    await _deliver(consumer, _batch(ACKED, 0, [4, 5, 9]) + _batch(UNACKED, 0, [1, 7]))
    # the first offset of a partition is no gap (nothing was read before it)
    assert consumer.gaps == [(TP(ACKED, 0), 6, 9)]
    assert len(consumer.delivered) == 5


async def test_a_long_batch_lets_other_tasks_run_while_it_is_delivered() -> None:
    consumer = _FakeConsumer()
    seen_at: list[int] = []

    async def other() -> None:
        seen_at.append(len(consumer.delivered))

    task = asyncio.create_task(other())
    await _deliver(consumer, _batch(ACKED, 0, list(range(3 * YIELD_EVERY))))
    await task
    assert len(consumer.delivered) == 3 * YIELD_EVERY
    # it ran at the first yield, not after the whole batch
    assert seen_at == [YIELD_EVERY]
