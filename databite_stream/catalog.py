"""From a connection to the jobs it should have: validation and schedule precedence (pure).

Owns: the rule "one job per connection x active sync" and which schedule each job gets:
per-sync override on the connection > connection's default interval > the sync's default
schedule > the engine default. The catalog agent calls :func:`plan_connection` and turns the
result into job upserts/removals; invalid connections raise :class:`CatalogError`, whose message
goes to the dead-letter topic.

Pure core: no faust or aiokafka import.
"""

from __future__ import annotations

from dataclasses import dataclass

from databite_stream.connectors.registry import ConnectorRegistry
from databite_stream.models import Connection, Integration
from databite_stream.schedule import ScheduleError, job_id, parse_schedule

__all__ = ("CatalogError", "PlannedJob", "plan_connection", "schedule_text")


class CatalogError(ValueError):
    """The connection cannot be scheduled; ``kind`` is a stable short reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class PlannedJob:
    job_id: str
    connection_id: str
    sync_name: str
    schedule: str
    timezone: str


def schedule_text(value: str | int) -> str:
    """A connection's ``sync_interval``: a bare number means minutes (the reference engine)."""
    return f"{value}m" if isinstance(value, int) else value


def plan_connection(
    connection: Connection,
    integration: Integration | None,
    registry: ConnectorRegistry,
    *,
    default_schedule: str,
) -> list[PlannedJob]:
    """The jobs ``connection`` should have, or :class:`CatalogError` saying why it can't."""
    if connection.connector_id not in registry:
        raise CatalogError(
            "unknown_connector",
            f"connection {connection.id!r}: unknown connector {connection.connector_id!r} "
            f"(known: {', '.join(registry.ids())})",
        )
    connector = registry.get(connection.connector_id)
    if integration is None:
        raise CatalogError(
            "missing_integration",
            f"connection {connection.id!r}: integration {connection.integration_id!r} "
            "does not exist on databite.integrations",
        )
    if integration.connector_id != connection.connector_id:
        raise CatalogError(
            "connector_mismatch",
            f"connection {connection.id!r} says connector {connection.connector_id!r} but its "
            f"integration {integration.id!r} is for {integration.connector_id!r}",
        )
    syncs = connector.syncs
    active = list(syncs) if connection.active_syncs is None else list(connection.active_syncs)
    unknown = [name for name in active if name not in syncs]
    if unknown:
        raise CatalogError(
            "unknown_sync",
            f"connection {connection.id!r}: connector {connector.id!r} has no sync "
            f"{', '.join(repr(u) for u in unknown)} (syncs: {', '.join(syncs)})",
        )
    overrides_unknown = [name for name in connection.schedules if name not in syncs]
    if overrides_unknown:
        raise CatalogError(
            "unknown_sync",
            f"connection {connection.id!r}: schedule override for unknown sync "
            f"{', '.join(repr(u) for u in overrides_unknown)}",
        )
    jobs: list[PlannedJob] = []
    for name in active:
        if name in connection.schedules:
            text = connection.schedules[name]
        elif connection.sync_interval is not None:
            text = schedule_text(connection.sync_interval)
        elif syncs[name].schedule:
            text = str(syncs[name].schedule)
        else:
            text = default_schedule
        try:
            # a schedule that names its own zone ("...; tz=Europe/Berlin") keeps it
            tz = None if "tz=" in text else connection.timezone
            spec = parse_schedule(text, tz=tz)
        except ScheduleError as exc:
            raise CatalogError(
                "invalid_schedule", f"connection {connection.id!r}, sync {name!r}: {exc}"
            ) from None
        jobs.append(
            PlannedJob(
                job_id=job_id(connection.id, name),
                connection_id=connection.id,
                sync_name=name,
                schedule=str(spec),
                timezone=spec.tz,
            )
        )
    return jobs
