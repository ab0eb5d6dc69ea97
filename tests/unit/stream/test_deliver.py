"""The worker consumer's batch delivery (``transport._Consumer._deliver``) without a broker:
what faust's per-message loop guaranteed still holds for a whole batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from databite_stream.stream.transport import YIELD_EVERY, _Consumer, _Held

ACKED, UNACKED = "acked-topic", "unacked-topic"


class _FakeConsumer:
    """The attributes ``_deliver`` uses, recording what it does with them."""

    _deliver_one = _Consumer._deliver_one

    def __init__(self) -> None:
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: t == ACKED))
        self.delivered: list[tuple[str, int, int]] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self._held = _Held()
        self.full: set[TP] = set()  # partitions whose agent buffer is full
        self.on_callback: Any = None  # called after each delivery

    def _buffer_full(self, tp: TP) -> bool:
        return tp in self.full

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.topic, message.partition, message.offset))
        if self.on_callback is not None:
            self.on_callback()

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


async def test_a_full_buffer_holds_back_only_its_own_partition() -> None:
    consumer = _FakeConsumer()
    consumer.full.add(TP(ACKED, 0))
    await _deliver(consumer, _batch(ACKED, 0, [0, 1]) + _batch(UNACKED, 3, [7]))
    # the due job behind the backlog is delivered; the backlog waits, and is not read yet
    assert consumer.delivered == [(UNACKED, 3, 7)]
    assert consumer._read_offset[TP(ACKED, 0)] is None
    # still full: what comes next for it waits behind what is held
    await _deliver(consumer, _batch(ACKED, 0, [2]) + _batch(UNACKED, 3, [8]))
    assert consumer.delivered[-1] == (UNACKED, 3, 8)
    # room again: the held messages go first, in order, before the new ones of the batch
    consumer.full.clear()
    await _deliver(consumer, _batch(ACKED, 0, [3]))
    assert [o for t, _p, o in consumer.delivered if t == ACKED] == [0, 1, 2, 3]
    assert consumer._read_offset[TP(ACKED, 0)] == 3
    assert not consumer._held.by_tp


async def test_a_buffer_that_fills_during_a_batch_holds_the_rest_of_its_partition() -> None:
    consumer = _FakeConsumer()
    tp = TP(ACKED, 0)

    def fill_after_two() -> None:
        if len(consumer.delivered) == 2:
            consumer.full.add(tp)

    consumer.on_callback = fill_after_two
    await _deliver(consumer, _batch(ACKED, 0, [0, 1, 2, 3]) + _batch(ACKED, 1, [0]))
    assert consumer.delivered == [(ACKED, 0, 0), (ACKED, 0, 1), (ACKED, 1, 0)]
    assert [m.offset for m in consumer._held.by_tp[tp]] == [2, 3]
    # a fetch with nothing new still offers what is held
    consumer.full.clear()
    await _deliver(consumer, [])
    assert [o for _t, p, o in consumer.delivered if p == 0] == [0, 1, 2, 3]


async def test_a_rebalance_drops_what_is_held_and_stops_the_delivery() -> None:
    consumer = _FakeConsumer()
    consumer.full.add(TP(ACKED, 0))
    await _deliver(consumer, _batch(ACKED, 0, [0, 1]))
    consumer.full.clear()

    def rebalance() -> None:
        # faust's stop_flow; the base class's part needs a real consumer
        consumer._held.drop()

    consumer.on_callback = rebalance
    await _deliver(consumer, _batch(ACKED, 1, [0, 1]))
    # the first held message was being delivered when the rebalance began: nothing after it
    # (faust clears the agent buffers and fetches again from the committed offsets)
    assert consumer.delivered == [(ACKED, 0, 0)]
    assert not consumer._held.by_tp


async def test_held_messages_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr("databite_stream.stream.transport.HELD_MAX", 3)
    consumer = _FakeConsumer()
    consumer.full.add(TP(ACKED, 0))
    await _deliver(consumer, _batch(ACKED, 0, [0, 1, 2, 3, 4]))
    # past the bound the oldest is delivered anyway (faust's own wait for room), in order
    assert consumer.delivered == [(ACKED, 0, 0), (ACKED, 0, 1)]
    assert [m.offset for m in consumer._held.by_tp[TP(ACKED, 0)]] == [2, 3, 4]
