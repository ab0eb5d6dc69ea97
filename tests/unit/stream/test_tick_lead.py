"""How early the ticker ticks a partition (``scheduler_agent.tick_lead_ms``)."""

from __future__ import annotations

import pytest

from databite_stream.stream.scheduler_agent import TICK_SPAN_MS, tick_lead_ms


@pytest.mark.parametrize(
    ("ahead", "lead"),
    [(0, 0), (100, 50), (250, 125), (500, 375), (1000, 875), (5000, 4875)],
)
def test_the_lead_grows_with_the_window_and_each_tick_spans_at_most_125_ms(
    ahead: int, lead: int
) -> None:
    assert tick_lead_ms(ahead) == lead
    # a tick hands over what is due within the window: at most TICK_SPAN_MS of runs beyond
    # the earliest, which leaves at least the lead early
    assert ahead - tick_lead_ms(ahead) <= TICK_SPAN_MS
    assert 0 <= tick_lead_ms(ahead) <= ahead
