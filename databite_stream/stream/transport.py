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
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ("Transport",)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """faust's ``kafka://`` transport whose worker consumer waits at most
    ``fetch_max_wait_ms`` for a fetch (see the module docstring)."""

    Consumer: ClassVar[Any] = _Consumer

    def __init__(self, url: Any, app: Any, *, fetch_max_wait_ms: int) -> None:
        super().__init__(url, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
