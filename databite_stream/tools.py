"""Operator commands behind ``databite-stream topics|results|deadletter``.

Owns what those commands print and their exit codes: 0 ok, 1 the command ran and found a
problem (a misconfigured topic, nothing to replay), 2 the command could not run (broker down,
bad file) with one actionable line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from databite_stream.admin import check_topics, create_topics, describe_topics
from databite_stream.client import (
    ClientError,
    DatabiteClient,
    TopicsMissing,
    UnknownConnection,
    UnknownJob,
    check_integration,
    to_integration,
)
from databite_stream.models import ExecutionResult
from databite_stream.redact import MASK
from databite_stream.settings import Settings, SettingsError
from databite_stream.topics import DEADLETTER, RESULTS, TOPICS
from databite_stream.wire import DeadLetter

__all__ = ("CommandError", "add_client_parsers", "add_parsers")

console = Console()


class CommandError(Exception):
    """The command cannot run; the message is one actionable line."""


def _fail(message: str) -> None:
    """One plain line on stderr (no wrapping, so scripts can grep it)."""
    print(f"error: {message}", file=sys.stderr)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _run(
    coro_fn: Callable[[argparse.Namespace, Settings], Any],
) -> Callable[[argparse.Namespace], int]:
    def runner(args: argparse.Namespace) -> int:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # we report failures ourselves
        try:
            settings = _settings()
        except CommandError as exc:
            _fail(str(exc))
            return 2
        try:
            rc: int = asyncio.run(coro_fn(args, settings))
            return rc
        except CommandError as exc:
            _fail(str(exc))
            return 2
        except (KafkaError, OSError, TimeoutError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "timed out"
            _fail(
                f"cannot reach Kafka at {settings.broker} ({type(exc).__name__}: {reason}); "
                "is it running? set DATABITE_BROKER=host:port"
            )
            return 2
        except KeyboardInterrupt:
            return 0

    return runner


# -- topics ---------------------------------------------------------------------------------


def _topics_table(states: list[Any], problems: dict[str, str]) -> Table:
    table = Table(title="databite topics")
    for col in ("topic", "partitions", "cleanup.policy", "retention.ms", "status"):
        table.add_column(col)
    for state in states:
        problem = problems.get(state.name)
        table.add_row(
            state.name,
            str(state.partitions or "-"),
            state.cleanup_policy or "-",
            state.retention_ms or "-",
            f"[red]{problem}[/red]" if problem else "[green]ok[/green]",
        )
    return table


async def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    with console.status(f"creating topics on {settings.broker}…"):
        created, problems = await asyncio.wait_for(create_topics(settings), 60)
        states = await describe_topics(settings)
    console.print(_topics_table(states, {p.name: p.problem for p in problems}))
    console.print(f"created {len(created)} topic(s)")
    return 1 if problems else 0


async def _topics_describe(args: argparse.Namespace, settings: Settings) -> int:
    states = await asyncio.wait_for(describe_topics(settings), 30)
    problems = check_topics(settings, states, TOPICS)
    console.print(_topics_table(states, {p.name: p.problem for p in problems}))
    return 1 if problems else 0


# -- tails ----------------------------------------------------------------------------------


async def _tail(
    settings: Settings, topic: str, *, last: int, follow: bool
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The last ``last`` messages of each partition, then new ones if ``follow``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker, enable_auto_commit=False, request_timeout_ms=10000
    )
    await asyncio.wait_for(consumer.start(), 15)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise CommandError(
                f"topic {topic} does not exist (run `databite-stream topics create`)"
            )
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begin[tp], end[tp] - last))
        pending = {tp for tp in tps if end[tp] > max(begin[tp], end[tp] - last)}
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    yield m
                    if m.offset + 1 >= end[tp]:
                        pending.discard(tp)
            if not follow:
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                if not pending:
                    return
    finally:
        await consumer.stop()


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def _results_tail(args: argparse.Namespace, settings: Settings) -> int:
    seen = 0
    async for m in _tail(
        settings, settings.topic(RESULTS.suffix), last=args.last, follow=args.follow
    ):
        if m.value is None:
            continue
        try:
            r = ExecutionResult.model_validate_json(m.value)
        except ValidationError:
            continue
        if args.connection and r.connection_id != args.connection:
            continue
        seen += 1
        if args.json:
            sys.stdout.write(m.value.decode() + "\n")
            continue
        late = r.started_at_ms - r.scheduled_for_ms if r.scheduled_for_ms is not None else 0
        status = "[green]ok[/green]" if r.success else f"[red]{r.error_kind}: {r.error}[/red]"
        records = r.summary.records if r.summary else 0
        console.print(
            f"{_ts(r.scheduled_for_ms or r.started_at_ms)}  {r.connection_id}  {r.name}  "
            f"late {late} ms  {records} records  {r.attempts} attempt(s)  {status}",
            highlight=False,
        )
    if not seen and not args.follow:
        console.print("no results yet")
    return 0


async def _deadletter_tail(args: argparse.Namespace, settings: Settings) -> int:
    seen = 0
    async for m in _tail(
        settings, settings.topic(DEADLETTER.suffix), last=args.last, follow=args.follow
    ):
        if m.value is None:
            continue
        seen += 1
        if args.json:
            sys.stdout.write(m.value.decode() + "\n")
            continue
        try:
            d = DeadLetter.model_validate_json(m.value)
        except ValidationError:
            console.print(f"(unreadable dead letter at offset {m.offset})")
            continue
        console.print(
            f"{_ts(d.at_ms)}  {d.source_topic}[{d.partition}]@{d.offset}  key={d.key!r}  "
            f"[red]{d.error_kind}[/red]: {d.reason}",
            highlight=False,
        )
    if not seen and not args.follow:
        console.print("no dead letters")
    return 0


def _load_replay(path: Path) -> list[DeadLetter]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    letters = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            letters.append(DeadLetter.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CommandError(
                f"{path}:{number}: not a dead letter ({where}: {first['msg']})"
            ) from None
    return letters


async def _deadletter_replay(args: argparse.Namespace, settings: Settings) -> int:
    letters = _load_replay(Path(args.file))
    if not letters:
        console.print("nothing to replay")
        return 1
    allowed = {settings.topic(t.suffix) for t in TOPICS if not t.internal}
    for d in letters:
        if d.source_topic not in allowed:
            raise CommandError(
                f"refusing to replay into {d.source_topic!r}: not a databite input topic"
            )
        if not args.allow_masked and MASK in orjson.dumps(d.value).decode():
            raise CommandError(
                f"{d.source_topic}@{d.offset}: the value still holds masked secrets ({MASK}); put "
                "the real values back in the file, or pass --allow-masked"
            )
    if args.dry_run:
        for d in letters:
            console.print(f"would send to {d.source_topic} key={d.key!r}")
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, request_timeout_ms=10000)
    await asyncio.wait_for(producer.start(), 15)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("replaying", total=len(letters))
            for d in letters:
                value = (
                    None
                    if d.value is None
                    else (d.value.encode() if isinstance(d.value, str) else orjson.dumps(d.value))
                )
                await producer.send_and_wait(
                    d.source_topic, key=d.key.encode() if d.key is not None else None, value=value
                )
                progress.advance(task)
    finally:
        await producer.stop()
    console.print(f"replayed {len(letters)} message(s)")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser(
        "topics",
        help="create or check the databite topics",
        description="Create or check every databite topic (names, partitions, cleanup policies).",
    )
    tsub = topics.add_subparsers(dest="topics_cmd", required=True, metavar="COMMAND")
    p = tsub.add_parser(
        "create", help="create missing topics, then check all of them (exit 1 on problems)"
    )
    p.set_defaults(runner=_run(_topics_create))
    p = tsub.add_parser(
        "describe", help="show every topic and what is wrong with it (exit 1 on problems)"
    )
    p.set_defaults(runner=_run(_topics_describe))

    results = sub.add_parser("results", help="read ExecutionResults from databite.results")
    rsub = results.add_subparsers(dest="results_cmd", required=True, metavar="COMMAND")
    p = rsub.add_parser("tail", help="the latest results (and new ones with --follow)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new results")
    p.add_argument("--last", "-n", type=int, default=20, help="results per partition to start with")
    p.add_argument("--connection", help="only this connection id")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.set_defaults(runner=_run(_results_tail))

    dead = sub.add_parser("deadletter", help="inspect and replay databite.deadletter")
    dsub = dead.add_subparsers(dest="deadletter_cmd", required=True, metavar="COMMAND")
    p = dsub.add_parser("tail", help="the latest dead letters with their reasons")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new dead letters")
    p.add_argument("--last", "-n", type=int, default=20, help="dead letters per partition")
    p.add_argument("--json", action="store_true", help="one JSON dead letter per line (for replay)")
    p.set_defaults(runner=_run(_deadletter_tail))
    p = dsub.add_parser(
        "replay",
        help="re-publish fixed dead letters to their source topic",
        description=(
            "Re-publish dead letters to the topic they came from. Export them with "
            "`deadletter tail --json > FILE`, fix each line's value (secrets were masked as "
            "***: put real values back), then replay FILE."
        ),
    )
    p.add_argument(
        "file", help="JSON lines of dead letters, as written by `deadletter tail --json`"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be sent")
    p.add_argument("--allow-masked", action="store_true", help="send values that still hold ***")
    p.set_defaults(runner=_run(_deadletter_replay))


# -- catalog and jobs (through the Python client) ---------------------------------------------


def _read_documents(path: str) -> list[dict[str, Any]]:
    """A JSON or YAML file holding one object or a list of objects."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = orjson.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise CommandError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise CommandError(f"{path}: expected an object or a list of objects")
    return items


def _client_command(
    fn: Callable[[argparse.Namespace, DatabiteClient], Any],
) -> Callable[[argparse.Namespace], int]:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            async with DatabiteClient(settings, start_timeout=20) as client:
                rc: int = await fn(args, client)
                return rc
        except TopicsMissing as exc:
            raise CommandError(f"{exc} (run `databite-stream topics create`)") from None
        except ClientError as exc:
            _fail(str(exc))
            return 1

    return _run(run)


def _validate_all(items: list[dict[str, Any]], check: Callable[[Any], Any], path: str) -> None:
    """Everything in the file is validated before anything is published."""
    problems = []
    for number, item in enumerate(items, start=1):
        try:
            check(item)
        except ClientError as exc:
            problems.append(f"{path} item {number} ({item.get('id', '?')}): {exc}")
    if problems:
        raise CommandError("nothing published; " + "; ".join(problems))


async def _connections_put(args: argparse.Namespace, client: DatabiteClient) -> int:
    items = _read_documents(args.file)
    _validate_all(items, client.check_connection, args.file)
    for item in items:
        connection = await client.put_connection(item)
        jobs = client.check_connection(connection)
        console.print(f"put connection {connection.id} ({len(jobs)} job(s))")
    return 0


async def _integrations_put(args: argparse.Namespace, client: DatabiteClient) -> int:
    items = _read_documents(args.file)
    _validate_all(items, lambda i: check_integration(to_integration(i), client.registry), args.file)
    for item in items:
        integration = await client.put_integration(item)
        console.print(f"put integration {integration.id}")
    return 0


async def _connections_delete(args: argparse.Namespace, client: DatabiteClient) -> int:
    if client.get_connection(args.id) is None:
        raise UnknownConnection(f"Connection '{args.id}' not found")
    await client.remove_connection(args.id)
    console.print(f"deleted connection {args.id} (its jobs are unscheduled)")
    return 0


async def _integrations_delete(args: argparse.Namespace, client: DatabiteClient) -> int:
    await client.remove_integration(args.id)
    console.print(f"deleted integration {args.id}")
    return 0


async def _connections_list(args: argparse.Namespace, client: DatabiteClient) -> int:
    table = Table(title="connections")
    for col in ("id", "integration", "connector", "active syncs", "schedules", "timezone"):
        table.add_column(col)
    for c in sorted(client.get_connections(), key=lambda c: c.id):
        table.add_row(
            c.id,
            c.integration_id,
            c.connector_id,
            "all" if c.active_syncs is None else ", ".join(c.active_syncs) or "none",
            ", ".join(f"{k}={v}" for k, v in c.schedules.items())
            or (str(c.sync_interval) if c.sync_interval is not None else "default"),
            c.timezone,
        )
    console.print(table)
    return 0


async def _integrations_list(args: argparse.Namespace, client: DatabiteClient) -> int:
    table = Table(title="integrations")
    for col in ("id", "name", "connector", "connections"):
        table.add_column(col)
    for i in sorted(client.get_integrations(), key=lambda i: i.id):
        users = sum(1 for c in client.get_connections() if c.integration_id == i.id)
        table.add_row(i.id, i.name, i.connector_id, str(users))
    console.print(table)
    return 0


async def _jobs_list(args: argparse.Namespace, client: DatabiteClient) -> int:
    jobs = (
        await client.get_jobs_for_connection(args.connection)
        if args.connection
        else await client.get_jobs()
    )
    if args.json:
        for job in jobs:
            sys.stdout.write(job.model_dump_json() + "\n")
        return 0
    table = Table(title=f"{len(jobs)} job(s)")
    for col in ("job", "schedule", "state", "next run (UTC)", "last result", "failures"):
        table.add_column(col)
    for j in jobs:
        state = "paused" if j.paused else ("running" if j.in_flight else "scheduled")
        last = "" if j.last_success is None else ("ok" if j.last_success else "failed")
        table.add_row(
            j.job_id,
            j.schedule,
            state,
            _ts(j.next_run_ms),
            f"{last}: {j.last_result}" if j.last_result else last,
            str(j.consecutive_failures),
        )
    console.print(table)
    return 0


async def _jobs_show(args: argparse.Namespace, client: DatabiteClient) -> int:
    jobs = {j.job_id: j for j in await client.get_jobs()}
    job = jobs.get(args.id)
    if job is None:
        raise UnknownJob(f"Job '{args.id}' not found (see `databite-stream jobs list`)")
    sys.stdout.write(job.model_dump_json(indent=2) + "\n")
    return 0


async def _jobs_command(args: argparse.Namespace, client: DatabiteClient) -> int:
    action = args.jobs_cmd
    if action == "run":
        connection_id, sync_name = client._job_target(args.id)
        with console.status(f"running {args.id} and waiting for its result…"):
            result = await client.execute_sync(connection_id, sync_name, timeout=args.timeout)
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return 0 if result.success else 1
    verbs = {
        "pause": client.pause_job,
        "resume": client.resume_job,
        "unschedule": client.unschedule_job,
    }
    await verbs[action](args.id)
    console.print(f"{action}: sent for {args.id}")
    return 0


def add_client_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind, put, delete, listing in (
        ("connections", _connections_put, _connections_delete, _connections_list),
        ("integrations", _integrations_put, _integrations_delete, _integrations_list),
    ):
        parser = sub.add_parser(
            kind,
            help=f"publish, delete or list {kind} (compacted topic databite.{kind})",
            description=f"Manage {kind}. Files are JSON (.json) or YAML, one object or a list; "
            "everything is validated before anything is published.",
        )
        psub = parser.add_subparsers(dest=f"{kind}_cmd", required=True, metavar="COMMAND")
        p = psub.add_parser("put", help=f"validate and publish {kind} from a JSON/YAML file")
        p.add_argument("file")
        p.set_defaults(runner=_client_command(put))
        p = psub.add_parser("delete", help="publish a tombstone for this id")
        p.add_argument("id")
        p.set_defaults(runner=_client_command(delete))
        p = psub.add_parser("list", help=f"list {kind} (configs are never shown)")
        p.set_defaults(runner=_client_command(listing))

    jobs = sub.add_parser(
        "jobs", help="list, inspect and control jobs (one per connection x active sync)"
    )
    jsub = jobs.add_subparsers(dest="jobs_cmd", required=True, metavar="COMMAND")
    p = jsub.add_parser("list", help="every job, or one connection's")
    p.add_argument("--connection", help="only this connection's jobs")
    p.add_argument("--json", action="store_true", help="one JSON job per line")
    p.set_defaults(runner=_client_command(_jobs_list))
    p = jsub.add_parser("show", help="one job as JSON")
    p.add_argument("id", help="job id: <connection id>/<sync name>")
    p.set_defaults(runner=_client_command(_jobs_show))
    for verb, text in (
        ("pause", "stop scheduled runs of the job"),
        ("resume", "resume at the next schedule time"),
        ("unschedule", "remove the job (re-publish the connection to restore it)"),
        ("run", "run now and wait for the result (obeys the overlap policy)"),
    ):
        p = jsub.add_parser(verb, help=text)
        p.add_argument("id", help="job id: <connection id>/<sync name>")
        if verb == "run":
            p.add_argument("--timeout", type=float, default=120, help="seconds to wait")
        p.set_defaults(runner=_client_command(_jobs_command))
