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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import ServiceT

__all__ = ("Transport",)

log = logging.getLogger(__name__)

#: messages handed over between two yields to the event loop (faust's loop yields every 100)
YIELD_EVERY = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Hand fetched records to the agents, one ``getmany`` batch per step.

        What faust's loop guarantees, kept: a message is delivered at most once per read
        offset and in order per partition; gaps in the offsets of acked topics are recorded
        (faust commits past them); a commit runs every ``broker_commit_every`` acks; a
        rebalance (``suspend_flow``) interrupts a delivery blocked on a full agent buffer
        (the rest of the batch is fetched again from the committed offsets). What changes:
        one ``wait_first`` per batch instead of per message (see the module docstring).
        """
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):  # type: ignore[attr-defined]
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = [item async for item in self.getmany(timeout=1.0)]
                await asyncio.sleep(0)  # getmany can return at once, again and again
                if batch and not self.should_stop:
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
        read = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        for count, (tp, message) in enumerate(batch, start=1):
            offset, last = message.offset, read[tp]
            if last is not None and offset < last:
                continue  # delivered before (a seek back): faust drops it too
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # e.g. compacted away
            await self.callback(message)
            read[tp] = offset
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)


class Transport(faust_aiokafka.Transport):
    """faust's ``kafka://`` transport whose worker consumer waits at most
    ``fetch_max_wait_ms`` for a fetch (see the module docstring)."""

    Consumer: ClassVar[Any] = _Consumer

    def __init__(self, url: Any, app: Any, *, fetch_max_wait_ms: int) -> None:
        super().__init__(url, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
