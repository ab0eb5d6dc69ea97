"""The OpenAPI 3.1 document of the worker's HTTP API (served at ``/openapi.json``).

Kept in the repo as ``openapi.json`` (regenerate: ``python -m databite_stream.stream.openapi``);
a test fails when the committed file drifts from this one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from databite_stream import __version__

__all__ = ("OPENAPI_PATH", "openapi_document")

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "openapi.json"

_JOB: dict[str, Any] = {
    "type": "object",
    "required": ["job_id", "connection_id", "sync_name", "schedule", "state", "paused"],
    "properties": {
        "job_id": {"type": "string", "description": "connection id and sync name, '/'-joined"},
        "connection_id": {"type": "string"},
        "sync_name": {"type": "string"},
        "schedule": {"type": "string", "description": "canonical schedule with its options"},
        "state": {"enum": ["scheduled", "running", "paused", "finished"]},
        "next_run_ms": {"type": ["integer", "null"]},
        "paused": {"type": "boolean"},
        "pause_reason": {"type": ["string", "null"]},
        "last_scheduled_ms": {"type": ["integer", "null"]},
        "last_run_id": {"type": ["string", "null"]},
        "last_finished_ms": {"type": ["integer", "null"]},
        "last_success": {"type": ["boolean", "null"]},
        "last_result": {"type": ["string", "null"]},
        "consecutive_failures": {"type": "integer"},
        "in_flight": {"type": "array", "items": {"type": "object"}},
        "skipped_runs": {"type": "integer"},
        "lost_runs": {"type": "integer"},
        "overdue_ms": {"type": "integer"},
        "partition": {"type": "integer"},
    },
}
_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": _json({"$ref": "#/components/schemas/Error"}, "token missing or wrong"),
    "503": _json({"$ref": "#/components/schemas/Error"}, "owner unknown (rebalancing)"),
}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "URL-encode '%' in ids; the '/' between connection and sync stays",
}


def openapi_document() -> dict[str, Any]:
    job_ref = {"$ref": "#/components/schemas/Job"}
    jobs = {
        "type": "object",
        "properties": {"jobs": {"type": "array", "items": job_ref}, "count": {"type": "integer"}},
    }
    command = {
        "post": {
            "summary": "send a command for the job (202: published to databite.commands)",
            "parameters": [_JOB_ID],
            "responses": {
                "202": _json({"type": "object"}, "accepted"),
                "404": _json({"$ref": "#/components/schemas/Error"}, "no such job"),
                **_ERRORS,
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "databite-stream worker API",
            "version": __version__,
            "description": "Each worker serves it; requests about a job are routed to the worker "
            "owning the job's partition. With DATABITE_API_TOKEN set, every route but /health "
            "needs 'Authorization: Bearer <token>'.",
        },
        "components": {
            "schemas": {"Job": _JOB, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {
                    "summary": "liveness (no auth)",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "alive")},
                }
            },
            "/ready": {
                "get": {
                    "summary": "recovered, assigned and not rebalancing",
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _json({"type": "object"}, "not ready yet"),
                        "401": _ERRORS["401"],
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "text exposition format"},
                        "401": _ERRORS["401"],
                    },
                }
            },
            "/jobs": {
                "get": {
                    "summary": "every job of the cluster (scope=local: this worker's only)",
                    "parameters": [{"name": "scope", "in": "query", "schema": {"enum": ["local"]}}],
                    "responses": {"200": _json(jobs, "jobs"), "401": _ERRORS["401"]},
                }
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "one job",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _json(job_ref, "the job"),
                        "404": _json({"$ref": "#/components/schemas/Error"}, "no such job"),
                        **_ERRORS,
                    },
                }
            },
            "/jobs/{job_id}/pause": command,
            "/jobs/{job_id}/resume": command,
            "/jobs/{job_id}/run": command,
            "/connections/{connection_id}/jobs": {
                "get": {
                    "summary": "the jobs of one connection",
                    "parameters": [
                        {
                            "name": "connection_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(jobs, "jobs"),
                        "404": _json({"$ref": "#/components/schemas/Error"}, "unknown"),
                        **_ERRORS,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
            "/": {
                "get": {
                    "summary": "the jobs dashboard (HTML)",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
        },
    }


def render() -> bytes:
    return (
        orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if OPENAPI_PATH.exists() and OPENAPI_PATH.read_bytes() == render() else 1)
    OPENAPI_PATH.write_bytes(render())
    print(f"wrote {OPENAPI_PATH}")
