"""faust's aiokafka transport, with the worker consumer's fetch wait set by us.

faust-streaming builds the worker's aiokafka consumer with ``fetch_max_wait_ms=1500``
hard-coded (``AIOKafkaConsumerThread._create_worker_consumer``; no setting reaches it).
aiokafka keeps one fetch request in flight per broker, and a partition whose fetched records
faust has not taken yet (for longer than aiokafka's 100 ms ``prefetch_backoff``) is left out of
the next request: records produced to it meanwhile wait until that request returns, which is
after the full fetch wait when the partitions in it are quiet. Under a steady load every
scheduler inbox event (ticks included) waited ~1.7 s this way, and runs started 2.3 s late at
5,000 runs/s on two workers with CPU to spare; with a 100 ms wait: 1 ms p50, 79 ms p99.

This subclasses the driver's classes (no monkeypatching of faust) and sets the wait on the
consumer before it starts (aiokafka hands ``_fetch_max_wait_ms`` to its fetcher in ``start``);
``tests/integration`` checks the started fetcher has it, so a faust or aiokafka upgrade that
moves it fails loudly instead of silently bringing the 1.5 s back.

The consumer also hands fetched records to the agents a batch at a time
(:meth:`_Consumer._drain_messages`): faust's own loop waits for every message with
``wait_first(callback(message), suspend_flow.wait())``, four tasks and two event-loop rounds
per message, one message after another. On a busy loop (a round takes milliseconds) that
caps a worker at a few hundred messages a second (the ~300-500 msg/s of
robinhood/faust#563), and records waited in aiokafka's buffer: at 10,000 runs/s ticks and due
jobs reached their agents 130-260 ms after an outside consumer saw them (~12 ms).

A partition whose agent buffer is full does not hold back the others (:class:`_Held`). faust
awaits room in the full buffer, and every message fetched behind it (due jobs for the executor,
ticks) waits too: with 30,000 commands queued for the scheduler, runs started up to 1.3 s late
although the scheduler had emitted them on time. Here the blocked partition's messages are held
back, in order, and handed over once its buffer has room; faust has paused fetching it by then
(its buffer crossed the high-pressure mark on the way to full), so what is held is at most what
one fetch brought. This is what Kafka Streams does with its per-partition record queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import aiokafka
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import ServiceT

__all__ = ("Transport",)

log = logging.getLogger(__name__)

#: messages handed over between two yields to the event loop (faust's loop yields every 100)
YIELD_EVERY = 100
#: while messages are held for a full agent buffer, how long a fetch waits before they are
#: offered again (the buffer's room is polled: faust's queue has no "room" signal)
HELD_POLL_S = 0.01
#: messages held for one partition before its delivery blocks after all, as faust's does: a
#: bound on memory should the partition not be paused (faust does not pause during recovery)
HELD_MAX = 50_000


class _Held:
    """Fetched messages waiting for room in their agent's buffer, per partition, in order.

    ``epoch`` counts the consumer's flow stops: a rebalance drops what agent buffers hold
    (faust clears them) and seeks back to the committed offsets, so what is held here from
    before is dropped too (it is fetched again), and a delivery that started before it stops.
    """

    __slots__ = ("by_tp", "epoch")

    def __init__(self) -> None:
        self.by_tp: dict[TP, deque[Message]] = {}
        self.epoch = 0

    def drop(self) -> None:
        self.by_tp.clear()
        self.epoch += 1


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held = _Held()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def stop_flow(self) -> None:
        # faust stops the flow before every rebalance and seeks back before resuming it
        self._held.drop()
        super().stop_flow()

    def _buffer_full(self, tp: TP) -> bool:
        """Whether delivering a message of ``tp`` now would wait for room in an agent buffer
        (the check faust's ``on_message`` makes before it awaits a full channel)."""
        channels = cast(Conductor, self.app.topics)._tp_index.get(tp, ())
        return any(channel.queue.full() for channel in channels)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Hand fetched records to the agents, one ``getmany`` batch per step.

        What faust's loop guarantees, kept: a message is delivered at most once per read
        offset and in order per partition; gaps in the offsets of acked topics are recorded
        (faust commits past them); a commit runs every ``broker_commit_every`` acks; a
        rebalance (``suspend_flow``) interrupts a delivery blocked on a full agent buffer
        (the rest of the batch is fetched again from the committed offsets). What changes:
        one ``wait_first`` per batch instead of per message, and a full buffer holds back
        only its own partition (see the module docstring).
        """
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):  # type: ignore[attr-defined]
                self.diag.set_flag(CONSUMER_FETCHING)
                timeout = HELD_POLL_S if self._held.by_tp else 1.0
                batch = [item async for item in self.getmany(timeout=timeout)]
                await asyncio.sleep(0)  # getmany can return at once, again and again
                if (batch or self._held.by_tp) and not self.should_stop:
                    every = self._commit_every
                    if every is not None and self._n_acked >= every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            log.info("the broker stopped the consumer; shutting down")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, batch: Sequence[tuple[TP, Message]]) -> None:
        """Hand over what was held for buffers that have room now, then ``batch``; a message
        whose partition has messages held, or whose buffer is full, is held (in order)."""
        held = self._held
        by_tp, epoch = held.by_tp, held.epoch
        count = 0
        for tp in list(by_tp):
            waiting = by_tp[tp]
            while waiting and not self._buffer_full(tp):
                count += 1
                if not await self._deliver_one(tp, waiting.popleft(), epoch, count):
                    return
            if not waiting:
                del by_tp[tp]
        for tp, message in batch:
            behind = by_tp.get(tp)
            if behind is None and self._buffer_full(tp):
                behind = by_tp[tp] = deque()
            if behind is not None:
                behind.append(message)
                if len(behind) <= HELD_MAX:
                    continue
                message = behind.popleft()  # not paused after all: wait, as faust does
            count += 1
            if not await self._deliver_one(tp, message, epoch, count):
                return

    async def _deliver_one(self, tp: TP, message: Message, epoch: int, count: int) -> bool:
        """Deliver one message (yielding to the loop every :data:`YIELD_EVERY`); False once a
        rebalance has begun meanwhile (it dropped what was held: the delivery stops)."""
        read = self._read_offset
        offset, last = message.offset, read[tp]
        if last is None or offset >= last:  # below: delivered before a seek back; faust drops it
            if last and offset - last > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # e.g. compacted away
            await self.callback(message)
            read[tp] = offset
        if count % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        return self._held.epoch == epoch


class Transport(faust_aiokafka.Transport):
    """faust's ``kafka://`` transport whose worker consumer waits at most
    ``fetch_max_wait_ms`` for a fetch (see the module docstring)."""

    Consumer: ClassVar[Any] = _Consumer

    def __init__(self, url: Any, app: Any, *, fetch_max_wait_ms: int) -> None:
        super().__init__(url, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
