"""Create and check databite topics on a broker, from the registry in :mod:`topics`.

Owns: ``topics create`` (create what is missing, then check everything) and ``topics describe``.
A topic that exists with the wrong cleanup policy or partition count is reported, never
silently "fixed": changing either on a live topic loses data or breaks co-partitioning.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from databite_stream.settings import Settings
from databite_stream.topics import TABLES, TOPICS, TopicSpec, changelog_topic

__all__ = ("TopicProblem", "TopicState", "check_topics", "create_topics", "describe_topics")

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the broker says about one registry topic."""

    name: str
    exists: bool
    partitions: int
    cleanup_policy: str
    retention_ms: str


@dataclass(frozen=True, slots=True)
class TopicProblem:
    name: str
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


async def describe_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS
) -> list[TopicState]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=10000)
    await admin.start()
    try:
        names = [s.name(settings) for s in specs]
        meta = {t["topic"]: t for t in await admin.describe_topics(names)}
        existing = [n for n in names if meta.get(n, {}).get("error_code") != _UNKNOWN_TOPIC]
        configs: dict[str, dict[str, str]] = {}
        if existing:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in existing]
            )
            for response in responses:
                for res in response.resources:
                    _err, _msg, _type, name, entries = res[:5]
                    configs[name] = {e[0]: e[1] for e in entries}
        return [
            TopicState(
                name=n,
                exists=n in configs,
                partitions=len(meta.get(n, {}).get("partitions", [])),
                cleanup_policy=configs.get(n, {}).get("cleanup.policy", ""),
                retention_ms=configs.get(n, {}).get("retention.ms", ""),
            )
            for n in names
        ]
    finally:
        await admin.close()


def check_topics(
    settings: Settings, states: list[TopicState], specs: tuple[TopicSpec, ...] = TOPICS
) -> list[TopicProblem]:
    """Problems with existing topics: wrong cleanup policy or partition count, or missing."""
    problems: list[TopicProblem] = []
    for spec, state in zip(specs, states, strict=True):
        if not state.exists:
            problems.append(TopicProblem(state.name, "does not exist (run `topics create`)"))
            continue
        if set(state.cleanup_policy.split(",")) != set(spec.cleanup.split(",")):
            problems.append(
                TopicProblem(
                    state.name,
                    f"cleanup.policy is {state.cleanup_policy!r}, must be {spec.cleanup!r}"
                    + (
                        " (a compacted input loses data under 'delete')"
                        if spec.cleanup == "compact"
                        else ""
                    ),
                )
            )
        if state.partitions != settings.partitions:
            problems.append(
                TopicProblem(
                    state.name,
                    f"has {state.partitions} partitions, settings say {settings.partitions} "
                    "(every databite topic must have the same count to stay co-partitioned)",
                )
            )
    return problems


async def create_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS
) -> tuple[list[str], list[TopicProblem]]:
    """Create missing topics; return (created names, problems with the full set)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=15000)
    await admin.start()
    created: list[str] = []
    new = [
        NewTopic(
            name=spec.name(settings),
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=spec.config(),
        )
        for spec in specs
    ]
    # the tables' changelogs too: faust would create them at start, but a worker that
    # writes a table before its producer has seen the new topic's metadata fails
    # (PartitionsMismatch, "0 partitions"); created here, they exist before faust starts
    new += [
        NewTopic(
            name=changelog_topic(settings, table),
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        for table in TABLES
    ]
    try:
        response = await admin.create_topics(new)
        for name, code, message in (e[:3] for e in response.topic_errors):
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: {message} (error {code})")
    finally:
        await admin.close()
    # a new topic shows up in metadata a moment after CreateTopics returns
    deadline = time.monotonic() + 30
    while True:
        states = await describe_topics(settings, specs)
        settled = all(s.exists and s.partitions for s in states if s.name in created)
        if settled or time.monotonic() > deadline:
            return created, check_topics(settings, states, specs)
        await asyncio.sleep(0.2)
