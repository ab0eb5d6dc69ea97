"""Scheduler agent and ticker: the jobs table, the per-partition due index, due-job emission.

One agent reads ``databite.commands`` and the scheduler inbox (job upserts/removals, run
completions) of a partition in order. The ticker (a task on every worker) only *reads* the due
indexes and sends a ``Tick`` to a partition it actively owns when something there is due;
faust forbids table writes outside a stream, and a tick that is data keeps every change ordered
(DESIGN.md principle 2). Ticks have their own topic and agent (``scheduler-ticks``, co-partitioned
with the inbox): in the inbox a tick queued behind every completion before it, and at 10,000
runs/s that alone made runs start ~200 ms late. The two agents change a partition one event at
a time (a lock per partition), so the jobs table and a partition's due index still change in
one place, in event order.

Invariants: the due index holds ``wake_at_ms(state)`` of every job of the active partitions and
is rebuilt from the table after every recovery (``on_recover``; ``on_partitions_assigned`` fires
before recovery); a tick pops only due entries (never a table scan); heap entries may be stale,
the table is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from faust.types import EventT, StreamT
from pydantic import ValidationError

from databite_stream.models import Integration
from databite_stream.ratelimit import budget_key
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
from databite_stream.stream.heap import freeze_heap, rss_bytes
from databite_stream.stream.rows import (
    JobRow,
    connection_fields,
    decode_connection_row,
    decode_job_row,
    encode_job_row,
    job_wake,
)
from databite_stream.topics import COMMANDS, TICKS
from databite_stream.wire import (
    Command,
    JobRemove,
    JobUpsert,
    RunFinished,
    RunsFinished,
    Tick,
    inbox_adapter,
)

__all__ = ("register", "tick_lead_ms")

log = logging.getLogger(__name__)

POP_LIMIT = 5000  # due jobs handled per tick; more wakes the ticker again at once
DUE_PER_MESSAGE = 200  # due jobs per work message (~150 KB; the broker's limit is 1 MB)
TICK_RESEND_S = 2.0  # a tick not handled by then (lost in a rebalance) is sent again
DELIVERY_WAIT_S = 3.0  # longest a tick waits for its due jobs to be acknowledged
#: jobs due later than this are kept in the due index's far tier (one list slot each instead
#: of ~106 bytes; see DueIndex) and checked against the table when they come this close
FAR_HORIZON_MS = 60_000
#: how much of the dispatch-ahead window one tick hands over, at most (see tick_lead_ms)
TICK_SPAN_MS = 125


def tick_lead_ms(ahead_ms: int) -> int:
    """How early a partition is ticked: once its earliest run is due within this many ms.

    The tick hands over every run due within ``ahead_ms``, so each tick carries about
    ``ahead_ms - lead`` ms of runs and every run leaves at least ``lead`` ms early. The span
    is at most :data:`TICK_SPAN_MS` (and half the window): the lead, not the batch, grows with
    the window. At 10,000 runs/s the earliest runs of each tick reached the executor after
    their time with a 125 ms lead (p99 lateness 478 ms); a longer window that grew the
    batches with it made the waves grow instead (session 9, 1,000 ms: p99 976 ms).
    """
    return ahead_ms - min(ahead_ms // 2, TICK_SPAN_MS)


class Ticker:
    """Wakes when the earliest due time of an owned partition arrives, and sends a Tick."""

    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.wakeup = asyncio.Event()
        self.outstanding: dict[int, float] = {}
        self.early_ms = tick_lead_ms(sa.settings.dispatch_ahead_ms)

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
                wait = min(wait, max(0.0, (nxt - self.early_ms - now) / 1000))
        return wait

    async def run(self) -> None:
        ticks = self.sa.topic(TICKS)
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
            now, mono = now_ms(), time.monotonic()
            due = []
            for partition, index in list(self.sa.due.items()):
                nxt = index.peek_next_ms()
                if nxt is None or nxt > now + self.early_ms:
                    continue
                sent = self.outstanding.get(partition)
                if sent is None or mono - sent >= TICK_RESEND_S:
                    due.append(partition)
            # asked only when something is due: faust builds the set anew on every call
            owned = self.sa.owned_inbox_partitions() if due else set()
            for partition in due:
                if partition not in owned:
                    continue
                self.outstanding[partition] = mono
                await ticks.send(
                    key=None, value=Tick(now_ms=now).model_dump_json().encode(), partition=partition
                )


def register(sa: StreamApp) -> None:
    ticker = Ticker(sa)
    sa.ticker = ticker  # type: ignore[attr-defined]
    locks: dict[int, asyncio.Lock] = {}  # scheduler partition -> one event at a time

    @sa.app.agent(sa.scheduler_source, name="databite.scheduler")
    async def scheduler(stream: StreamT[bytes]) -> None:
        # no faust table writes here: rows go through the outbox (Changes.apply)
        async for event in stream.events():
            await on_inbox(sa, ticker, event, locks)

    @sa.app.agent(sa.topic(TICKS), name="databite.scheduler-ticks")
    async def ticks(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await on_inbox(sa, ticker, event, locks)

    @sa.app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def tick_loop() -> None:
        await ticker.run()

    @sa.jobs.on_recover
    async def rebuild_due_index() -> None:
        owned = sa.owned_inbox_partitions()
        started = time.monotonic()
        rss_before = rss_bytes()
        # each row goes straight into its partition's index (a list of 1M (id, time) pairs
        # first would cost ~90 MB at its peak, and the RSS would keep much of it)
        now, packed = now_ms(), _packed_far(sa)
        due = {p: DueIndex(FAR_HORIZON_MS, now, packed_far=packed) for p in owned}
        for count, (key, raw) in enumerate(sa.local_items(sa.jobs), start=1):
            if not isinstance(raw, bytes):
                log.warning("jobs table: key %r holds %s, not bytes", key, type(raw).__name__)
                continue
            partition, wake = job_wake(raw)  # not decode_job_row: ~3x cheaper per row
            index = due.get(partition)
            if wake is not None and index is not None:
                index.load(str(key), wake)
            if count % 10_000 == 0:
                await asyncio.sleep(0)  # keep the loop responsive on big tables
        for index in due.values():
            index.compact()
        sa.due = due
        _in_flight_rows.clear()  # rows of partitions given away would stay otherwise
        ticker.outstanding.clear()
        ticker.poke()
        sa.assigned.set()
        jobs = sum(len(index) for index in due.values())
        freeze_heap()
        log.info(
            "due index rebuilt for partitions %s: %d jobs in %.2fs (worker RSS %d MiB before "
            "the rebuild, %d MiB after)",
            sorted(owned),
            jobs,
            time.monotonic() - started,
            rss_before >> 20,
            rss_bytes() >> 20,
        )


def _packed_far(sa: StreamApp) -> bool:
    """Far-tier ids as packed bytes unless the jobs table's dict keeps the id strings anyway
    (memory://): with RocksDB each far entry would otherwise own a ~70-byte string."""
    return sa.settings.store != "memory://"


def _index(sa: StreamApp, partition: int) -> DueIndex:
    index = sa.due.get(partition)
    if index is None:
        index = sa.due[partition] = DueIndex(FAR_HORIZON_MS, now_ms(), packed_far=_packed_far(sa))
    return index


class Changes:
    """What one inbox event changes, applied together at its end (:meth:`apply`).

    Rows changed by a tick (a run emitted: ``next_run`` advanced, run in flight, leases
    expired) are stored locally only: each is re-derived from the durable row after a crash
    or a rebalance, and re-derived runs keep their run ids, which the executor's
    ``runs-done`` table de-duplicates. Every other change is durable: handed to the producer
    through the outbox before the event is done (faust flushes the producer before it
    commits the event's offset), and only after the due jobs it records as in flight are in
    Kafka (the other order can leave a job "in flight" for a run nobody has, after a kill),
    those of an earlier tick included (:data:`_handing_over`).
    """

    __slots__ = ("due", "partition", "rows", "sa")

    def __init__(self, sa: StreamApp, partition: int) -> None:
        self.sa, self.partition = sa, partition
        #: job id -> (new row or None for a delete, durable?); the latest change wins
        self.rows: dict[str, tuple[JobRow | None, bool]] = {}
        self.due: dict[int, list[dict[str, Any]]] = {}  # work partition -> DueJobs

    def load(self, job: str) -> JobRow | None:
        """The job's row as this event has changed it so far."""
        if job in self.rows:
            return self.rows[job][0]
        raw = self.sa.local_get(self.sa.jobs)(job)
        if raw is None:
            return None
        hit = _in_flight_rows.get(job)
        if hit is not None and hit[0] == raw:
            return hit[1]
        return decode_job_row(raw, job)

    def emit(self, row: JobRow, runs: list[DueRun], now: int) -> JobRow:
        """Queue the due runs for the executor (keyed by the rate-limit key); return the row
        to store. Runs that cannot be sent (nothing to run them with) fail at once."""
        if not runs:
            return row
        sa = self.sa
        raw = sa.local_get(sa.connections)(row.state.connection_id)
        connection: dict[str, Any] | None = connection_fields(raw) if raw else None
        integration = sa.integrations.get(connection["integration_id"]) if connection else None
        connector_id = connection["connector_id"] if connection else ""
        missing = (
            "connection"
            if connection is None
            else "integration"
            if integration is None
            else f"connector {connector_id!r}"
            if connector_id not in sa.registry
            else None
        )
        if missing is not None or connection is None or integration is None:
            # deleted meanwhile, or a plugin removed: the runs fail
            state = row.state
            for run in runs:
                state, _ = on_run_finished(
                    state, run.run_id, False, now, sa.policy, result=f"{missing} not found"
                )
            return JobRow(row.partition, state, row.checkpoint)
        key = budget_key(sa.registry.get(connector_id), connection["id"], integration.id)
        partition = sa.outbox.partition(sa.work_name, key.encode())
        integration_json = orjson.Fragment(_integration_json(integration))
        queue = self.due.setdefault(partition, [])
        emitted = now_ms()
        for run in runs:
            # built with orjson from rows validated on the way in (pydantic would validate
            # the connection again on every run; the executor validates what it receives)
            queue.append(
                {
                    "type": "due_job",
                    "run_id": run.run_id,
                    "job_id": run.job_id,
                    "sync_name": row.state.sync_name,
                    "scheduled_for_ms": run.scheduled_for_ms,
                    "emitted_at_ms": emitted,
                    "reason": run.reason.value,
                    "checkpoint": row.checkpoint,
                    "connection": connection,
                    "integration": integration_json,
                }
            )
        return row

    def store(self, row: JobRow, *, durable: bool = True) -> None:
        job = row.state.job_id
        earlier = self.rows.get(job)
        self.rows[job] = (row, durable or (earlier is not None and earlier[1]))

    def delete(self, job: str) -> None:
        self.rows[job] = (None, True)

    async def apply(self) -> asyncio.Future[Any] | None:
        """Store the rows and hand the due jobs to Kafka. Returns the due jobs' delivery
        when nothing waited for it (only local rows: a tick); the caller waits for it once
        the partition is free for its next event."""
        sa = self.sa
        delivery = self._hand_over() if self.due else None
        lasting = [job for job, (_row, durable) in self.rows.items() if durable]
        if lasting:
            waits = {f for job in lasting if (f := _handing_over.get(job)) is not None}
            if delivery is not None:
                waits.add(delivery)
                delivery = None
            if waits:
                await _delivered(waits)
        elif delivery is not None:
            # until their due jobs are in Kafka, a durable write of these jobs must wait
            jobs = [item["job_id"] for items in self.due.values() for item in items]
            for job in jobs:
                _handing_over[job] = delivery
            delivery.add_done_callback(lambda handed: _forget(handed, jobs))
        index = _index(sa, self.partition)
        for job, (row, durable) in self.rows.items():
            if row is None:
                sa.durable_delete(sa.jobs, job, self.partition)
                index.remove(job)
                _in_flight_rows.pop(job, None)
                continue
            raw = encode_job_row(row)
            if durable:
                sa.durable_put(sa.jobs, job, raw, row.partition)
            else:
                sa.jobs.data[job] = raw
            if row.state.in_flight:
                _in_flight_rows[job] = (raw, row)
            else:
                _in_flight_rows.pop(job, None)
            _reindex(index, row)
        # in the producer before this event is done: faust flushes the producer before it
        # commits the event's offset (no round trip per event)
        await sa.outbox.submit()
        return delivery

    def _hand_over(self) -> asyncio.Future[Any]:
        """Queue the due jobs (one message per work partition and up to ``DUE_PER_MESSAGE``
        runs); the future resolves once Kafka has acknowledged them all (or one failed)."""
        sa = self.sa
        rounds = {
            sa.outbox.add(
                sa.work_name,
                None,
                orjson.dumps({"type": "due_jobs", "runs": items[i : i + DUE_PER_MESSAGE]}),
                partition,
            )
            for partition, items in self.due.items()
            for i in range(0, len(items), DUE_PER_MESSAGE)
        }
        # the outbox hands them to the producer at the latest with this event's rows
        return asyncio.gather(*rounds)


async def _delivered(deliveries: set[asyncio.Future[Any]]) -> None:
    """Wait until Kafka has these due jobs. Bounded: while a broker is down a delivery can
    wait for the producer's request timeout, and the scheduler must not stop for that long
    (the runs stay in flight until their lease expires, and this is logged)."""
    done, pending = await asyncio.wait(deliveries, timeout=DELIVERY_WAIT_S)
    failed = [d for d in done if d.exception() is not None]
    if pending or failed:
        log.warning(
            "due jobs not acknowledged by Kafka within %.0fs%s",
            DELIVERY_WAIT_S,
            f" ({failed[0].exception()!r})" if failed else "",
        )


def _forget(delivery: asyncio.Future[Any], jobs: list[str]) -> None:
    for job in jobs:
        if _handing_over.get(job) is delivery:
            del _handing_over[job]


_integration_cache: dict[str, tuple[Integration, bytes]] = {}
#: job id -> delivery of the due jobs a tick emitted for it, until Kafka has them: the tick's
#: row (run in flight) is stored locally at once, so the next event of the partition need not
#: wait; a durable write of the job waits for it instead (see Changes)
_handing_over: dict[str, asyncio.Future[Any]] = {}
#: job id -> (encoded row, row) of the jobs with a run in flight: their next event is usually
#: the run's completion, which then skips a decode (~5 µs); an entry counts only while the
#: table holds the same bytes (a pure function of them), so a stale one is just not used
_in_flight_rows: dict[str, tuple[bytes, JobRow]] = {}


def _integration_json(integration: Integration) -> bytes:
    cached = _integration_cache.get(integration.id)
    if cached is None or cached[0] is not integration:
        cached = _integration_cache[integration.id] = (
            integration,
            integration.model_dump_json().encode(),
        )
    return cached[1]


def _reindex(index: DueIndex, row: JobRow) -> None:
    wake = wake_at_ms(row.state)
    if wake is None:
        index.remove(row.state.job_id)
    else:
        # a run in flight wakes the job at its lease expiry, usually beyond the far horizon;
        # pinned, it stays in the heap (in the far tier each run would leave an entry behind)
        index.upsert(row.state.job_id, wake, pin=bool(row.state.in_flight))


async def on_inbox(
    sa: StreamApp, ticker: Ticker, event: EventT[bytes], locks: dict[int, asyncio.Lock]
) -> None:
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
    lock = locks.get(partition)
    if lock is None:
        lock = locks[partition] = asyncio.Lock()
    async with lock:
        now = now_ms()
        changes = Changes(sa, partition)
        if isinstance(msg, Tick):
            ticker.handled(partition)
            _on_tick(sa, changes, now)
        elif isinstance(msg, JobUpsert):
            await _on_upsert(sa, changes, msg, now, event)
        elif isinstance(msg, JobRemove):
            if changes.load(msg.job_id) is not None:
                changes.delete(msg.job_id)
        elif isinstance(msg, RunFinished | RunsFinished):
            for done in msg.runs if isinstance(msg, RunsFinished) else (msg,):
                _on_finished(sa, changes, done, now)
        elif isinstance(msg, Command):
            await _on_command(sa, changes, msg, now, event)
        delivery = await changes.apply()
    if delivery is not None:
        # a tick is done once its due jobs are in Kafka (which paces the ticks: each
        # carries what fell due meanwhile), but its partition is free for the next event
        await _delivered({delivery})
    ticker.poke()


def _on_finished(sa: StreamApp, changes: Changes, msg: RunFinished, now: int) -> None:
    row = changes.load(msg.job_id)
    if row is None:
        return
    state, runs = on_run_finished(
        row.state,
        msg.run_id,
        msg.success,
        msg.finished_ms,
        sa.policy,
        result=msg.error if not msg.success else f"{msg.records} records",
    )
    if state is row.state and not runs:
        return  # a duplicate or stale completion: nothing changed
    checkpoint = msg.checkpoint if msg.checkpoint_changed else row.checkpoint
    changes.store(changes.emit(JobRow(changes.partition, state, checkpoint), runs, now))


def _on_tick(sa: StreamApp, changes: Changes, now: int) -> None:
    index = sa.due.get(changes.partition)
    if index is None:
        return
    # planned as of the end of the dispatch-ahead window: runs due by then are handed over
    # now and start at their time (the executor waits); see Settings.dispatch_ahead_ms
    horizon = now + sa.settings.dispatch_ahead_ms
    jobs = sa.local_get(sa.jobs)

    def wake_of(job: str) -> int | None:
        raw = jobs(job)
        return job_wake(raw)[1] if raw is not None else None

    # far-tier jobs coming within the horizon join the heap first (checked against the table)
    index.advance(horizon, wake_of)
    for _, job in index.pop_due(horizon, POP_LIMIT):
        row = changes.load(job)
        if row is None:
            index.remove(job)  # popped entries keep their slot until removed
            continue
        state, runs = plan_due(row.state, horizon, sa.policy)
        new_row = changes.emit(JobRow(changes.partition, state, row.checkpoint), runs, now)
        # kept locally: re-derived from the durable row after a crash or a rebalance, with
        # the same run ids (which the executor de-duplicates). Writing it durably (after its
        # due jobs are in Kafka) lost grid times in the scale-out fault test, as the same
        # design did in session 1; the jobs changelog shows a run in flight only after an
        # event other than a tick wrote the row
        changes.store(new_row, durable=False)


async def _on_upsert(
    sa: StreamApp, changes: Changes, msg: JobUpsert, now: int, event: EventT[bytes]
) -> None:
    try:
        spec = parse_schedule(msg.schedule)
    except ScheduleError as exc:
        await sa.deadletters.from_event(event, str(exc), "invalid_schedule")
        return
    row = changes.load(msg.job_id)
    if row is None:
        state = create_job(msg.connection_id, msg.sync_name, spec, now, sa.policy)
        row = JobRow(changes.partition, state)
    else:
        row = JobRow(changes.partition, reschedule(row.state, spec, now), row.checkpoint)
    changes.store(row)


async def _on_command(
    sa: StreamApp, changes: Changes, cmd: Command, now: int, event: EventT[bytes]
) -> None:
    if cmd.sync_name is not None:
        jobs: tuple[str, ...] = (job_id(cmd.connection_id, cmd.sync_name),)
    else:
        raw = sa.connections.get(cmd.connection_id)
        jobs = decode_connection_row(raw).job_ids if raw is not None else ()
    rows = [r for r in (changes.load(j) for j in jobs) if r is not None]
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
            changes.delete(state.job_id)
            continue
        changes.store(changes.emit(JobRow(changes.partition, state, checkpoint), runs, now))
