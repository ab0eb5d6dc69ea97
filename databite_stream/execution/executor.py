"""Runs one sync or one action of a connection: validation, limits, timeouts, retries, refresh.

The executor is a plain async object with injected clock, sleep, randomness and callbacks, so
the stream layer can drive it from a faust agent and tests can drive it without Kafka.

Guarantees of :meth:`Executor.run_sync` and :meth:`Executor.run_action`:

* **They never raise** for anything the connector, the upstream or the input does: every
  failure becomes a result with ``success=False``, a readable ``error`` and an ``error_kind``.
  Only cancellation of the calling task propagates.
* **Validation first.** The connection and integration must belong to the connector, their
  configs must match its models, and an action's input must match its input model, before
  any attempt (so before any HTTP call). Errors name the field (``input.text: Field
  required``) and never quote the offending value.
* **Each attempt runs under ``asyncio.timeout(timeout)``**, which cancels the work (open HTTP
  requests included) when it expires. A timed-out attempt counts as an attempt.
* **Retries**: retryable errors (network, 5xx, 429, timeout, unparsable body, local rate
  limit past the deadline) are retried up to ``max_retries`` times with full-jitter
  exponential backoff, never sooner than a server's ``Retry-After``. Permanent errors are not.
* **Token refresh**: the first :class:`~databite_stream.retry.AuthError` of an execution calls
  the connector's ``refresh`` once, emits the new config through ``on_connection_config``, and
  retries with it (this retry does not use up ``max_retries``). A second AuthError ends the run.
* **Checkpoints**: a sync batch's checkpoint is committed only after ``on_batch`` returned;
  a retried attempt resumes from the last committed checkpoint; the result reports it.
* **Secrets**: every error message, log line, record, output and checkpoint is passed through
  a :class:`~databite_stream.redact.Redactor` built from the connection's (and refreshed)
  config and the integration's secret-keyed values.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from databite_stream.connectors.http import HttpClient
from databite_stream.connectors.sdk import (
    ActionContext,
    Batch,
    Connector,
    RefreshContext,
    SyncContext,
    SyncDefinition,
)
from databite_stream.models import (
    ActionRequest,
    ActionResult,
    Checkpoint,
    Connection,
    ErrorKind,
    ExecutionResult,
    Integration,
    SyncBatch,
    SyncRecord,
    SyncSummary,
)
from databite_stream.ratelimit import RateLimiter, rate_limit_key
from databite_stream.redact import Redactor, collect_secrets
from databite_stream.retry import (
    AttemptTimeout,
    AuthError,
    ConfigurationError,
    ConnectorError,
    NetworkError,
    PermanentError,
    RetryPolicy,
    ValidationFailed,
    decide_retry,
)

__all__ = (
    "ConnectionConfigSink",
    "Executor",
    "HandlerFailure",
    "SinkError",
    "SyncBatchSink",
    "format_validation_errors",
)

AnyConnector = Connector[Any, Any]
SyncBatchSink = Callable[[SyncBatch], Awaitable[None]]
ConnectionConfigSink = Callable[[str, dict[str, Any]], Awaitable[None]]
T = TypeVar("T")

_log = logging.getLogger("databite_stream.execution")


class SinkError(ConnectorError):
    """The ``on_batch`` sink raised: the batch was not handed on, its checkpoint not committed."""

    kind = ErrorKind.SINK


class HandlerFailure(PermanentError):
    """The connector's code raised an exception that is not one of the typed errors."""

    kind = ErrorKind.HANDLER

    def __init__(self, message: str, *, trace: str = "") -> None:
        super().__init__(message)
        self.trace = trace


class _InnerCancellation(PermanentError):
    kind = ErrorKind.CANCELLED


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def format_validation_errors(exc: ValidationError, prefix: str) -> tuple[str, ...]:
    """``("<prefix>.<loc>: <msg>", ...)`` without the offending input values."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(part) for part in err["loc"])
        lines.append(f"{prefix}.{loc}: {err['msg']}" if loc else f"{prefix}: {err['msg']}")
    return tuple(lines)


def _validate(model: type[BaseModel], data: Any, *, prefix: str, what: str) -> BaseModel:
    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = format_validation_errors(exc, prefix)
        raise ValidationFailed(
            f"{what} does not match {model.__name__}: {'; '.join(errors)}", errors=errors
        ) from None


def _check_identity(
    connector: AnyConnector, connection: Connection, integration: Integration
) -> None:
    if connection.connector_id != connector.id:
        raise ConfigurationError(
            f"connection {connection.id!r} belongs to connector {connection.connector_id!r}, "
            f"not {connector.id!r}"
        )
    if connection.integration_id != integration.id:
        raise ConfigurationError(
            f"connection {connection.id!r} belongs to integration "
            f"{connection.integration_id!r}, but integration {integration.id!r} was given"
        )
    if integration.connector_id != connector.id:
        raise ConfigurationError(
            f"integration {integration.id!r} belongs to connector {integration.connector_id!r}, "
            f"not {connector.id!r}"
        )


def _config_dict(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return dict(value)


@dataclass(slots=True)
class _Run:
    """Mutable state of one execution (across its attempts)."""

    connector: AnyConnector
    integration: Integration
    connection: Connection
    integration_config: BaseModel
    connection_config: BaseModel
    redactor: Redactor
    label: str
    timeout: float
    policy: RetryPolicy
    on_config: ConnectionConfigSink | None
    attempts: int = 0
    retries: int = 0
    refreshed: bool = False
    stop_reason: str = ""


class Executor:
    """Executes syncs and actions; one per worker, safe for concurrent use.

    Args:
        limiter: shared rate limiter (default: a new one on ``clock``).
        session: aiohttp session to use (default: one created on first use and closed by
            :meth:`close`).
        clock: monotonic seconds, for deadlines and durations (default ``time.monotonic``).
        now_ms: wall clock, epoch ms UTC, for ``started_at_ms``/``finished_at_ms``.
        sleep: async sleep for backoff (default ``asyncio.sleep``).
        rng: randomness for jitter (default: a new ``random.Random()``).
        backoff_base / backoff_cap: full-jitter backoff parameters, seconds (0.5 / 30).
        max_retry_after: longest Retry-After honoured within one run, seconds (60).
        on_connection_config: default sink for refreshed connection configs.
        http_timeout: aiohttp timeouts of the owned session (default: connect 10 s; the
            attempt's own timeout bounds the total).
        logger: where to log (default ``databite_stream.execution``).
    """

    def __init__(
        self,
        *,
        limiter: RateLimiter | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] = _epoch_ms,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 60.0,
        on_connection_config: ConnectionConfigSink | None = None,
        http_timeout: aiohttp.ClientTimeout | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.limiter = limiter if limiter is not None else RateLimiter(clock=clock)
        self._session = session
        self._owns_session = session is None
        self._session_lock = asyncio.Lock()
        self._clock = clock
        self._now_ms = now_ms
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._policies: dict[int, RetryPolicy] = {}
        self._on_connection_config = on_connection_config
        self._http_timeout = http_timeout or aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._log = logger or _log

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the aiohttp session if the executor created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            async with self._session_lock:
                if self._session is None:
                    self._session = aiohttp.ClientSession(timeout=self._http_timeout)
        return self._session

    def _policy(self, max_retries: int) -> RetryPolicy:
        # frozen, so one per retry count is shared by every run (building it per run was
        # ~1.5 % of a busy worker's CPU)
        policy = self._policies.get(max_retries)
        if policy is None:
            policy = self._policies[max_retries] = RetryPolicy(
                max_retries=max_retries,
                base=self._backoff_base,
                cap=self._backoff_cap,
                max_retry_after=self._max_retry_after,
            )
        return policy

    def _http(self, run: _Run, deadline: float) -> HttpClient:
        return HttpClient(
            session_factory=self._get_session,
            limiter=self.limiter,
            rate_limit=run.connector.rate_limit,
            key=rate_limit_key(run.connector, run.connection),
            remaining=lambda: max(0.0, deadline - self._clock()),
            clock=self.limiter.now,
        )

    # -- syncs ---------------------------------------------------------------------------

    async def run_sync(
        self,
        connector: AnyConnector,
        sync_name: str,
        connection: Connection,
        integration: Integration,
        *,
        run_id: str,
        on_batch: SyncBatchSink,
        checkpoint: Checkpoint = None,
        job_id: str | None = None,
        scheduled_for_ms: int | None = None,
        on_connection_config: ConnectionConfigSink | None = None,
    ) -> ExecutionResult:
        """Run one sync to completion (or give up) and return its result.

        Args:
            connector / sync_name: what to run.
            connection / integration: whose data (config decrypted).
            run_id: identity of this run, stamped on every batch and record.
            on_batch: async sink; a batch's checkpoint is committed once it returns.
            checkpoint: the last committed checkpoint of this job (None: full sync).
            job_id / scheduled_for_ms: copied to the result.
            on_connection_config: overrides the executor's sink for refreshed configs.
        """
        started, started_ms = self._clock(), self._now_ms()
        redactor = Redactor.deferred(connection=connection.config, integration=integration.config)
        committed: Checkpoint = checkpoint
        records = deletions = batches = 0

        def result(
            error: ConnectorError | None, attempts: int, run: _Run | None
        ) -> ExecutionResult:
            red = run.redactor if run is not None else redactor
            message, kind = self._finish(error, run, red, f"sync {sync_name!r}", connection.id)
            return ExecutionResult(
                run_id=run_id,
                job_id=job_id,
                connection_id=connection.id,
                connector_id=connector.id,
                name=sync_name,
                kind="sync",
                scheduled_for_ms=scheduled_for_ms,
                success=error is None,
                summary=SyncSummary(
                    records=records,
                    deletions=deletions,
                    batches=batches,
                    checkpoint=red.redact(committed),
                ),
                error=message,
                error_kind=kind,
                attempts=attempts,
                execution_time_ms=(self._clock() - started) * 1000.0,
                started_at_ms=started_ms,
                finished_at_ms=self._now_ms(),
            )

        try:
            _check_identity(connector, connection, integration)
            sync = connector.get_sync(sync_name)
            run = self._start_run(
                connector,
                connection,
                integration,
                redactor,
                label=f"sync {sync_name!r} of connection {connection.id!r}",
                timeout=sync.timeout,
                max_retries=sync.max_retries,
                on_config=on_connection_config or self._on_connection_config,
            )
        except ConnectorError as exc:
            return result(exc, 0, None)

        async def attempt(number: int, http: HttpClient) -> None:
            nonlocal committed, records, deletions, batches
            ctx = SyncContext(
                connection=run.connection,
                integration=integration,
                connection_config=run.connection_config,
                integration_config=run.integration_config,
                http=http,
                checkpoint=committed,
                run_id=run_id,
                attempt=number,
                logger=self._log,
            )
            produced = sync.handler(ctx)
            if not hasattr(produced, "__aiter__"):
                close = getattr(produced, "close", None)
                if callable(close):
                    close()
                raise PermanentError(
                    f"the handler of sync {sync_name!r} returned {type(produced).__name__}; it "
                    "must be an async generator function that yields Batch(...)"
                )
            try:
                async for batch in produced:
                    out = self._build_batch(
                        sync, batch, run, run_id=run_id, index=batches, committed=committed
                    )
                    try:
                        await on_batch(out)
                    except ConnectorError:
                        raise
                    except Exception as exc:
                        raise SinkError(
                            f"the batch sink failed ({type(exc).__name__}: {exc}); batch "
                            f"{batches} was not handed on and its checkpoint not committed"
                        ) from exc
                    committed = out.checkpoint
                    records += len(out.records)
                    deletions += len(out.deletions)
                    batches += 1
            finally:
                aclose = getattr(produced, "aclose", None)
                if aclose is not None:
                    await aclose()

        error = await self._attempts(run, attempt)
        outcome = result(error, run.attempts, run)
        if error is None:
            # DEBUG: one line per successful run was ~10 % of a busy worker's CPU (py-spy);
            # failures and retries stay at INFO/WARNING, and metrics count every run
            self._log.debug(
                "%s done: %d records, %d deletions in %d batches, %.0f ms, %d attempt(s)",
                run.label,
                records,
                deletions,
                batches,
                outcome.execution_time_ms,
                run.attempts,
            )
        return outcome

    def _build_batch(
        self,
        sync: SyncDefinition[Any, Any],
        batch: object,
        run: _Run,
        *,
        run_id: str,
        index: int,
        committed: Checkpoint,
    ) -> SyncBatch:
        if not isinstance(batch, Batch):
            raise PermanentError(
                f"sync {sync.name!r} yielded {type(batch).__name__}; yield Batch(records=..., "
                "deletions=..., checkpoint=...)"
            )
        red = run.redactor
        model = sync.record_model
        out: list[SyncRecord] = []
        for position, raw in enumerate(batch.records):
            record = _validate(
                model,
                raw,
                prefix=f"records[{position}]",
                what=f"record {position} of batch {index} of sync {sync.name!r}",
            )
            out.append(
                SyncRecord(
                    connection_id=run.connection.id,
                    sync_name=sync.name,
                    record_id=red.text(str(getattr(record, sync.id_field))),
                    run_id=run_id,
                    data=red.redact(record.model_dump(mode="json")),
                )
            )
        return SyncBatch(
            run_id=run_id,
            connection_id=run.connection.id,
            sync_name=sync.name,
            index=index,
            attempt=max(1, run.attempts),
            records=tuple(out),
            deletions=tuple(red.text(str(d)) for d in batch.deletions),
            checkpoint=committed if batch.checkpoint is None else red.redact(batch.checkpoint),
        )

    # -- actions -------------------------------------------------------------------------

    async def run_action(
        self,
        connector: AnyConnector,
        action_name: str,
        connection: Connection,
        integration: Integration,
        request: ActionRequest,
        *,
        on_connection_config: ConnectionConfigSink | None = None,
    ) -> ActionResult:
        """Run one action call and return its result (input validated before any call)."""
        started, started_ms = self._clock(), self._now_ms()
        redactor = Redactor.deferred(connection=connection.config, integration=integration.config)

        def result(
            error: ConnectorError | None, attempts: int, run: _Run | None, output: Any = None
        ) -> ActionResult:
            red = run.redactor if run is not None else redactor
            message, kind = self._finish(error, run, red, f"action {action_name!r}", connection.id)
            return ActionResult(
                correlation_id=request.correlation_id,
                connection_id=connection.id,
                action=action_name,
                success=error is None,
                output=red.redact(output),
                error=message,
                error_kind=kind,
                attempts=attempts,
                execution_time_ms=(self._clock() - started) * 1000.0,
                started_at_ms=started_ms,
                finished_at_ms=self._now_ms(),
            )

        try:
            _check_identity(connector, connection, integration)
            if request.connection_id != connection.id:
                raise ConfigurationError(
                    f"action request {request.correlation_id!r} is for connection "
                    f"{request.connection_id!r}, not {connection.id!r}"
                )
            if request.action != action_name:
                raise ConfigurationError(
                    f"action request {request.correlation_id!r} asks for action "
                    f"{request.action!r}, not {action_name!r}"
                )
            action = connector.get_action(action_name)
            data = _validate(
                action.input_model,
                request.input,
                prefix="input",
                what=f"the input of action {action_name!r}",
            )
            run = self._start_run(
                connector,
                connection,
                integration,
                redactor,
                label=f"action {action_name!r} of connection {connection.id!r}",
                timeout=action.timeout,
                max_retries=action.max_retries,
                on_config=on_connection_config or self._on_connection_config,
            )
        except ConnectorError as exc:
            return result(exc, 0, None)

        produced: list[Any] = []

        async def attempt(number: int, http: HttpClient) -> None:
            ctx = ActionContext(
                connection=run.connection,
                integration=integration,
                connection_config=run.connection_config,
                integration_config=run.integration_config,
                http=http,
                correlation_id=request.correlation_id,
                attempt=number,
                logger=self._log,
            )
            produced.append(await action.handler(ctx, data))

        error = await self._attempts(run, attempt)
        if error is not None:
            return result(error, run.attempts, run)
        try:
            output = _validate(
                action.output_model,
                produced[-1],
                prefix="output",
                what=f"the output of action {action_name!r} (a connector bug)",
            )
        except ValidationFailed as exc:
            return result(exc, run.attempts, run)
        return result(None, run.attempts, run, output.model_dump(mode="json"))

    # -- shared machinery ----------------------------------------------------------------

    def _start_run(
        self,
        connector: AnyConnector,
        connection: Connection,
        integration: Integration,
        redactor: Redactor,
        *,
        label: str,
        timeout: float,
        max_retries: int,
        on_config: ConnectionConfigSink | None,
    ) -> _Run:
        return _Run(
            connector=connector,
            integration=integration,
            connection=connection,
            integration_config=_validate(
                connector.integration_config,
                integration.config,
                prefix="integration.config",
                what=f"the config of integration {integration.id!r}",
            ),
            connection_config=_validate(
                connector.connection_config,
                connection.config,
                prefix="connection.config",
                what=f"the config of connection {connection.id!r}",
            ),
            redactor=redactor,
            label=label,
            timeout=timeout,
            policy=self._policy(max_retries),
            on_config=on_config,
        )

    async def _attempts(
        self, run: _Run, attempt: Callable[[int, HttpClient], Awaitable[None]]
    ) -> ConnectorError | None:
        """Run attempts until success (None) or a final error."""
        while True:
            run.attempts += 1
            deadline = self._clock() + run.timeout
            timer = asyncio.timeout(run.timeout)
            error: ConnectorError
            try:
                async with timer:
                    await attempt(run.attempts, self._http(run, deadline))
                return None
            except TimeoutError as exc:
                if timer.expired():
                    error = AttemptTimeout(
                        f"attempt {run.attempts} exceeded the {run.timeout:g} s timeout and "
                        "was cancelled"
                    )
                else:
                    error = NetworkError(f"timed out inside the handler: {exc or 'TimeoutError'}")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the caller cancelled us: not ours to swallow
                error = _InnerCancellation("the handler's work was cancelled")
            except ConnectorError as exc:
                # kept as a value: its traceback holds this frame, whose ``error`` holds it
                # back, a cycle per failed attempt that only the GC frees (the worker runs it
                # rarely, see stream.heap); nothing reads a connector error's traceback
                error = exc.with_traceback(None)
            except Exception as exc:
                error = HandlerFailure(
                    f"{type(exc).__name__}: {exc}",
                    trace="".join(traceback.format_exception(exc)),
                )

            if (
                isinstance(error, AuthError)
                and not run.refreshed
                and run.connector.refresh_handler is not None
            ):
                run.refreshed = True
                refresh_error = await self._refresh(run, error)
                if refresh_error is not None:
                    return refresh_error
                continue
            decision = decide_retry(run.policy, error, run.retries, self._rng)
            if not decision.retry:
                run.stop_reason = decision.reason
                return error
            run.retries += 1
            self._log.warning(
                "%s: attempt %d failed (%s): %s; retrying in %.2f s",
                run.label,
                run.attempts,
                error.kind.value,
                run.redactor.text(error.message),
                decision.delay,
            )
            await self._sleep(decision.delay)

    async def _refresh(self, run: _Run, cause: AuthError) -> ConnectorError | None:
        """Refresh the connection's credentials once; None on success."""
        handler = run.connector.refresh_handler
        assert handler is not None
        self._log.info(
            "%s: credentials rejected (%s); refreshing the token",
            run.label,
            run.redactor.text(cause.message),
        )
        deadline = self._clock() + run.timeout
        ctx = RefreshContext(
            connection=run.connection,
            integration=run.integration,
            connection_config=run.connection_config,
            integration_config=run.integration_config,
            http=self._http(run, deadline),
            logger=self._log,
        )
        try:
            async with asyncio.timeout(run.timeout):
                answer = await handler(ctx)
            new_config = _config_dict(answer)
            # Mask the new tokens before anything (even a validation message) can show them.
            run.redactor = run.redactor.with_secrets(collect_secrets(new_config))
            parsed = _validate(
                run.connector.connection_config,
                new_config,
                prefix="connection.config",
                what="the config returned by refresh",
            )
        except TimeoutError:
            return AuthError(
                f"the credentials were rejected and the token refresh timed out after "
                f"{run.timeout:g} s; re-authorize the connection or retry later"
            )
        except ConnectorError as exc:
            return AuthError(
                f"the credentials were rejected and the token refresh failed: {exc.message}; "
                "re-authorize the connection"
            )
        except Exception as exc:
            return AuthError(
                f"the credentials were rejected and the token refresh raised "
                f"{type(exc).__name__}: {exc}; re-authorize the connection"
            )
        run.connection = run.connection.model_copy(update={"config": new_config})
        run.connection_config = parsed
        if run.on_config is None:
            self._log.warning(
                "%s: token refreshed but no on_connection_config sink is set; the new "
                "credentials live only for this execution",
                run.label,
            )
            return None
        try:
            await run.on_config(run.connection.id, new_config)
        except Exception as exc:
            self._log.error(
                "%s: token refreshed but saving the new config failed (%s: %s); the next run "
                "may have to refresh again",
                run.label,
                type(exc).__name__,
                run.redactor.text(str(exc)),
            )
        return None

    def _finish(
        self,
        error: ConnectorError | None,
        run: _Run | None,
        redactor: Redactor,
        what: str,
        connection_id: str,
    ) -> tuple[str | None, ErrorKind]:
        """The result's (message, kind); logs the failure."""
        if error is None:
            return None, ErrorKind.NONE
        message = error.message
        if isinstance(error, AuthError) and run is not None and run.refreshed:
            message += " (after a token refresh)"
        if run is not None and run.stop_reason and error.retryable:
            message += f" ({run.stop_reason})"
        message = redactor.text(message)
        label = run.label if run is not None else f"{what} of connection {connection_id!r}"
        attempts = run.attempts if run is not None else 0
        self._log.warning(
            "%s failed after %d attempt(s) (%s): %s", label, attempts, error.kind.value, message
        )
        if isinstance(error, HandlerFailure) and error.trace:
            self._log.debug("%s: handler traceback:\n%s", label, redactor.text(error.trace))
        return message, error.kind
