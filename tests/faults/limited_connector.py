"""The REST connector with a published upstream budget, loaded into workers by the fault suite
with ``DATABITE_CONNECTORS=tests.faults.limited_connector:connector``."""

from __future__ import annotations

from databite_stream.connectors.rest import build_rest_connector
from databite_stream.ratelimit import RateLimit

#: at most REQUESTS calls in any WINDOW seconds, one budget for the whole integration (OAuth app)
REQUESTS = 8
WINDOW_S = 1.0
#: per-attempt timeout of the items sync (a hanging request is cancelled after this)
TIMEOUT_S = 3.0

connector = build_rest_connector(
    id="rest-limited",
    rate_limit=RateLimit(requests=REQUESTS, window=WINDOW_S, strategy="per-integration"),
    items_timeout=TIMEOUT_S,
)
