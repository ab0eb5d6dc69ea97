"""Session fixtures: one real Kafka broker for the whole test session.

The broker is started by :mod:`databite_stream.devkafka` (or taken from ``DATABITE_BROKER``).
If it cannot start, every test that needs it *errors*; nothing is skipped.

Also a watchdog for the whole run: pytest-timeout (signal method) fails a test once, at its
limit, but a teardown that then hangs (an event loop waiting on a task that never ends, a
thread that never returns) is not timed again, and the run would sit there until CI kills it
without a word. The watchdog gives every test its limit plus a grace; past that it prints every
thread's stack, kills the run's child processes (Kafka nodes, workers) and exits non-zero.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from databite_stream.devkafka import KafkaCluster


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("DATABITE_BROKER")
    if external:
        yield external
        return
    t0 = time.monotonic()
    cluster = KafkaCluster(nodes=1).start()
    print(
        f"\n[kafka] {cluster.version} ready at {cluster.bootstrap} in {time.monotonic() - t0:.1f}s"
    )
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


#: Seconds past a test's own pytest-timeout limit before the watchdog ends the run.
WATCHDOG_GRACE_S = 120.0

_watchdog_fd: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _watchdog_fd
    # a private copy of the terminal's stderr: pytest's capture redirects fd 2 during a test
    _watchdog_fd = os.dup(sys.stderr.fileno())


def _test_limit_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 300)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; elsewhere nothing is found)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _bail_out(nodeid: str, after_s: float) -> None:
    fd = _watchdog_fd if _watchdog_fd is not None else 2
    os.write(
        fd,
        f"\n\n[watchdog] {nodeid} still running after {after_s:.0f}s (its timeout plus "
        f"{WATCHDOG_GRACE_S:.0f}s): every thread's stack follows; child processes are killed "
        "and the run ends\n".encode(),
    )
    faulthandler.dump_traceback(file=fd, all_threads=True)
    for child in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    os._exit(3)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    after_s = _test_limit_s(item) + WATCHDOG_GRACE_S
    timer = threading.Timer(after_s, _bail_out, args=(item.nodeid, after_s))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()
