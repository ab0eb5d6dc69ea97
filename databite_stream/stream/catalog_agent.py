"""Catalog agent: ``databite.connections`` -> connections table + job upserts/removals.

Decode (bad -> dead letter) -> :func:`catalog.plan_connection` -> write the connection row ->
send ``JobUpsert``/``JobRemove`` to the scheduler inbox, keyed by connection id, so they land
in the same partition (the inbox is co-partitioned with the connections topic).

A tombstone removes the connection and all its jobs. An invalid update leaves the previous
state of that connection untouched (its jobs keep running) and is dead-lettered.
Also: action requests are resolved here (they need the connection row of this partition) and
forwarded to the work topic keyed by the rate-limit key.
"""

from __future__ import annotations

import logging

from faust.types import EventT, StreamT
from pydantic import ValidationError

from databite_stream.catalog import CatalogError, plan_connection
from databite_stream.models import ActionRequest, ActionResult, Connection, ErrorKind
from databite_stream.ratelimit import rate_limit_key
from databite_stream.stream.app import StreamApp, now_ms
from databite_stream.stream.rows import ConnectionRow, decode_connection_row
from databite_stream.topics import ACTION_REQUESTS, ACTION_RESULTS, CONNECTIONS, INBOX, WORK
from databite_stream.wire import ActionWork, JobUpsert

__all__ = ("register",)

log = logging.getLogger(__name__)

#: how long a connection waits for its integration to show up (publish races)
INTEGRATION_WAIT_S = 5.0


def register(sa: StreamApp) -> None:
    @sa.app.agent(sa.topic(CONNECTIONS), name="databite.catalog")
    async def catalog(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await on_connection(sa, event)
            await sa.drain_table_writes()

    @sa.app.agent(sa.topic(ACTION_REQUESTS), name="databite.actions")
    async def actions(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await on_action_request(sa, event)


async def on_connection(sa: StreamApp, event: EventT[bytes]) -> None:
    message = event.message
    key = message.key.decode("utf-8", "replace") if message.key else None
    if key is None:
        await sa.deadletters.from_event(event, "connection message without a key", "no_key")
        return
    old_raw = sa.connections.get(key)
    old = decode_connection_row(old_raw) if old_raw is not None else None
    inbox = sa.topic(INBOX)
    at = now_ms()
    if message.value is None:  # tombstone: the connection is gone
        if old is not None:
            for old_id in old.job_ids:
                await sa.remove_job(key, old_id, "connection deleted")
            del sa.connections[key]
        return
    try:
        connection = Connection.model_validate_json(message.value)
        if connection.id != key:
            raise CatalogError(
                "key_mismatch", f"message key {key!r} differs from connection id {connection.id!r}"
            )
        await sa.integrations.ready.wait()
        integration = await sa.integrations.wait_for(connection.integration_id, INTEGRATION_WAIT_S)
        planned = plan_connection(
            connection,
            integration,
            sa.registry,
            default_schedule=sa.settings.default_interval,
        )
    except ValidationError as exc:
        await sa.deadletters.from_event(event, f"invalid connection: {_errors(exc)}", "invalid")
        return
    except CatalogError as exc:
        await sa.deadletters.from_event(event, str(exc), exc.kind)
        return
    wanted = {job.job_id for job in planned}
    sa.connections[key] = ConnectionRow(
        partition=message.partition, connection=connection, job_ids=tuple(sorted(wanted))
    ).encode()
    if old is not None:
        for old_job in old.job_ids:
            if old_job not in wanted:
                await sa.remove_job(key, old_job, "sync deactivated")
    for job in planned:
        await inbox.send(
            key=key.encode(),
            value=JobUpsert(
                job_id=job.job_id,
                connection_id=key,
                sync_name=job.sync_name,
                schedule=job.schedule,
                timezone=job.timezone,
                at_ms=at,
            )
            .model_dump_json()
            .encode(),
        )


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


async def on_action_request(sa: StreamApp, event: EventT[bytes]) -> None:
    message = event.message
    try:
        if message.value is None:
            raise ValueError("action request without a value")
        request = ActionRequest.model_validate_json(message.value)
    except ValidationError as exc:
        await sa.deadletters.from_event(event, f"invalid action request: {_errors(exc)}", "invalid")
        return
    except ValueError as exc:
        await sa.deadletters.from_event(event, str(exc), "invalid")
        return

    async def fail(reason: str) -> None:
        at = now_ms()
        result = ActionResult(
            correlation_id=request.correlation_id,
            connection_id=request.connection_id,
            action=request.action,
            success=False,
            error=reason,
            error_kind=ErrorKind.CONFIG,
            attempts=0,
            execution_time_ms=0.0,
            started_at_ms=at,
            finished_at_ms=at,
        )
        await sa.topic(ACTION_RESULTS).send(
            key=request.correlation_id.encode(), value=result.model_dump_json().encode()
        )

    raw = sa.connections.get(request.connection_id)
    if raw is None:
        await fail(f"connection {request.connection_id!r} not found")
        return
    connection = decode_connection_row(raw).connection
    integration = sa.integrations.get(connection.integration_id)
    if integration is None:
        await fail(f"integration {connection.integration_id!r} not found")
        return
    connector = sa.registry.get(connection.connector_id)
    if request.action not in connector.actions:
        await fail(
            f"connector {connector.id!r} has no action {request.action!r} "
            f"(actions: {', '.join(connector.actions) or 'none'})"
        )
        return
    work = ActionWork(request=request, connection=connection, integration=integration)
    await sa.topic(WORK).send(
        key=rate_limit_key(connector, connection).encode(), value=work.model_dump_json().encode()
    )
