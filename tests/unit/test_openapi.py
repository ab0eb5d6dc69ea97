"""The committed openapi.json is the document the workers serve."""

from __future__ import annotations

from databite_stream.stream.openapi import OPENAPI_PATH, openapi_document, render


def test_openapi_json_is_up_to_date() -> None:
    assert OPENAPI_PATH.read_bytes() == render(), (
        "openapi.json is stale; run: python -m databite_stream.stream.openapi"
    )


def test_every_route_but_health_and_the_document_needs_the_token() -> None:
    doc = openapi_document()
    open_routes = {
        path
        for path, ops in doc["paths"].items()
        for op in ops.values()
        if op.get("security") == []
    }
    assert open_routes == {"/health", "/openapi.json"}
