"""Worker settings, read once from ``DATABITE_*`` environment variables and validated at start.

Owns: every tunable of a worker, its default and its meaning. ``app.py`` builds the faust App
from one :class:`Settings`; nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ("ENV_PREFIX", "Settings", "SettingsError")

ENV_PREFIX = "DATABITE_"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseModel):
    """Worker configuration. Each field is set by ``DATABITE_<FIELD>`` (upper case)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    app_id: str = Field(
        default="databite", description="consumer group and prefix of internal topics"
    )
    topic_prefix: str = Field(default="databite", description="prefix of every databite topic")
    partitions: int = Field(default=8, ge=1, le=1024, description="partitions of every topic")
    replication_factor: int = Field(default=1, ge=1, le=5, description="for topics we create")
    store: str = Field(default="memory://", description="table store: memory:// or rocksdb://")
    data_dir: str = Field(default=".databite-data", description="local state (rocksdb, faust)")
    default_interval: str = Field(
        default="1h", description="schedule of a sync when nothing else gives one"
    )
    first_run: Literal["immediately", "next_grid"] = "immediately"
    misfire: Literal["run_once", "skip", "run_all"] = "run_once"
    misfire_grace_s: float = Field(
        default=60.0, ge=0, description="lateness up to this is an on-time run, not a misfire"
    )
    catch_up_window_s: float = Field(default=3600.0, gt=0)
    catch_up_max: int = Field(default=10, ge=1)
    overlap: Literal["skip", "buffer_one", "allow"] = "skip"
    lease_s: float = Field(default=900.0, gt=0, description="a run in flight longer is lost")
    auto_pause_after: int | None = Field(default=None, ge=1)
    max_concurrency: int = Field(default=64, ge=1, description="runs in flight per worker")
    tick_max_interval_s: float = Field(default=1.0, gt=0, le=60)
    dispatch_ahead_ms: int = Field(
        default=500,
        ge=0,
        le=5000,
        description="due runs are handed to the executor up to this early; they still start "
        "at their scheduled time (hides Kafka's latency; 0 hands them over when due)",
    )
    web_enabled: bool = True
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    standby_replicas: int = Field(default=0, ge=0, le=3)
    api_token: str | None = Field(default=None, description="bearer token for the HTTP API")
    connectors: str = Field(
        default="",
        description="extra connectors to load, comma-separated 'module:attribute' "
        "(besides built-ins and entry-point plugins)",
    )
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    session_timeout_s: float = Field(
        default=30.0, ge=6, le=300, description="a silent worker leaves the group after this"
    )
    commit_interval_s: float = Field(default=0.5, gt=0)
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Kafka static membership: a worker restarted with the same id gets its "
        "partitions back at once, without waiting for the session timeout (one id per "
        "worker slot; two live workers with one id fence each other)",
    )
    outbox_linger_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="how long results, done-markers and job rows wait to be sent together "
        "(Kafka's linger.ms for the hot path: longer makes fewer, bigger batches for the "
        "broker, and results arrive that much later)",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=10,
        le=5000,
        description="longest the broker holds a fetch with nothing new for it (Kafka's "
        "fetch.max.wait.ms); faust's fixed 1,500 ms made runs start ~2 s late under a steady "
        "load (see stream/transport.py); lower costs a few idle requests per second",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="the worker's event loop (uvloop: ~15 % less CPU per run)"
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value not in ("memory://", "rocksdb://"):
            raise ValueError("must be memory:// or rocksdb://")
        return value

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        for part in value.split(","):
            host, _, port = part.strip().removeprefix("kafka://").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{part!r} is not host:port")
        return ",".join(p.strip().removeprefix("kafka://") for p in value.split(","))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``DATABITE_*`` variables (unknown ones are an error: they are likely typos)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        known = set(cls.model_fields)
        ignored = {"KAFKA_VERSION", "KAFKA_HOME", "BROKER_NODES"}  # read by devkafka
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key.removeprefix(ENV_PREFIX)
            if name in ignored:
                continue
            field = name.lower()
            if field not in known:
                raise SettingsError(
                    f"unknown setting {key}; known: "
                    + ", ".join(ENV_PREFIX + k.upper() for k in sorted(known))
                )
            values[field] = (
                None if raw == "" and field in ("auto_pause_after", "api_token") else raw
            )
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None

    def topic(self, suffix: str) -> str:
        """Full name of a databite topic, e.g. ``topic("results")`` -> ``databite.results``."""
        return f"{self.topic_prefix}.{suffix}"
