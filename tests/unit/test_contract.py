"""The topics/ contract is generated from the code; this fails when it drifts."""

from __future__ import annotations

from pathlib import Path

import orjson

from databite_stream import contract
from databite_stream.topics import TOPICS


def test_topics_folder_is_up_to_date() -> None:
    stale = contract.check()
    assert not stale, f"topics/ is out of date ({stale}); run: python -m databite_stream.contract"


def test_a_changed_schema_is_detected(tmp_path: Path) -> None:
    contract.generate(tmp_path)
    assert contract.check(tmp_path) == []
    (tmp_path / "schemas" / "Connection.json").write_text("{}")
    (tmp_path / "schemas" / "Stray.json").write_text("{}")
    assert contract.check(tmp_path) == ["schemas/Connection.json", "schemas/Stray.json"]


def test_manifest_lists_every_registry_topic_with_its_policy() -> None:
    manifest = orjson.loads((contract.DEFAULT_DIR / "manifest.json").read_bytes())
    by_name = {t["name"]: t for t in manifest["topics"]}
    for spec in TOPICS:
        entry = by_name[f"databite.{spec.suffix}"]
        assert entry["cleanup_policy"] == spec.cleanup
    assert by_name["databite.connections"]["cleanup_policy"] == "compact"
    asyncapi = orjson.loads((contract.DEFAULT_DIR / "asyncapi.json").read_bytes())
    assert asyncapi["asyncapi"] == "3.0.0"
    assert len(asyncapi["channels"]) == len(TOPICS)
