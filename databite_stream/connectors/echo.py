"""An offline connector with no HTTP: deterministic records and an echo action.

Useful for tests, the demo and benchmarks that must measure the engine, not a network.

* Sync ``records``: yields records ``rec-<i>`` for ``i`` in ``[offset, record_count)`` in
  batches of ``batch_size``; checkpoint ``{"offset": i}``. A second run with the final
  checkpoint yields nothing (it is incremental). Records are a pure function of ``i``.
* Action ``echo``: ``{text}`` -> ``{text, length}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from databite_stream.connectors.sdk import ActionContext, Batch, Connector, SyncContext

__all__ = (
    "EchoConnectionConfig",
    "EchoInput",
    "EchoIntegrationConfig",
    "EchoOutput",
    "EchoRecord",
    "echo_connector",
    "echo_record",
)


class EchoIntegrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EchoConnectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1)
    record_count: int = Field(default=100, ge=0)
    batch_size: int = Field(default=100, ge=1)


class EchoRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    index: int
    text: str


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str


class EchoOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    length: int


def echo_record(index: int) -> EchoRecord:
    """The record number ``index`` of every echo sync."""
    return EchoRecord(id=f"rec-{index}", index=index, text=f"record {index}")


echo_connector: Connector[EchoIntegrationConfig, EchoConnectionConfig] = Connector(
    id="echo",
    name="Echo (offline)",
    version="1.0.0",
    integration_config=EchoIntegrationConfig,
    connection_config=EchoConnectionConfig,
    description="Deterministic offline connector for tests and benchmarks.",
)


@echo_connector.sync("records", record=EchoRecord, schedule="1m", max_retries=0, timeout=60.0)
async def _records(
    ctx: SyncContext[EchoIntegrationConfig, EchoConnectionConfig],
) -> AsyncIterator[Batch]:
    config = ctx.connection_config
    offset = ctx.checkpoint.get("offset") if isinstance(ctx.checkpoint, dict) else None
    start = offset if isinstance(offset, int) else 0
    for low in range(start, config.record_count, config.batch_size):
        high = min(low + config.batch_size, config.record_count)
        yield Batch(records=[echo_record(i) for i in range(low, high)], checkpoint={"offset": high})


@echo_connector.action("echo", input=EchoInput, output=EchoOutput, timeout=10.0)
async def _echo(
    ctx: ActionContext[EchoIntegrationConfig, EchoConnectionConfig], data: EchoInput
) -> EchoOutput:
    return EchoOutput(text=data.text, length=len(data.text))
