"""Hostile input on every input topic: hypothesis-generated garbage and near-valid messages.
Every bad message gets a dead letter naming its topic/partition/offset and a reason; the worker
stays up; a valid connection keeps its schedule; secrets in bad input are masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from databite_stream.topics import (
    ACTION_REQUESTS,
    COMMANDS,
    CONNECTIONS,
    DEADLETTER,
    INTEGRATIONS,
    RESULTS,
)
from databite_stream.wire import DeadLetter
from tests.faults.support import (
    TopicTail,
    account_runs,
    echo_connection,
    echo_integration,
    now_ms,
    planted_secret,
    scan_for_secrets,
    summary,
)
from tests.helpers import wait_for
from tests.integration.stream.harness import Cluster

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.timeout(180)]

SECRET = planted_secret("sk-input")

_VALID_CONNECTION: dict[str, Any] = {
    "id": "X",
    "integration_id": "int-echo",
    "connector_id": "echo",
    "config": {"api_key": SECRET, "record_count": 1},
    "schedules": {"records": "5s"},
}
_VALID_INTEGRATION: dict[str, Any] = {
    "id": "X",
    "name": "n",
    "connector_id": "echo",
    "config": {"client_secret": SECRET},
}
_VALID_COMMAND: dict[str, Any] = {"type": "command", "command": "pause", "connection_id": "X"}
_VALID_ACTION: dict[str, Any] = {
    "correlation_id": "c",
    "connection_id": "X",
    "action": "echo",
    "input": {"text": "hi"},
    "requested_at_ms": 1,
}
_TEMPLATES = {
    "connections": _VALID_CONNECTION,
    "integrations": _VALID_INTEGRATION,
    "commands": _VALID_COMMAND,
    "actions.requests": _VALID_ACTION,
}
_LISTS = st.lists(st.integers(), max_size=3)
_DICTS = st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
_INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # huge values too
_DICT_FIELDS = ("config", "schedules", "input")
_INT_FIELDS = ("requested_at_ms",)


def _wrong_type(field: str) -> st.SearchStrategy[Any]:
    if field in _DICT_FIELDS:
        return st.one_of(_LISTS, _INTS, st.text(max_size=5))
    if field in _INT_FIELDS:
        return st.one_of(_LISTS, _DICTS, st.text(alphabet="abcxyz", min_size=1, max_size=9))
    floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    return st.one_of(_INTS, _LISTS, _DICTS, floats)


def _deep(depth: int) -> bytes:
    return b'{"metadata": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def bad_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """(topic suffix, value) that no worker may accept."""
    topic = draw(st.sampled_from(sorted(_TEMPLATES)))
    doc = dict(_TEMPLATES[topic])
    kind = draw(
        st.sampled_from(
            ["garbage", "non_utf8", "wrong_type", "unknown_field", "missing", "deep", "not_object"]
            + (["bad_cron", "unknown_connector"] if topic == "connections" else [])
            + (["unknown_command"] if topic == "commands" else [])
        )
    )
    if kind == "garbage":
        raw = draw(st.binary(min_size=1, max_size=300))
        try:  # the rare random bytes that are valid JSON of the right shape are not garbage
            if isinstance(orjson.loads(raw), dict):
                raw = b"{" + raw
        except orjson.JSONDecodeError:
            pass
        return topic, raw
    if kind == "non_utf8":
        return topic, b'{"id": "\xff\xfe' + draw(st.binary(max_size=50)) + b'"}'
    if kind == "deep":  # deeper than any JSON parser here accepts
        return topic, _deep(draw(st.integers(min_value=1100, max_value=5000)))
    if kind == "not_object":
        return topic, orjson.dumps(draw(st.one_of(st.lists(st.integers()), st.text(), st.none())))
    if kind == "wrong_type":
        field = draw(st.sampled_from(sorted(k for k in doc if k not in ("type",))))
        doc[field] = draw(_wrong_type(field))
    elif kind == "unknown_field":
        name = draw(st.text(min_size=1, max_size=20).filter(lambda s: s not in doc))
        doc[name] = draw(st.one_of(st.text(max_size=2000), st.integers()))  # huge values too
    elif kind == "missing":
        required = [k for k in doc if k not in ("config", "input", "schedules", "type")]
        del doc[draw(st.sampled_from(required))]
    elif kind == "bad_cron":
        doc["schedules"] = {
            "records": draw(st.sampled_from(["0 25 * * *", "*/0 * * * *", "61 * * * *", "5x"]))
        }
    elif kind == "unknown_connector":
        doc["connector_id"] = "nope-" + draw(st.text(min_size=1, max_size=10))
    elif kind == "unknown_command":
        doc["command"] = draw(st.sampled_from(["explode", "PAUSE", "", "run-now"]))
    return topic, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def _examples(n: int) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_message())
    def collect(example: tuple[str, bytes]) -> None:
        found.append(example)

    collect()
    return found


def _extra_cases() -> list[tuple[str, bytes | None, bytes]]:
    """Hand-made cases hypothesis may not draw: (suffix, key, value)."""
    conn = echo_connection("near", "5s", SECRET).model_dump()
    truncated = json.dumps(conn).encode()[:-20]  # JSON cut short, carrying the secret
    return [
        ("connections", b"", json.dumps(conn).encode()),  # empty key (a null key is refused)
        ("connections", b"other-id", json.dumps(conn).encode()),  # key differs from the id
        ("connections", b"trunc", truncated),
        ("connections", b"huge", b'{"id": "' + b"h" * 300_000 + b'"}'),
        (
            "connections",
            b"tz",
            json.dumps({**conn, "id": "tz", "timezone": "Mars/Olympus"}).encode(),
        ),
        ("commands", b"near", json.dumps({**_VALID_COMMAND, "connection_id": "ghost"}).encode()),
        ("actions.requests", b"a", b"\xff\xfe\xfd"),
        (
            "integrations",
            b"i-bad",
            b'{"id": "i-bad", "config": {"client_secret": "' + SECRET.encode() + b'"}}',
        ),
    ]


async def test_garbage_on_every_input_topic_is_dead_lettered(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.create_topics()
    worker = cluster.start_worker("w1")
    await cluster.put_integration(echo_integration())
    good = echo_connection("good", "2s", SECRET)
    await cluster.put_connection(good)
    res_tail = await TopicTail(cluster.bootstrap, cluster.topic(RESULTS)).start()
    dl_tail = await TopicTail(cluster.bootstrap, cluster.topic(DEADLETTER)).start()
    try:
        await wait_for(
            lambda: len(res_tail.results()) >= 2, timeout=60, what="the good connection running"
        )
        cases: list[tuple[str, bytes | None, bytes]] = [
            (t, f"fuzz-{i}".encode(), v) for i, (t, v) in enumerate(_examples(120))
        ] + _extra_cases()
        spec = {
            "connections": CONNECTIONS,
            "integrations": INTEGRATIONS,
            "commands": COMMANDS,
            "actions.requests": ACTION_REQUESTS,
        }
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, max_request_size=2**21)
        await producer.start()
        sent: list[tuple[str, int, int, str]] = []
        started = now_ms()
        try:
            for suffix, key, value in cases:
                topic = cluster.topic(spec[suffix])
                meta = await (await producer.send(topic, key=key, value=value))
                sent.append((topic, meta.partition, meta.offset, suffix))
        finally:
            await producer.stop()

        def letters() -> dict[tuple[str, int, int], DeadLetter]:
            out = {}
            for v in dl_tail.values():
                d = DeadLetter.model_validate_json(v)
                out[(d.source_topic, d.partition, d.offset)] = d
            return out

        def missing() -> list[tuple[str, int, int, str]]:
            got = letters()
            return [s for s in sent if (s[0], s[1], s[2]) not in got]

        try:
            await wait_for(lambda: not missing(), timeout=90, interval=0.5, what="dead letters")
        except AssertionError:
            raise AssertionError(
                f"{len(missing())} bad messages without a dead letter: {missing()[:10]}"
            ) from None
        dl_s = (now_ms() - started) / 1e3
        got = letters()
        no_reason = [k for k, d in got.items() if not d.reason.strip()]
        assert worker.poll() is None, cluster.log("w1")[-3000:]
        # the valid connection keeps its grid through all of it
        check_from = now_ms()
        await wait_for(
            lambda: (
                sum(1 for r in res_tail.results() if (r.scheduled_for_ms or 0) > check_from) >= 2
            ),
            timeout=30,
            what="the good connection still running",
        )
        acc = account_runs(res_tail.results(), ["good"], 2000, until_ms=check_from)
        by_topic: dict[str, int] = {}
        for s in sent:
            by_topic[s[3]] = by_topic.get(s[3], 0) + 1
        kinds: dict[str, int] = {}
        for d in got.values():
            kinds[d.error_kind] = kinds.get(d.error_kind, 0) + 1
        summary(
            "hostile_input",
            bad_messages=len(sent),
            per_topic=by_topic,
            dead_lettered=len([s for s in sent if (s[0], s[1], s[2]) in got]),
            dead_letter_kinds=kinds,
            all_dead_lettered_in_s=f"{dl_s:.1f}",
            good_expected_runs=acc.expected,
            good_lost=len(acc.lost),
            good_duplicates=len(acc.duplicates),
            worker_alive=worker.poll() is None,
        )
        assert not no_reason, no_reason
        assert not acc.lost, acc.line()
        assert not acc.duplicates, acc.line()
        assert not acc.silent, acc.line()
        scan = await scan_for_secrets(
            "hostile_input",
            cluster.bootstrap,
            [cluster.prefix],
            [SECRET],
            log_dir=tmp_path,
        )
        assert not scan.hits, scan.hits
    finally:
        await res_tail.stop()
        await dl_tail.stop()
