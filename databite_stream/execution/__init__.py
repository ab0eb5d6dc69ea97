"""Execution of syncs and actions, independent of Kafka (see :mod:`.executor`)."""

from __future__ import annotations

from databite_stream.execution.executor import (
    ConnectionConfigSink,
    Executor,
    HandlerFailure,
    SinkError,
    SyncBatchSink,
    format_validation_errors,
)

__all__ = (
    "ConnectionConfigSink",
    "Executor",
    "HandlerFailure",
    "SinkError",
    "SyncBatchSink",
    "format_validation_errors",
)
