"""Every worker's full, live view of ``databite.integrations`` (small reference data).

Owns: a dict integration id -> :class:`Integration`, fed by a plain aiokafka consumer that is
*not* in the consumer group (it reads every partition from the beginning). faust's GlobalTable
is not used: with an external changelog topic it crashes the assignor (DESIGN.md, faust traps).

Invariants: ``ready`` is set once the view has read up to the end offsets seen at start, so a
worker never schedules a connection against a stale catalog. Invalid messages are reported to
``on_invalid`` (the dead-letter path) by exactly one worker: the one that actively owns the
same partition number of the scheduler inbox (all databite topics share one partition count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import ValidationError

from databite_stream.models import Integration

__all__ = ("IntegrationsView",)

log = logging.getLogger(__name__)

InvalidHandler = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]
ChangeHandler = Callable[[str, Integration | None], Awaitable[None]]


class IntegrationsView:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        on_invalid: InvalidHandler | None = None,
        on_change: ChangeHandler | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.on_invalid = on_invalid
        self.on_change = on_change
        self.ready = asyncio.Event()
        self._items: dict[str, Integration] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._applying = False

    def get(self, integration_id: str) -> Integration | None:
        return self._items.get(integration_id)

    def __len__(self) -> int:
        return len(self._items)

    async def wait_for(self, integration_id: str, timeout: float) -> Integration | None:
        """The integration; if it is not known yet, first read the topic up to its current
        end (an integration published just before its connection may still be in flight).
        Costs one offsets request when the integration really is missing; never ``timeout``."""
        found = self._items.get(integration_id)
        if found is not None or timeout <= 0:
            return found
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.catch_up(), timeout)
        return self._items.get(integration_id)

    async def catch_up(self) -> None:
        """Return once every record published before this call has been applied."""
        consumer = self._consumer
        if consumer is None:
            return
        await self.ready.wait()
        tps = list(consumer.assignment())
        end = await consumer.end_offsets(tps)
        while True:
            if not self._applying:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return
            await asyncio.sleep(0.005)

    async def start(self) -> None:
        # no group: aiokafka then assigns every partition of the topic to this consumer
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="integrations-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        # no group: the consumer assigns itself every partition once metadata arrives
        while not consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if end[tp] > 0}
        if not pending:
            self.ready.set()
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            self._applying = bool(batch)
            for records in batch.values():
                for record in records:
                    await self._apply(record)
            self._applying = False
            for tp, records in batch.items():
                if pending and records and records[-1].offset + 1 >= end[tp]:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
            if not pending and not self.ready.is_set():
                log.info("integrations view ready: %d integrations", len(self._items))
                self.ready.set()

    async def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if record.value is None:
            if key is not None and self._items.pop(key, None) is not None:
                await self._notify(key, None)
            return
        try:
            integration = Integration.model_validate_json(record.value)
            if key is not None and key != integration.id:
                raise ValueError(f"key {key!r} differs from integration id {integration.id!r}")
        except (ValidationError, ValueError) as exc:
            if self.on_invalid is not None:
                await self.on_invalid(record, f"invalid integration: {exc}")
            return
        self._items[integration.id] = integration
        await self._notify(integration.id, integration)

    async def _notify(self, key: str, value: Integration | None) -> None:
        if self.on_change is not None:
            await self.on_change(key, value)
