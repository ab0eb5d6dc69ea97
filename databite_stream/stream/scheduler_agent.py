"""Scheduler agent and ticker: the jobs table, the per-partition due index, due-job emission.

One agent reads ``databite.commands`` and the scheduler inbox (ticks, job upserts/removals, run
completions) of a partition in order, so the jobs table and that partition's due index change in
one place. The ticker (a task on every worker) only *reads* the due indexes and sends a ``Tick``
to a partition it actively owns when something there is due; faust forbids table writes outside
a stream, and a tick that is data keeps every change ordered (DESIGN.md principle 2).

Invariants: the due index holds ``wake_at_ms(state)`` of every job of the active partitions and
is rebuilt from the table after every recovery (``on_recover``; ``on_partitions_assigned`` fires
before recovery); a tick pops only due entries (never a table scan); heap entries may be stale,
the table is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from faust.types import EventT, StreamT
from pydantic import ValidationError

from databite_stream.ratelimit import rate_limit_key
from databite_stream.schedule import (
    DueIndex,
    DueRun,
    JobState,
    ScheduleError,
    create_job,
    job_id,
    on_run_finished,
    parse_schedule,
    pause,
    plan_due,
    request_run_now,
    reschedule,
    resume,
    wake_at_ms,
)
from databite_stream.stream.app import StreamApp, now_ms
from databite_stream.stream.rows import (
    JobRow,
    decode_connection_row,
    decode_job_row,
    encode_job_row,
)
from databite_stream.topics import COMMANDS, INBOX, WORK
from databite_stream.wire import (
    Command,
    DueJob,
    JobRemove,
    JobUpsert,
    RunFinished,
    Tick,
    inbox_adapter,
)

__all__ = ("register",)

log = logging.getLogger(__name__)

POP_LIMIT = 5000  # due jobs handled per tick; more wakes the ticker again at once
TICK_RESEND_S = 2.0  # a tick not handled by then (lost in a rebalance) is sent again
DELIVERY_WAIT_S = 3.0  # longest a tick waits for its due jobs to be acknowledged


class Ticker:
    """Wakes when the earliest due time of an owned partition arrives, and sends a Tick."""

    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.wakeup = asyncio.Event()
        self.outstanding: dict[int, float] = {}

    def poke(self) -> None:
        self.wakeup.set()

    def handled(self, partition: int) -> None:
        self.outstanding.pop(partition, None)

    def _next_wait(self) -> float:
        """Seconds until some partition needs a tick: its earliest due time, or, while its
        tick is outstanding (the agent pokes us when it is handled), the re-send deadline."""
        wait = self.sa.settings.tick_max_interval_s
        now, mono = now_ms(), time.monotonic()
        for partition, index in self.sa.due.items():
            sent = self.outstanding.get(partition)
            if sent is not None:
                wait = min(wait, max(0.0, sent + TICK_RESEND_S - mono))
                continue
            nxt = index.peek_next_ms()
            if nxt is not None:
                wait = min(wait, max(0.0, (nxt - now) / 1000))
        return wait

    async def run(self) -> None:
        inbox = self.sa.topic(INBOX)
        app = self.sa.app
        while True:
            try:
                async with asyncio.timeout(self._next_wait()):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
            self.wakeup.clear()
            if app.rebalancing:
                await asyncio.sleep(0.05)
                continue
            owned = self.sa.owned_inbox_partitions()
            now, mono = now_ms(), time.monotonic()
            for partition, index in list(self.sa.due.items()):
                if partition not in owned:
                    continue
                nxt = index.peek_next_ms()
                if nxt is None or nxt > now:
                    continue
                sent = self.outstanding.get(partition)
                if sent is not None and mono - sent < TICK_RESEND_S:
                    continue
                self.outstanding[partition] = mono
                await inbox.send(
                    key=None, value=Tick(now_ms=now).model_dump_json().encode(), partition=partition
                )


def register(sa: StreamApp) -> None:
    ticker = Ticker(sa)
    sa.ticker = ticker  # type: ignore[attr-defined]

    @sa.app.agent(sa.scheduler_source, name="databite.scheduler")
    async def scheduler(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await on_inbox(sa, ticker, event)
            await sa.drain_table_writes()

    @sa.app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def tick_loop() -> None:
        await ticker.run()

    @sa.jobs.on_recover
    async def rebuild_due_index() -> None:
        owned = sa.owned_inbox_partitions()
        items: dict[int, list[tuple[str, int]]] = {p: [] for p in owned}
        started = time.monotonic()
        for count, (key, raw) in enumerate(sa.jobs.items(), start=1):
            if not isinstance(raw, bytes):
                log.warning("jobs table: key %r holds %s, not bytes", key, type(raw).__name__)
                continue
            row = decode_job_row(raw)
            if row.partition in items:
                wake = wake_at_ms(row.state)
                if wake is not None:
                    items[row.partition].append((str(key), wake))
            if count % 10_000 == 0:
                await asyncio.sleep(0)  # keep the loop responsive on big tables
        sa.due = {p: DueIndex.from_items(v) for p, v in items.items()}
        ticker.outstanding.clear()
        ticker.poke()
        sa.assigned.set()
        log.info(
            "due index rebuilt for partitions %s: %d jobs in %.2fs",
            sorted(owned),
            sum(len(v) for v in items.values()),
            time.monotonic() - started,
        )


def _index(sa: StreamApp, partition: int) -> DueIndex:
    index = sa.due.get(partition)
    if index is None:
        index = sa.due[partition] = DueIndex()
    return index


def _store(sa: StreamApp, row: JobRow) -> None:
    sa.jobs[row.state.job_id] = encode_job_row(row)
    index = _index(sa, row.partition)
    wake = wake_at_ms(row.state)
    if wake is None:
        index.remove(row.state.job_id)
    else:
        index.upsert(row.state.job_id, wake)


def _load(sa: StreamApp, job: str) -> JobRow | None:
    raw = sa.jobs.get(job)
    return decode_job_row(raw) if raw is not None else None


async def on_inbox(sa: StreamApp, ticker: Ticker, event: EventT[bytes]) -> None:
    message = event.message
    if message.value is None:
        await sa.deadletters.from_event(event, "empty message", "invalid")
        return
    try:
        if message.topic == COMMANDS.name(sa.settings):
            msg: object = Command.model_validate_json(message.value)
        else:
            msg = inbox_adapter.validate_json(message.value)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        await sa.deadletters.from_event(event, f"invalid message: {reasons}", "invalid")
        return
    partition = message.partition
    now = now_ms()
    if isinstance(msg, Tick):
        ticker.handled(partition)
        await _on_tick(sa, partition, now)
    elif isinstance(msg, JobUpsert):
        await _on_upsert(sa, partition, msg, now, event)
    elif isinstance(msg, JobRemove):
        if sa.jobs.get(msg.job_id) is not None:
            del sa.jobs[msg.job_id]
        _index(sa, partition).remove(msg.job_id)
    elif isinstance(msg, RunFinished):
        row = _load(sa, msg.job_id)
        if row is not None:
            state, runs = on_run_finished(
                row.state,
                msg.run_id,
                msg.success,
                msg.finished_ms,
                sa.policy,
                result=msg.error if not msg.success else f"{msg.records} records",
            )
            checkpoint = msg.checkpoint if msg.checkpoint_changed else row.checkpoint
            await _save_and_emit(sa, JobRow(partition, state, checkpoint), runs, now)
    elif isinstance(msg, Command):
        await _on_command(sa, partition, msg, now, event)
    ticker.poke()


async def _on_tick(sa: StreamApp, partition: int, now: int) -> None:
    index = sa.due.get(partition)
    if index is None:
        return
    due = index.pop_due(now, POP_LIMIT)
    rows: list[JobRow] = []
    sent: list[Awaitable[Any]] = []
    for _, job in due:
        row = _load(sa, job)
        if row is None:
            index.remove(job)  # popped entries keep their slot until removed
            continue
        state, runs = plan_due(row.state, now, sa.policy)
        new_row, deliveries = await _emit(sa, JobRow(partition, state, row.checkpoint), runs, now)
        rows.append(new_row)
        sent.extend(deliveries)
    await _stored_after(sa, rows, sent)


async def _on_upsert(
    sa: StreamApp, partition: int, msg: JobUpsert, now: int, event: EventT[bytes]
) -> None:
    try:
        spec = parse_schedule(msg.schedule)
    except ScheduleError as exc:
        await sa.deadletters.from_event(event, str(exc), "invalid_schedule")
        return
    row = _load(sa, msg.job_id)
    if row is None:
        state = create_job(msg.connection_id, msg.sync_name, spec, now, sa.policy)
        row = JobRow(partition, state)
    else:
        row = JobRow(partition, reschedule(row.state, spec, now), row.checkpoint)
    _store(sa, row)


async def _on_command(
    sa: StreamApp, partition: int, cmd: Command, now: int, event: EventT[bytes]
) -> None:
    if cmd.sync_name is not None:
        jobs: tuple[str, ...] = (job_id(cmd.connection_id, cmd.sync_name),)
    else:
        raw = sa.connections.get(cmd.connection_id)
        jobs = decode_connection_row(raw).job_ids if raw is not None else ()
    rows = [r for r in (_load(sa, j) for j in jobs) if r is not None]
    if not rows:
        target = cmd.connection_id + (f"/{cmd.sync_name}" if cmd.sync_name else "")
        await sa.deadletters.from_event(event, f"{cmd.command}: no job for {target}", "unknown_job")
        return
    at = cmd.requested_at_ms or now
    for row in rows:
        runs: list[DueRun] = []
        state: JobState = row.state
        checkpoint = row.checkpoint
        if cmd.command == "pause":
            state = pause(state)
        elif cmd.command == "resume":
            state = resume(state, now)
        elif cmd.command == "run_now":
            state, runs = request_run_now(state, at, sa.policy)
        elif cmd.command == "reset_checkpoint":
            checkpoint = None
        elif cmd.command == "unschedule":
            del sa.jobs[state.job_id]
            _index(sa, partition).remove(state.job_id)
            continue
        await _save_and_emit(sa, JobRow(partition, state, checkpoint), runs, now)


async def _save_and_emit(sa: StreamApp, row: JobRow, runs: list[DueRun], now: int) -> None:
    """Send the row's due runs, then write the row (see :func:`_stored_after`)."""
    new_row, sent = await _emit(sa, row, runs, now)
    await _stored_after(sa, [new_row], sent)


async def _stored_after(sa: StreamApp, rows: list[JobRow], sent: list[Awaitable[Any]]) -> None:
    """Write ``rows`` only once the DueJobs they record as in flight are in Kafka.

    The other order can lose a run: a kill -9 after the row's changelog record landed but
    before its DueJob did leaves the recovered job "in flight" for a run nobody has (the
    re-delivered tick sees it as already emitted). In this order a kill re-emits the same
    run id instead, which the executor's runs-done table de-duplicates.
    """
    if sent:
        # bounded: while a broker is down a delivery can wait for the producer's request
        # timeout; the scheduler must not stop for that long (the old order's small risk
        # is accepted then, and logged)
        _done, pending = await asyncio.wait(
            [asyncio.ensure_future(f) for f in sent], timeout=DELIVERY_WAIT_S
        )
        if pending:
            log.warning(
                "%d due job(s) not acknowledged by Kafka within %.0fs; recording them anyway",
                len(pending),
                DELIVERY_WAIT_S,
            )
    for row in rows:
        _store(sa, row)


async def _emit(
    sa: StreamApp, row: JobRow, runs: list[DueRun], now: int
) -> tuple[JobRow, list[Awaitable[Any]]]:
    """Send the due runs to the executor (keyed by the rate-limit key); return the row to
    store and the pending deliveries. Runs that cannot be sent fail at once."""
    if not runs:
        return row, []
    raw = sa.connections.get(row.state.connection_id)
    connection = decode_connection_row(raw).connection if raw is not None else None
    integration = sa.integrations.get(connection.integration_id) if connection is not None else None
    missing = (
        "connection"
        if connection is None
        else "integration"
        if integration is None
        else f"connector {connection.connector_id!r}"
        if connection.connector_id not in sa.registry
        else None
    )
    if missing is not None or connection is None or integration is None:
        # nothing to run it with (deleted meanwhile, or a plugin removed): the runs fail
        state = row.state
        for run in runs:
            state, _ = on_run_finished(
                state, run.run_id, False, now, sa.policy, result=f"{missing} not found"
            )
        return JobRow(row.partition, state, row.checkpoint), []
    key = rate_limit_key(sa.registry.get(connection.connector_id), connection).encode()
    work = sa.topic(WORK)
    sent: list[Awaitable[Any]] = []
    for run in runs:
        due = DueJob(
            run_id=run.run_id,
            job_id=run.job_id,
            sync_name=row.state.sync_name,
            scheduled_for_ms=run.scheduled_for_ms,
            emitted_at_ms=now_ms(),
            reason=run.reason.value,
            checkpoint=row.checkpoint,
            connection=connection,
            integration=integration,
        )
        sent.append(await work.send(key=key, value=due.model_dump_json().encode()))
    return row, sent
