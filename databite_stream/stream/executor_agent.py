"""Executor agent: runs due syncs and action calls, publishes results and records.

Reads the work topic (keyed by the rate-limit key, so every call that shares a budget runs in
one partition on one worker and the in-process limiter is exact cluster-wide). Many runs go
concurrently (bounded by ``max_concurrency``) so one slow API does not hold a partition; runs of
one job never overlap (a per-job lock). Acks are manual: an input is acknowledged only after its
result (and records) are published, and faust commits only the contiguous acked prefix, so a
crash re-delivers what was not finished (at-least-once).

De-duplication: the ``runs-done`` table remembers the last run ids finished per job; a
re-delivered ``DueJob`` whose run already has a result is not run again (its completion is
re-sent to the scheduler, in case that was what got lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import faust
import orjson
from faust.types import EventT, StreamT
from mode import Service
from pydantic import ValidationError

from databite_stream.execution import Executor
from databite_stream.models import Connection, ErrorKind, ExecutionResult, SyncBatch
from databite_stream.stream.app import StreamApp, now_ms
from databite_stream.stream.outbox import Outbox
from databite_stream.stream.rows import compact
from databite_stream.topics import (
    ACTION_RESULTS,
    CONNECTIONS,
    INBOX,
    RECORDS,
    RESULTS,
    WORK,
    record_key,
)
from databite_stream.wire import ActionWork, DueJob, DueJobs, work_adapter

__all__ = ("register",)

log = logging.getLogger(__name__)
DONE_KEPT = 16  # run ids remembered per job
#: runs accepted at once (see Runner.admitted), at least: above what arrives within the
#: dispatch-ahead window at full speed (a worker at 10,000 runs/s holds ~5,000 runs for 500 ms)
ADMITTED_MIN = 16_384
FINISHED_PER_MESSAGE = 500  # RunFinished items per RunsFinished message (~100 KB)
#: RunsFinished batching window: each inbox event of the scheduler costs a round of its own
#: (decode, apply, submit), so fewer, fuller ones leave more of the CPU to the runs. 50 ms
#: measured p99 263 ms (263, 234, 341) at 10,000 runs/s, 100 ms 216 (304, 216, 210), session
#: 11. The cost is later completions: one must reach the scheduler before the job's next
#: tick (its interval minus the tick lead after the run), or the overlap policy counts the
#: run still in flight; for a 1 s schedule that leaves ~600 ms, for the usual minutes plenty
COMPLETION_LINGER_S = 0.1


def register(sa: StreamApp) -> None:
    runner = Runner(sa)
    sa.runner = runner  # type: ignore[attr-defined]

    @sa.app.agent(sa.topic(WORK), name="databite.executor")
    async def executor(stream: StreamT[bytes]) -> None:
        manual = cast(faust.Stream[bytes], stream).noack()
        async for event in manual.events():
            await runner.accept(manual, event)

    sa.app.add_dependency(_Closer(runner))


class _Closer(Service):
    """Closes the executor's HTTP session when the worker stops."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    async def on_stop(self) -> None:
        await self.runner.sa.outbox.close()
        await self.runner.completions.close()
        await self.runner.executor.close()


class _Acks:
    """Acknowledges one work message once every run it carries is handled. A run cancelled
    by a shutdown is not handled: the message is then not acked and is re-delivered."""

    __slots__ = ("cancelled", "event", "left", "stream")

    def __init__(self, stream: StreamT[bytes], event: EventT[bytes], count: int) -> None:
        self.stream, self.event, self.left, self.cancelled = stream, event, count, False

    async def done(self, handled: bool) -> None:
        self.cancelled |= not handled
        self.left -= 1
        if self.left == 0 and not self.cancelled:
            await self.stream.ack(self.event)


def run_key(job: str, run: str) -> str:
    """How a ``runs-done`` row names a run of its job: what follows ``<job id>@`` in the run
    id (its scheduled ms). The row is rewritten by every run and keeps the last
    ``DONE_KEPT``: whole run ids made it ~720 bytes per run on the wire, keys ~290."""
    head = len(job)
    return run[head + 1 :] if run.startswith(job) and run[head : head + 1] == "@" else run


def _runs_finished(items: list[bytes]) -> list[bytes]:
    """Join encoded ``RunFinished`` items into ``RunsFinished`` messages (outbox combine)."""
    return [
        b'{"type":"runs_finished","runs":[' + b",".join(items[i : i + FINISHED_PER_MESSAGE]) + b"]}"
        for i in range(0, len(items), FINISHED_PER_MESSAGE)
    ]


def finished_item(
    due: DueJob,
    success: bool,
    result: ExecutionResult | None,
    *,
    checkpoint_changed: bool = False,
    error: str | None = None,
) -> bytes:
    """The encoded ``RunFinished`` of a run, built with orjson and without its defaults (a
    pydantic model per run was ~4 µs of a ~200 µs budget; the scheduler validates it with
    pydantic on the way in, so the wire contract is still checked)."""
    summary = result.summary if result is not None else None
    finished: dict[str, Any] = {
        "type": "run_finished",
        "job_id": due.job_id,
        "connection_id": due.connection.id,
        "run_id": due.run_id,
        "success": success,
        "finished_ms": result.finished_at_ms if result is not None else now_ms(),
    }
    if summary is not None:
        if summary.checkpoint is not None:
            finished["checkpoint"] = summary.checkpoint
        if checkpoint_changed:
            finished["checkpoint_changed"] = True
        if summary.records:
            finished["records"] = summary.records
    message = result.error if result is not None else error
    if message is not None:
        finished["error"] = message
    if result is not None and result.error_kind is not ErrorKind.NONE:
        finished["error_kind"] = result.error_kind.value
    return orjson.dumps(finished)


class _Slot:
    """One of the executor's concurrency slots: taken just before the third-party work,
    released once (when that work ends, or when the handler does)."""

    __slots__ = ("held", "slots")

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self.slots, self.held = slots, False

    async def acquire(self) -> None:
        await self.slots.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()


class Runner:
    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.slots = asyncio.Semaphore(sa.settings.max_concurrency)
        #: runs accepted but not finished (waiting for their time, a slot or their job's
        #: lock): bounds what a fast stream can pile up in memory
        self.admitted = asyncio.Semaphore(max(ADMITTED_MIN, 16 * sa.settings.max_concurrency))
        self.ahead_ms = sa.settings.dispatch_ahead_ms
        self.tasks: set[asyncio.Task[None]] = set()
        self.locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.executor = Executor()
        self.in_flight = 0
        self.inbox = INBOX.name(sa.settings)
        # completions linger longer than results: the scheduler handles one inbox event per
        # partition and round, and small rounds at a steady rate were most of its CPU
        self.completions = Outbox(
            sa.outbox.producer, sa.outbox.partitions, linger_s=COMPLETION_LINGER_S
        )
        self.results = RESULTS.name(sa.settings)
        self.records = RECORDS.name(sa.settings)

    async def accept(self, stream: StreamT[bytes], event: EventT[bytes]) -> None:
        """Decode one work message and start its runs (at most ``max_concurrency`` running
        at once; this waits while too many are admitted, which holds the stream back)."""
        message = event.message
        if message.value is None:
            await self.sa.deadletters.from_event(event, "empty work message", "invalid")
            await stream.ack(event)
            return
        try:
            work = work_adapter.validate_json(message.value)
        except ValidationError as exc:
            await self.sa.deadletters.from_event(event, f"invalid work message: {exc}", "invalid")
            await stream.ack(event)
            return
        items: list[DueJob] | list[ActionWork] | list[DueJob | ActionWork]
        items = work.runs if isinstance(work, DueJobs) else [work]
        acks = _Acks(stream, event, len(items))
        for item in items:
            await self.admitted.acquire()
            task = asyncio.create_task(self.handle(item, event, acks))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def handle(self, work: DueJob | ActionWork, event: EventT[bytes], acks: _Acks) -> None:
        handled = False
        slot = _Slot(self.slots)
        try:
            if isinstance(work, DueJob):
                await self._until_due(work)
                await self._run_due(work, event.message.partition, slot)
            else:
                await slot.acquire()
                await self._run_action(work)
            handled = True
        except Exception:
            if isinstance(work, DueJob):
                with contextlib.suppress(Exception):
                    await self._report(work, False, None, error="internal error in the executor")
            log.exception(
                "executor failed on %s[%d]@%d",
                event.message.topic,
                event.message.partition,
                event.message.offset,
            )
            await self.sa.deadletters.from_event(
                event, "internal error while executing", "internal"
            )
            handled = True
        finally:
            slot.release()
            self.admitted.release()
            await acks.done(handled)

    async def _until_due(self, due: DueJob) -> None:
        """The scheduler hands runs over up to ``dispatch_ahead_ms`` early (hiding Kafka's
        latency); a run still starts at its scheduled time. Capped, so a clock that is off
        between workers cannot hold a run back for long."""
        # a timer may fire a little early (ms rounding): sleep again until the time has come
        deadline = time.monotonic() + 2 * self.ahead_ms / 1000
        while (wait_ms := due.scheduled_for_ms - now_ms()) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(wait_ms / 1000, left))

    async def _run_due(self, work: DueJob, partition: int, slot: _Slot) -> None:
        # one run of a job at a time; the lock lives while anyone holds or awaits it
        entry = self.locks.get(work.job_id)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self.locks[work.job_id] = (lock, users + 1)
        try:
            async with lock:
                await self._run_sync(work, partition, slot)
        finally:
            lock, users = self.locks[work.job_id]
            if users == 1:
                del self.locks[work.job_id]
            else:
                self.locks[work.job_id] = (lock, users - 1)

    def _done(self, job: str) -> dict[str, Any]:
        """The job's ``runs-done`` row: run key (see :func:`run_key`) -> success."""
        raw = self.sa.local_get(self.sa.runs_done)(job)
        if raw is None:
            return {}
        done: dict[str, Any] = orjson.loads(raw)
        if "@" in next(iter(done), ""):  # written before run keys: whole run ids
            done = {run_key(job, run): ok for run, ok in done.items()}
        return done

    async def _run_sync(self, due: DueJob, partition: int, slot: _Slot) -> None:
        done = self._done(due.job_id)
        key = run_key(due.job_id, due.run_id)
        if key in done:
            log.info("run %s already has a result; not running it again", due.run_id)
            await self._report(due, done[key], None)
            return
        connector = self.sa.registry.get(due.connection.connector_id)
        outbox = self.sa.outbox
        checkpoint_changed = False
        await slot.acquire()

        async def on_batch(batch: SyncBatch) -> None:
            nonlocal checkpoint_changed
            rounds: set[asyncio.Future[None]] = set()
            for record in batch.records:
                key = record_key(due.connection.id, due.sync_name, record.record_id)
                rounds.add(outbox.add(self.records, key, record.model_dump_json().encode()))
            for record_id in batch.deletions:
                key = record_key(due.connection.id, due.sync_name, str(record_id))
                rounds.add(outbox.add(self.records, key, None))
            # a batch counts (and its checkpoint) only once Kafka has all of it
            await asyncio.gather(*rounds)
            checkpoint_changed = True

        self.in_flight += 1
        try:
            result = await self.executor.run_sync(
                connector,
                due.sync_name,
                due.connection,
                due.integration,
                run_id=due.run_id,
                on_batch=on_batch,
                checkpoint=due.checkpoint,
                job_id=due.job_id,
                scheduled_for_ms=due.scheduled_for_ms,
                on_connection_config=lambda _id, config: self._publish_config(
                    due.connection, config
                ),
            )
        finally:
            self.in_flight -= 1
            slot.release()  # the third-party work is over; publishing does not hold a slot
        done[key] = result.success
        if len(done) > DONE_KEPT:
            for old in list(done)[: len(done) - DONE_KEPT]:
                del done[old]
        # the result, the "done" marker and the completion go out in one outbox round and are
        # all acknowledged before the input is acked: a crash can only re-deliver a run whose
        # marker is not in Kafka, and then its result is not either
        outbox.add(self.results, due.connection.id.encode(), result.model_dump_json().encode())
        self.sa.durable_put(self.sa.runs_done, due.job_id, compact(orjson.dumps(done)), partition)
        self.sa.metrics.observe_result(result)
        await self._report(due, result.success, result, checkpoint_changed=checkpoint_changed)

    async def _report(
        self,
        due: DueJob,
        success: bool,
        result: ExecutionResult | None,
        *,
        checkpoint_changed: bool = False,
        error: str | None = None,
    ) -> None:
        """Tell the job's scheduler partition the run is over (batched per partition) and
        wait until Kafka has it, with everything queued before it."""
        item = finished_item(
            due, success, result, checkpoint_changed=checkpoint_changed, error=error
        )
        outbox = self.completions
        partition = outbox.partition(self.inbox, due.connection.id.encode())
        await outbox.add_combined(self.inbox, partition, item, _runs_finished)

    async def _run_action(self, work: ActionWork) -> None:
        connector = self.sa.registry.get(work.connection.connector_id)
        result = await self.executor.run_action(
            connector,
            work.request.action,
            work.connection,
            work.integration,
            work.request,
            on_connection_config=lambda _id, config: self._publish_config(work.connection, config),
        )
        fut = await self.sa.topic(ACTION_RESULTS).send(
            key=work.request.correlation_id.encode(), value=result.model_dump_json().encode()
        )
        await fut
        self.sa.metrics.observe_action(
            connector.id,
            result.success,
            str(result.error_kind),
            result.attempts,
            result.execution_time_ms,
        )

    async def _publish_config(self, current: Connection, config: dict[str, Any]) -> None:
        """A token refresh changed a connection's config: publish the updated connection on
        the compacted catalog topic (the source of truth), which also reaches later runs."""
        updated = current.model_copy(update={"config": config})
        fut = await self.sa.topic(CONNECTIONS).send(
            key=current.id.encode(), value=updated.model_dump_json().encode()
        )
        await fut
