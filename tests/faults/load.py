"""Load for the worker and broker scenarios: many echo connections on a second-level grid."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from databite_stream.models import ExecutionResult
from databite_stream.topics import CONNECTIONS, INTEGRATIONS, RESULTS
from tests.faults.support import (
    Accounting,
    TopicTail,
    account_runs,
    echo_connection,
    echo_integration,
    now_ms,
    planted_secret,
)
from tests.helpers import produce, wait_for
from tests.integration.stream.harness import Cluster


@dataclass
class Load:
    """``n`` echo connections with schedule ``every`` (e.g. ``"2s"``) and a planted secret."""

    cluster: Cluster
    n: int
    every_s: int
    secret: str = field(default_factory=planted_secret)
    ids: list[str] = field(default_factory=list)
    tail: TopicTail | None = None

    @property
    def interval_ms(self) -> int:
        return self.every_s * 1000

    async def start(self) -> Load:
        c = self.cluster
        self.tail = await TopicTail(c.bootstrap, c.topic(RESULTS)).start()
        return self

    async def publish(self) -> None:
        c = self.cluster
        integration = echo_integration()
        await produce(
            c.bootstrap,
            c.topic(INTEGRATIONS),
            [(integration.id.encode(), integration.model_dump_json().encode())],
        )
        self.ids = [f"conn-{i:04d}" for i in range(self.n)]
        await produce(
            c.bootstrap,
            c.topic(CONNECTIONS),
            [
                (
                    cid.encode(),
                    echo_connection(cid, f"{self.every_s}s", self.secret)
                    .model_dump_json()
                    .encode(),
                )
                for cid in self.ids
            ],
        )

    def results(self) -> list[ExecutionResult]:
        assert self.tail is not None
        return self.tail.results()

    def counts_after(self, after_ms: int) -> Counter[str]:
        """Results per connection whose scheduled time is after ``after_ms``."""
        return Counter(
            r.connection_id for r in self.results() if (r.scheduled_for_ms or 0) > after_ms
        )

    async def wait_all_running(
        self, *, after_ms: int = 0, runs: int = 2, timeout: float = 90, what: str = ""
    ) -> float:
        """Wait until every connection has ``runs`` results scheduled after ``after_ms``;
        return the seconds it took."""
        t0 = time.monotonic()

        def ok() -> bool:
            counts = self.counts_after(after_ms)
            return all(counts[c] >= runs for c in self.ids)

        def describe() -> str:
            counts = self.counts_after(after_ms)
            behind = [c for c in self.ids if counts[c] < runs]
            return f"{what or 'every connection running'} ({len(behind)} behind: {behind[:5]})"

        try:
            await wait_for(ok, timeout=timeout, interval=0.5, what=what)
        except AssertionError:
            raise AssertionError(describe()) from None
        return time.monotonic() - t0

    async def settle_and_account(self, *, timeout: float = 60) -> tuple[Accounting, int]:
        """Pick a cut-off now, wait until every job has a result at or after it (it caught up),
        then account for every grid time up to the cut-off."""
        cutoff = now_ms()
        await self.wait_all_running(
            after_ms=cutoff, runs=1, timeout=timeout, what="every job caught up to the cut-off"
        )
        return account_runs(self.results(), self.ids, self.interval_ms, until_ms=cutoff), cutoff

    async def stop(self) -> None:
        if self.tail is not None:
            await self.tail.stop()
