"""The worker's HTTP API (faust web server): jobs, commands, health, readiness, metrics, UI.

Owns the routes and their JSON. A job lives in the partition of its *connection*, so requests
about one job or one connection are routed to the worker that owns that partition of the
scheduler inbox (``router.route_topic_req``: the inbox is keyed by raw connection id, like
every input). ``GET /jobs`` fans out to every worker and merges. Commands (pause, resume, run)
are published to ``databite.commands`` after the owner confirmed the job exists, so they are
handled in order with everything else.

Auth: with ``DATABITE_API_TOKEN`` set, every route but ``/health`` needs
``Authorization: Bearer <token>`` (or ``?token=`` for the dashboard page and its calls).
Secrets never appear in a response: job views carry no connection config.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import aiohttp
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from databite_stream.schedule import IdentityError, parse_job_id
from databite_stream.stream.metrics import CONTENT_TYPE
from databite_stream.stream.openapi import openapi_document
from databite_stream.stream.rows import decode_connection_row, decode_job_row, job_summary
from databite_stream.topics import COMMANDS
from databite_stream.wire import Command, CommandKind

if TYPE_CHECKING:
    from databite_stream.stream.app import StreamApp

__all__ = ("register",)

log = logging.getLogger(__name__)

_COMMANDS: dict[str, CommandKind] = {"pause": "pause", "resume": "resume", "run": "run_now"}


def register(sa: StreamApp) -> None:
    app = sa.app
    token = sa.settings.api_token

    def authorized(request: Request) -> bool:
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or request.query.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    def deny(view: View) -> Response:
        return view.json(
            {"error": "unauthorized", "detail": "send Authorization: Bearer <DATABITE_API_TOKEN>"},
            status=401,
        )

    def local_jobs() -> list[dict[str, Any]]:
        owned = sa.owned_inbox_partitions()
        now = _now()
        jobs = []
        for key, raw in list(sa.jobs.items()):
            row = decode_job_row(raw, key)
            if row.partition in owned:
                jobs.append(job_summary(row, now))
        return sorted(jobs, key=lambda j: j["job_id"])

    def local_job(job: str) -> dict[str, Any] | None:
        raw = sa.jobs.get(job)
        return job_summary(decode_job_row(raw, job), _now()) if raw is not None else None

    async def routed(view: View, request: Request, connection_id: str) -> Response | None:
        """The owner's answer, or None when this worker owns the connection."""
        try:
            response: Response = await app.router.route_topic_req(
                sa.scheduler_inbox_topic, connection_id, view.web, request
            )
            return response
        except SameNode:
            return None
        except Exception as exc:  # owner unknown (rebalancing) or unreachable
            return view.json(
                {"error": "unavailable", "detail": f"owner of {connection_id!r}: {exc}"},
                status=503,
            )

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "app_id": sa.settings.app_id})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return deny(self)
            ready = sa.assigned.is_set() and not app.rebalancing and sa.integrations.ready.is_set()
            body = {
                "ready": ready,
                "recovered": sa.assigned.is_set(),
                "rebalancing": bool(app.rebalancing),
                "partitions": sorted(sa.owned_inbox_partitions()) if ready else [],
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return deny(self)
            await sa.update_lag()
            return self.bytes(sa.metrics.render(), content_type=CONTENT_TYPE)

    @app.page("/jobs")
    class Jobs(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return deny(self)
            jobs = local_jobs()
            if request.query.get("scope") != "local":
                jobs += await _from_other_workers(sa, request)
                jobs.sort(key=lambda j: j["job_id"])
            return self.json({"jobs": jobs, "count": len(jobs)})

    @app.page("/jobs/{job_id:.+}/{action:pause|resume|run}")
    class JobCommand(View):
        async def post(self, request: Request, job_id: str, action: str) -> Response:
            if not authorized(request):
                return deny(self)
            try:
                connection_id, sync_name = parse_job_id(job_id)
            except IdentityError as exc:
                return self.json({"error": "bad_job_id", "detail": str(exc)}, status=400)
            other = await routed(self, request, connection_id)
            if other is not None:
                return other
            if local_job(job_id) is None:
                return self.json({"error": "not_found", "job_id": job_id}, status=404)
            command = Command(
                command=_COMMANDS[action],
                connection_id=connection_id,
                sync_name=sync_name,
                command_id=f"http-{_now()}",
                requested_at_ms=_now(),
            )
            await sa.topic(COMMANDS).send(
                key=connection_id.encode(), value=command.model_dump_json().encode()
            )
            return self.json(
                {"accepted": True, "job_id": job_id, "command": command.model_dump()}, status=202
            )

    @app.page("/jobs/{job_id:.+}")
    class Job(View):
        async def get(self, request: Request, job_id: str) -> Response:
            if not authorized(request):
                return deny(self)
            try:
                connection_id, _ = parse_job_id(job_id)
            except IdentityError as exc:
                return self.json({"error": "bad_job_id", "detail": str(exc)}, status=400)
            other = await routed(self, request, connection_id)
            if other is not None:
                return other
            job = local_job(job_id)
            if job is None:
                return self.json({"error": "not_found", "job_id": job_id}, status=404)
            return self.json(job)

    @app.page("/connections/{connection_id}/jobs")
    class ConnectionJobs(View):
        async def get(self, request: Request, connection_id: str) -> Response:
            if not authorized(request):
                return deny(self)
            other = await routed(self, request, connection_id)
            if other is not None:
                return other
            raw = sa.connections.get(connection_id)
            if raw is None:
                return self.json({"error": "not_found", "connection_id": connection_id}, status=404)
            ids = decode_connection_row(raw).job_ids
            jobs = [j for j in (local_job(i) for i in ids) if j is not None]
            return self.json({"connection_id": connection_id, "jobs": jobs, "count": len(jobs)})

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document())

    @app.page("/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return deny(self)
            page = resources.files("databite_stream.stream").joinpath("dashboard.html")
            return self.html(page.read_text(encoding="utf-8"))


def _now() -> int:
    from databite_stream.stream.app import now_ms

    return now_ms()


async def _from_other_workers(sa: StreamApp, request: Request) -> list[dict[str, Any]]:
    """Every other worker's local jobs (``?scope=local``), fetched concurrently."""
    me = str(sa.app.conf.canonical_url).rstrip("/")
    hosts = {
        str(url).rstrip("/")
        for url, topics in sa.app.router.external_topics_metadata().items()
        if sa.inbox_name in topics
    } - {me}
    headers = {}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    params = {"scope": "local"}
    if "token" in request.query:
        params["token"] = request.query["token"]

    async def fetch(host: str) -> list[dict[str, Any]]:
        async with sa.app.http_client.get(
            f"{host}/jobs", params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            jobs: list[dict[str, Any]] = body["jobs"]
            return jobs

    results = await asyncio.gather(*(fetch(h) for h in sorted(hosts)), return_exceptions=True)
    merged: list[dict[str, Any]] = []
    for host, result in zip(sorted(hosts), results, strict=True):
        if isinstance(result, BaseException):
            log.warning("GET /jobs: worker %s did not answer: %s", host, result)
        else:
            merged.extend(result)
    return merged
