"""Run one worker: create/check the topics, build the app, run it until SIGTERM/SIGINT.

Owns the start-up order: settings validated -> topics created or checked (a compacted input
created as ``delete`` stops the start with a clear message) -> faust worker.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from databite_stream.admin import create_topics
from databite_stream.connectors.registry import ConnectorRegistry
from databite_stream.settings import Settings
from databite_stream.stream.app import StreamApp, build_app
from databite_stream.stream.heap import tune_gc

__all__ = ("WorkerStartError", "ensure_topics", "make_worker")

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """The worker cannot start; the message says why and what to do."""


def ensure_topics(settings: Settings) -> list[str]:
    """Create missing databite topics and verify all of them; return the created names."""
    try:
        created, problems = asyncio.run(create_topics(settings))
    except Exception as exc:
        raise WorkerStartError(
            f"cannot reach Kafka at {settings.broker} to create topics: {exc} "
            "(is the broker running? set DATABITE_BROKER=host:port)"
        ) from exc
    if problems:
        raise WorkerStartError("topic problems:\n  " + "\n  ".join(str(p) for p in problems))
    return created


def make_worker(
    settings: Settings, registry: ConnectorRegistry | None = None
) -> tuple[StreamApp, faust.Worker]:
    ensure_topics(settings)
    if settings.event_loop == "uvloop":
        import uvloop

        # before faust creates its loops (the worker's and its consumer thread's)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    tune_gc()
    sa = build_app(settings, registry)
    worker = faust.Worker(sa.app, loglevel=settings.log_level, quiet=True)
    return sa, worker
