"""A local stand-in for the REST API of :mod:`databite_stream.connectors.rest`, with faults.

An aiohttp server on 127.0.0.1 (port 0 picks a free port) serving the items API, the
deletions feed, item creation and an OAuth token endpoint, from a mutable in-memory dataset.
It also misbehaves on demand: latency, a random 5xx rate, scripted faults (a status such as
503 or 429 with ``Retry-After``, a request that hangs until the client goes away, a body that
is not JSON, a connection reset), and access tokens that expire.

Everything is observable for tests: every request is logged with its arrival time
(``time.monotonic()``), method, path, bearer token and status; :meth:`FakeApi.max_in_window`
gives the largest number of requests in any window of a given length; client disconnects of
hanging requests are recorded in :attr:`FakeApi.disconnects`.

Invariants of the dataset: ``updated_at`` / ``deleted_at`` come from one logical clock (epoch
ms, strictly increasing), so "changed since X" is exact; items are served in ``updated_at``
order with keyset cursors, so pagination is stable while the data changes.

Run it alone for the demo: ``python -m databite_stream.testing.fake_api --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import random
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = ("Disconnect", "FakeApi", "FakeItem", "Fault", "RequestRecord", "TokenPair", "main")

FaultKind = Literal["status", "hang", "malformed", "reset"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class FakeItem:
    id: str
    name: str
    value: int
    updated_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class RequestRecord:
    """One request as the server saw it."""

    at: float
    """Arrival time, ``time.monotonic()`` seconds."""
    method: str
    path: str
    token: str | None
    """Bearer token of the request, if any."""
    query: dict[str, str] = field(default_factory=dict)
    """Query parameters."""
    status: int = 0
    """Status answered; 0 while pending or if the client went away first."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A client that went away while its request was hanging."""

    at: float
    path: str
    token: str | None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted misbehaviour for the next matching request.

    Attributes:
        kind: ``status`` (answer ``status``), ``hang`` (never answer; the client must give
            up), ``malformed`` (200 with a body that is not JSON), ``reset`` (close the
            connection without answering).
        status: HTTP status for ``status`` faults.
        retry_after: ``Retry-After`` header value (seconds or HTTP-date) for ``status``.
        path: only requests to this path (default: any path except ``/oauth/token``).
        token: only requests with this bearer token.
        body: response body of a ``status`` fault (default: a small JSON error); ``{token}``
            in it is replaced by the request's bearer token.
    """

    kind: FaultKind = "status"
    status: int = 503
    retry_after: float | str | None = None
    path: str | None = None
    token: str | None = None
    body: str | None = None

    @classmethod
    def error(cls, status: int = 503, *, path: str | None = None, body: str | None = None) -> Fault:
        return cls("status", status=status, path=path, body=body)

    @classmethod
    def too_many_requests(
        cls,
        retry_after: float | str | None = 1,
        *,
        path: str | None = None,
        token: str | None = None,
    ) -> Fault:
        return cls("status", status=429, retry_after=retry_after, path=path, token=token)

    @classmethod
    def hang(cls, *, path: str | None = None) -> Fault:
        return cls("hang", path=path)

    @classmethod
    def malformed(cls, *, path: str | None = None) -> Fault:
        return cls("malformed", path=path)

    @classmethod
    def reset(cls, *, path: str | None = None) -> Fault:
        return cls("reset", path=path)

    def matches(self, path: str, token: str | None) -> bool:
        if self.path is None and path == "/oauth/token":
            return False
        if self.path is not None and self.path != path:
            return False
        return self.token is None or self.token == token


@dataclass(slots=True)
class _Token:
    refresh_token: str
    expires_at: float | None
    revoked: bool = False


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


def _json_error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


class FakeApi:
    """The fake items API.

    Args:
        host / port: where to listen (port 0: a free port, see :attr:`port` after start).
        page_size: largest page served (a request's ``limit`` is capped to it).
        latency: seconds added to every request.
        error_rate: probability of a random 503 on data endpoints (seeded by ``seed``).
        client_id / client_secret: the OAuth client accepted by ``/oauth/token``.
        token_ttl: lifetime of issued access tokens, seconds (None: no expiry).
        hang_limit: longest a hanging request waits for its client to go away, seconds.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 100,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        client_id: str = "fake-client-id",
        client_secret: str | None = None,
        token_ttl: float | None = None,
        hang_limit: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.page_size = page_size
        self.latency = latency
        self.error_rate = error_rate
        self.client_id = client_id
        self.client_secret = client_secret or f"cs-{secrets.token_hex(12)}"
        self.token_ttl = token_ttl
        self.hang_limit = hang_limit
        self.requests: list[RequestRecord] = []
        self.disconnects: list[Disconnect] = []
        self.token_refreshes = 0
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._tokens: dict[str, _Token] = {}
        self._refresh_tokens: dict[str, str] = {}  # refresh -> access
        self._items: dict[str, FakeItem] = {}
        self._order: list[tuple[int, str]] | None = None
        self._deleted: list[tuple[int, str]] = []
        self._clock_ms = 0
        self._next_id = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeApi:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/oauth/token", self._token_endpoint)
        app.router.add_get("/items", self._list_items)
        app.router.add_post("/items", self._create_item)
        app.router.add_get("/deletions", self._list_deletions)
        # handler_cancellation: a client that disconnects cancels its handler, which is how
        # a hanging request notices it was abandoned.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, **kwargs: Any) -> AsyncIterator[FakeApi]:
        """``async with FakeApi.run(page_size=50) as api: ...``"""
        api = cls(**kwargs)
        await api.start()
        try:
            yield api
        finally:
            await api.stop()

    # -- dataset -------------------------------------------------------------------------

    def _tick(self) -> int:
        self._clock_ms = max(time.time_ns() // 1_000_000, self._clock_ms + 1)
        return self._clock_ms

    @property
    def now_ms(self) -> int:
        """The logical clock: the latest updated_at/deleted_at handed out."""
        return self._clock_ms

    @property
    def items(self) -> dict[str, FakeItem]:
        return self._items

    def add_items(self, count: int, *, prefix: str = "item") -> list[FakeItem]:
        """Add ``count`` items with sequential ids; returns them."""
        added = []
        for _ in range(count):
            self._next_id += 1
            added.append(
                self.put_item(
                    f"{prefix}-{self._next_id:06d}", f"{prefix} {self._next_id}", self._next_id
                )
            )
        return added

    def put_item(self, item_id: str, name: str, value: int) -> FakeItem:
        """Create or replace an item (it gets a new updated_at)."""
        item = FakeItem(item_id, name, value, self._tick())
        self._items[item_id] = item
        self._order = None
        return item

    def update_item(
        self, item_id: str, *, name: str | None = None, value: int | None = None
    ) -> FakeItem:
        old = self._items[item_id]
        return self.put_item(
            item_id, old.name if name is None else name, old.value if value is None else value
        )

    def delete_item(self, item_id: str) -> None:
        del self._items[item_id]
        self._deleted.append((self._tick(), item_id))
        self._order = None

    def _sorted(self) -> list[tuple[int, str]]:
        if self._order is None:
            self._order = sorted((item.updated_at, item.id) for item in self._items.values())
        return self._order

    # -- tokens and faults ---------------------------------------------------------------

    def issue_tokens(self, *, ttl: float | None = None) -> TokenPair:
        """A fresh access/refresh token pair (``ttl`` defaults to ``token_ttl``)."""
        access, refresh = f"at-{secrets.token_hex(16)}", f"rt-{secrets.token_hex(16)}"
        ttl = self.token_ttl if ttl is None else ttl
        self._tokens[access] = _Token(refresh, None if ttl is None else time.monotonic() + ttl)
        self._refresh_tokens[refresh] = access
        return TokenPair(access, refresh)

    def expire_token(self, access_token: str) -> None:
        """Make ``access_token`` expired (its refresh token stays valid)."""
        self._tokens[access_token].expires_at = 0.0

    def _token_valid(self, token: str | None) -> bool:
        info = self._tokens.get(token or "")
        if info is None or info.revoked:
            return False
        return info.expires_at is None or time.monotonic() < info.expires_at

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each applies once, to the next request it matches."""
        self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def _take_fault(self, path: str, token: str | None) -> Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(path, token):
                return self._faults.pop(index)
        return None

    # -- observation ---------------------------------------------------------------------

    def requests_to(
        self, path: str | None = None, *, token: str | None = None, method: str | None = None
    ) -> list[RequestRecord]:
        return [
            r
            for r in self.requests
            if (path is None or r.path == path)
            and (token is None or r.token == token)
            and (method is None or r.method == method)
        ]

    def max_in_window(
        self, window: float, *, path: str | None = None, token: str | None = None
    ) -> int:
        """Most requests whose arrival times fall in any half-open window of ``window`` s."""
        times = sorted(r.at for r in self.requests_to(path, token=token))
        best = low = 0
        for high, t in enumerate(times):
            while t - times[low] >= window:
                low += 1
            best = max(best, high - low + 1)
        return best

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - arbitrary predicates have no event
                await asyncio.sleep(0.005)

    # -- HTTP ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = RequestRecord(
            time.monotonic(), request.method, request.path, _bearer(request), dict(request.query)
        )
        self.requests.append(record)
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._take_fault(request.path, record.token)
        if fault is not None:
            response = await self._apply(fault, request, record)
        elif (
            self.error_rate
            and request.path != "/oauth/token"
            and self._rng.random() < self.error_rate
        ):
            response = _json_error(503, "unavailable", "random failure (error_rate)")
        else:
            response = await handler(request)
        record.status = response.status
        return response

    async def _apply(
        self, fault: Fault, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        if fault.kind == "status":
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            if fault.body is not None:
                # "{token}" echoes the caller's token, like APIs that quote bad credentials.
                text = fault.body.replace("{token}", record.token or "")
                return web.Response(status=fault.status, text=text, headers=headers)
            return web.json_response(
                {"error": "injected", "status": fault.status}, status=fault.status, headers=headers
            )
        if fault.kind == "malformed":
            return web.Response(
                status=200, body=b'{"items": [{"id": "x", ', content_type="application/json"
            )
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        # Never answer: the runner cancels this handler when the client disconnects.
        try:
            await asyncio.sleep(self.hang_limit)
        except asyncio.CancelledError:
            self.disconnects.append(Disconnect(time.monotonic(), request.path, record.token))
            raise
        return _json_error(504, "hang_limit", "the hanging request was never abandoned")

    def _authorized(self, request: web.Request) -> web.Response | None:
        if not self._token_valid(_bearer(request)):
            return _json_error(
                401, "invalid_token", "the access token is missing, unknown or expired"
            )
        return None

    @staticmethod
    def _int(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "bad_request", "detail": f"{name} must be an integer"}),
                content_type="application/json",
            ) from None

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        try:
            body = (
                await request.json()
                if request.content_type == "application/json"
                else dict(await request.post())
            )
        except ValueError:
            return _json_error(400, "invalid_request", "body must be JSON or a form")
        if (
            body.get("client_id") != self.client_id
            or body.get("client_secret") != self.client_secret
        ):
            return _json_error(401, "invalid_client", "unknown client or wrong secret")
        if body.get("grant_type") != "refresh_token":
            return _json_error(400, "unsupported_grant_type", "only refresh_token is supported")
        refresh = str(body.get("refresh_token", ""))
        old_access = self._refresh_tokens.pop(refresh, None)
        if old_access is None:
            return _json_error(400, "invalid_grant", "unknown or already used refresh token")
        self._tokens[old_access].revoked = True
        pair = self.issue_tokens()
        self.token_refreshes += 1
        return web.json_response(
            {
                "access_token": pair.access_token,
                "refresh_token": pair.refresh_token,
                "token_type": "bearer",
            }
        )

    async def _list_items(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        since = self._int(request, "updated_since", 0)
        after = max(since, self._int(request, "cursor", since))
        limit = max(1, min(self._int(request, "limit", self.page_size), self.page_size))
        order = self._sorted()
        start = bisect.bisect_right(order, (after, "\uffff"))
        page = order[start : start + limit]
        more = start + limit < len(order)
        return web.json_response(
            {
                "items": [self._items[item_id].to_json() for _, item_id in page],
                "next_cursor": str(page[-1][0]) if page and more else None,
                "now": self._clock_ms,
            }
        )

    async def _list_deletions(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        since = self._int(request, "since", 0)
        after = max(since, self._int(request, "cursor", since))
        limit = max(1, min(self._int(request, "limit", self.page_size), self.page_size))
        start = bisect.bisect_right(self._deleted, (after, "\uffff"))
        page = self._deleted[start : start + limit]
        more = start + limit < len(self._deleted)
        return web.json_response(
            {
                "deletions": [{"id": item_id, "deleted_at": at} for at, item_id in page],
                "next_cursor": str(page[-1][0]) if page and more else None,
                "now": self._clock_ms,
            }
        )

    async def _create_item(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _json_error(400, "invalid_request", "body must be JSON")
        if not isinstance(body, dict):
            return _json_error(400, "invalid_request", "body must be a JSON object")
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not name or not isinstance(value, int):
            return _json_error(
                400, "invalid_request", "name (string) and value (integer) are required"
            )
        self._next_id += 1
        item = self.put_item(f"item-{self._next_id:06d}", name, value)
        return web.json_response(item.to_json(), status=201)


# -- CLI -----------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    api = FakeApi(
        host=args.host,
        port=args.port,
        page_size=args.page_size,
        latency=args.latency,
        error_rate=args.error_rate,
        seed=args.seed,
        token_ttl=args.token_ttl,
    )
    api.add_items(args.items)
    await api.start()
    tokens = api.issue_tokens()
    # The demo needs these to build its integration and connection; they are fake.
    print(
        json.dumps(
            {
                "base_url": api.base_url,
                "client_id": api.client_id,
                "client_secret": api.client_secret,
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "items": args.items,
            }
        ),
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await api.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m databite_stream.testing.fake_api",
        description="Serve the fake items API on loopback; prints its URL and credentials as JSON.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--items", type=int, default=1000, help="items to create at start")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a 503")
    parser.add_argument("--token-ttl", type=float, default=None, help="access token lifetime, s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
