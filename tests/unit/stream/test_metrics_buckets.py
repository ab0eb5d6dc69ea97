"""``metrics.Buckets`` exposes exactly what a prometheus-client ``Histogram`` would for the
same observations (bucket edges included), with and without a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.registry import Collector

from databite_stream.stream.metrics import Buckets

BOUNDS = (0.005, 0.01, 0.25, 1, 60)
VALUES = [0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 59.9, 60, 61, 1e6, 0.2]


def _lines(registry: CollectorRegistry) -> list[str]:
    """The exposition without ``_created`` samples (a ``Histogram``'s creation time)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def _exposition(collector: Collector) -> list[str]:
    registry = CollectorRegistry()
    registry.register(collector)
    return _lines(registry)


class _One(Collector):
    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets

    def collect(self):  # type: ignore[no-untyped-def]
        yield self.buckets.collect()


def test_unlabelled_matches_prometheus_histogram() -> None:
    ours = Buckets("x_seconds", "Doc.", BOUNDS)
    registry = CollectorRegistry()
    theirs = Histogram("x_seconds", "Doc.", buckets=BOUNDS, registry=registry)
    assert _exposition(_One(ours)) == _lines(registry)  # zeros before the first observation
    for value in VALUES:
        ours.observe(value)
        theirs.observe(value)
    expected = _lines(registry)
    assert _exposition(_One(ours)) == expected
    assert 'x_seconds_bucket{le="0.005"} 2.0' in expected  # le is "less or equal"


def test_labelled_matches_prometheus_histogram() -> None:
    ours = Buckets("y_seconds", "Doc.", BOUNDS, label="kind")
    registry = CollectorRegistry()
    theirs = Histogram("y_seconds", "Doc.", ["kind"], buckets=BOUNDS, registry=registry)
    for i, value in enumerate(VALUES):
        kind = "sync" if i % 3 else "action"
        ours.observe(value, kind)
        theirs.labels(kind).observe(value)
    expected = _lines(registry)
    assert _exposition(_One(ours)) == expected
