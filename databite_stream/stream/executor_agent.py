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
from typing import Any, cast

import faust
import orjson
from faust.types import EventT, StreamT
from mode import Service
from pydantic import ValidationError

from databite_stream.execution import Executor
from databite_stream.models import Connection, ErrorKind, ExecutionResult, SyncBatch
from databite_stream.stream.app import StreamApp, now_ms
from databite_stream.topics import (
    ACTION_RESULTS,
    CONNECTIONS,
    INBOX,
    RECORDS,
    RESULTS,
    WORK,
    record_key,
)
from databite_stream.wire import ActionWork, DueJob, RunFinished, work_adapter

__all__ = ("register",)

log = logging.getLogger(__name__)
DONE_KEPT = 16  # run ids remembered per job


def register(sa: StreamApp) -> None:
    runner = Runner(sa)
    sa.runner = runner  # type: ignore[attr-defined]

    @sa.app.agent(sa.topic(WORK), name="databite.executor")
    async def executor(stream: StreamT[bytes]) -> None:
        manual = cast(faust.Stream[bytes], stream).noack()
        async for event in manual.events():
            await runner.slots.acquire()
            task = asyncio.create_task(runner.handle(manual, event))
            runner.tasks.add(task)
            task.add_done_callback(runner.tasks.discard)

    sa.app.add_dependency(_Closer(runner))


class _Closer(Service):
    """Closes the executor's HTTP session when the worker stops."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    async def on_stop(self) -> None:
        await self.runner.executor.close()


class Runner:
    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.slots = asyncio.Semaphore(sa.settings.max_concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.executor = Executor()
        self.in_flight = 0

    async def handle(self, stream: StreamT[bytes], event: EventT[bytes]) -> None:
        handled = False
        try:
            await self._handle(event)
            handled = True
        except Exception:
            await self._fail_run(event)
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
            self.slots.release()
            # a run cancelled by a shutdown is not acked: its input is re-delivered
            if handled:
                await stream.ack(event)

    async def _handle(self, event: EventT[bytes]) -> None:
        message = event.message
        if message.value is None:
            await self.sa.deadletters.from_event(event, "empty work message", "invalid")
            return
        try:
            work = work_adapter.validate_json(message.value)
        except ValidationError as exc:
            await self.sa.deadletters.from_event(event, f"invalid work message: {exc}", "invalid")
            return
        if isinstance(work, DueJob):
            # one run of a job at a time; the lock lives while anyone holds or awaits it
            lock, users = self.locks.get(work.job_id, (asyncio.Lock(), 0))
            self.locks[work.job_id] = (lock, users + 1)
            try:
                async with lock:
                    await self._run_sync(work, message.partition)
            finally:
                lock, users = self.locks[work.job_id]
                if users == 1:
                    del self.locks[work.job_id]
                else:
                    self.locks[work.job_id] = (lock, users - 1)
        else:
            await self._run_action(work)

    async def _fail_run(self, event: EventT[bytes]) -> None:
        """An internal error: tell the scheduler the run failed, so the job is not left
        "in flight" until its lease expires."""
        try:
            work = work_adapter.validate_json(event.message.value or b"")
        except ValidationError:
            return
        if isinstance(work, DueJob):
            with contextlib.suppress(Exception):
                await self._report(work, False, None, error="internal error in the executor")

    def _done(self, job: str) -> dict[str, Any]:
        raw = self.sa.runs_done.get(job)
        return orjson.loads(raw) if raw is not None else {}

    async def _run_sync(self, due: DueJob, partition: int) -> None:
        done = self._done(due.job_id)
        if due.run_id in done:
            log.info("run %s already has a result; not running it again", due.run_id)
            await self._report(due, done[due.run_id], None)
            return
        connector = self.sa.registry.get(due.connection.connector_id)
        records_topic = self.sa.topic(RECORDS)
        checkpoint_changed = False

        async def on_batch(batch: SyncBatch) -> None:
            nonlocal checkpoint_changed
            pending = []
            for record in batch.records:
                pending.append(
                    await records_topic.send(
                        key=record_key(due.connection.id, due.sync_name, record.record_id),
                        value=record.model_dump_json().encode(),
                    )
                )
            for record_id in batch.deletions:
                pending.append(
                    await records_topic.send(
                        key=record_key(due.connection.id, due.sync_name, str(record_id)),
                        value=None,
                    )
                )
            for fut in pending:
                await fut  # a batch counts (and its checkpoint) only once Kafka has it
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
        done[due.run_id] = result.success
        if len(done) > DONE_KEPT:
            for old in list(done)[: len(done) - DONE_KEPT]:
                del done[old]
        # the result and the "done" marker leave together and are both awaited before the
        # input is acked: a crash can only re-deliver a run whose marker is not in Kafka,
        # and then its result is not either (up to the gap between two acks of one flush)
        result_sent = await self.sa.topic(RESULTS).send(
            key=due.connection.id.encode(), value=result.model_dump_json().encode()
        )
        try:
            await self.sa.durable_set(self.sa.runs_done, due.job_id, orjson.dumps(done), partition)
        except Exception:  # de-duplication is best effort; the result goes out regardless
            log.exception("could not record run %s as done", due.run_id)
        await result_sent
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
        summary = result.summary if result is not None else None
        finished = RunFinished(
            job_id=due.job_id,
            connection_id=due.connection.id,
            run_id=due.run_id,
            success=success,
            finished_ms=result.finished_at_ms if result is not None else now_ms(),
            checkpoint=summary.checkpoint if summary is not None else None,
            checkpoint_changed=checkpoint_changed and summary is not None,
            error=result.error if result is not None else error,
            error_kind=result.error_kind if result is not None else ErrorKind.NONE,
            records=summary.records if summary is not None else 0,
        )
        await self.sa.topic(INBOX).send(
            key=due.connection.id.encode(), value=finished.model_dump_json().encode()
        )

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
