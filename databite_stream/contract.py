"""Generates ``topics/``, the contract for upstream and downstream teams, from the registry.

Owns: one JSON Schema per message type (``topics/schemas/<Model>.json``), a topics manifest
(``topics/manifest.json``: name, key, partitions, cleanup policy, retention, value schemas) and
an AsyncAPI 3.0 document (``topics/asyncapi.json``). Everything is derived from
:mod:`databite_stream.topics` and the pydantic models, so it cannot say something the code
does not do; a test fails when the committed files drift.

Run ``python -m databite_stream.contract`` to regenerate, ``--check`` to verify.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from databite_stream import __version__
from databite_stream.settings import Settings
from databite_stream.topics import TOPICS, TopicSpec

__all__ = ("check", "generate", "render")

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "topics"


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"schemas/{model.__name__}.json"
    return schema


def _manifest_entry(spec: TopicSpec, settings: Settings) -> dict[str, Any]:
    return {
        "name": spec.name(settings),
        "description": spec.description,
        "key": spec.key,
        "key_encoding": "UTF-8 bytes of the id, murmur2 partitioner (Java client default)",
        "partitions": "DATABITE_PARTITIONS (default 8), the same for every topic",
        "cleanup_policy": spec.cleanup,
        "retention_ms": spec.retention_ms,
        "internal": spec.internal,
        "tombstone": spec.tombstones or None,
        "values": [f"schemas/{m.__name__}.json" for m in spec.values],
        "config": spec.config(),
    }


def render() -> dict[str, bytes]:
    """Every file of ``topics/`` (relative path -> content)."""
    settings = Settings()
    files: dict[str, bytes] = {}
    models: dict[str, type[BaseModel]] = {}
    for spec in TOPICS:
        for model in spec.values:
            models[model.__name__] = model
    for name, model in sorted(models.items()):
        files[f"schemas/{name}.json"] = _dump(_schema(model))
    files["manifest.json"] = _dump(
        {
            "generated_by": "python -m databite_stream.contract",
            "version": __version__,
            "topics": [_manifest_entry(s, settings) for s in TOPICS],
        }
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in TOPICS:
        channel_id = spec.suffix.replace(".", "_").replace("-", "_")
        refs = {}
        for model in spec.values:
            messages[model.__name__] = {
                "name": model.__name__,
                "contentType": "application/json",
                "payload": {"$ref": f"./schemas/{model.__name__}.json"},
            }
            refs[model.__name__] = {"$ref": f"#/components/messages/{model.__name__}"}
        channels[channel_id] = {
            "address": spec.name(settings),
            "description": spec.description,
            "messages": refs,
            "bindings": {
                "kafka": {
                    "topic": spec.name(settings),
                    "topicConfiguration": {
                        "cleanup.policy": [spec.cleanup],
                        **(
                            {"retention.ms": spec.retention_ms}
                            if spec.retention_ms is not None
                            else {}
                        ),
                    },
                    "bindingVersion": "0.5.0",
                }
            },
        }
        # upstream sends inputs; downstream receives exports; internal topics are both
        inputs = {"connections", "integrations", "commands", "actions.requests"}
        action = "send" if spec.suffix in inputs else "receive"
        operations[f"{action}_{channel_id}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": spec.description,
        }
    files["asyncapi.json"] = _dump(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "databite-stream topics",
                "version": __version__,
                "description": (
                    "Kafka topics of databite-stream. Names use the default prefix 'databite' "
                    "(DATABITE_TOPIC_PREFIX). Keys are UTF-8 ids partitioned with murmur2; "
                    "librdkafka producers must set partitioner=murmur2_random."
                ),
            },
            "defaultContentType": "application/json",
            "channels": channels,
            "operations": operations,
            "components": {"messages": messages},
        }
    )
    return files


def generate(out: Path = DEFAULT_DIR) -> list[str]:
    """Write ``topics/``; return the paths written."""
    written = []
    for rel, content in render().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(rel)
    return written


def check(out: Path = DEFAULT_DIR) -> list[str]:
    """Files of ``topics/`` that are missing, stale or unexpected."""
    expected = render()
    problems = [
        rel
        for rel, content in expected.items()
        if not (out / rel).exists() or (out / rel).read_bytes() != content
    ]
    present = {str(p.relative_to(out)) for p in out.rglob("*.json")} if out.exists() else set()
    problems += sorted(present - set(expected))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m databite_stream.contract",
        description="Regenerate (or --check) the topics/ contract from the code.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if topics/ is out of date")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output folder")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        for p in problems:
            print(f"out of date: topics/{p}")
        if problems:
            print("run: python -m databite_stream.contract", file=sys.stderr)
        return 1 if problems else 0
    for rel in generate(args.dir):
        print(f"wrote topics/{rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
