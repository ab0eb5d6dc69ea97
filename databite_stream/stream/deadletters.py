"""The dead-letter path: any input we cannot use goes to ``databite.deadletter`` with its origin.

Owns the :class:`DeadLetter` a bad input becomes: source topic, partition, offset, key, the
value (parsed if it is JSON, else text) with secrets scrubbed, and a readable reason. The
worker never stops on bad input; it reports and moves on.

Scrubbing: any value under a ``config`` key, and any value under a secret-looking key
(token, secret, password, api key...), is replaced by ``***`` at every depth; input that is not
JSON is kept only as its size and SHA-256 (it may hold a secret anywhere).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import ConsumerRecord
from faust.types import EventT, Message

from databite_stream.redact import MASK, MIN_SECRET_LENGTH, SECRET_KEY_PATTERN
from databite_stream.topics import DEADLETTER
from databite_stream.wire import DeadLetter

if TYPE_CHECKING:
    from databite_stream.stream.app import StreamApp

__all__ = ("DeadLetters", "scrub")

log = logging.getLogger(__name__)


def scrub(value: Any, *, secret: bool = False) -> Any:
    """A copy of a JSON value with config and secret-looking values masked."""
    if isinstance(value, dict):
        return {
            str(k): scrub(
                v, secret=secret or k == "config" or bool(SECRET_KEY_PATTERN.search(str(k)))
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, secret=secret) for v in value]
    if secret and value is not None:
        return MASK
    return value


def _value_of(raw: bytes | None) -> Any:
    """The input as a dead letter may carry it: parsed JSON with secrets masked; for input
    that is not JSON, only its size and a hash (a truncated or garbled message can hold a
    secret anywhere; the origin topic/partition/offset leads to the original)."""
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"undecodable": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, str):
        return MASK if len(value) >= MIN_SECRET_LENGTH else value
    return scrub(value)


class DeadLetters:
    def __init__(self, stream_app: StreamApp) -> None:
        self._app = stream_app
        self.count = 0

    async def send(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        kind: str,
        at_ms: int,
    ) -> None:
        letter = DeadLetter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            value=_value_of(value),
            reason=reason,
            error_kind=kind,
            at_ms=at_ms,
        )
        self.count += 1
        log.warning("dead letter from %s[%d]@%d: %s (%s)", topic, partition, offset, reason, kind)
        await self._app.topic(DEADLETTER).send(key=key, value=letter.model_dump_json().encode())

    async def from_message(self, message: Message, reason: str, kind: str) -> None:
        from databite_stream.stream.app import now_ms

        await self.send(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            kind=kind,
            at_ms=now_ms(),
        )

    async def from_event(self, event: EventT[bytes], reason: str, kind: str) -> None:
        await self.from_message(event.message, reason, kind)

    async def from_record_if_owner(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """Dead-letter a record read outside the consumer group (the integrations view):
        only the worker owning that partition number reports it, so it is reported once."""
        from databite_stream.stream.app import now_ms

        await self._app.assigned.wait()  # read before the first assignment: wait for it
        if record.partition not in self._app.owned_inbox_partitions():
            return
        await self.send(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            kind="invalid",
            at_ms=now_ms(),
        )
