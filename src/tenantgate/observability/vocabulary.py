"""The closed vocabularies and bucket boundaries of the gateway's metrics: the operator-facing contract that
dashboards and alerts depend on, apart from the code that records into the metrics (:mod:`.metrics`).

Label values come only from these closed sets (or from code and configuration), which is what keeps every
label bounded.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

UpstreamOutcome = Literal["success", "connect_error", "timeout", "http_5xx", "http_429", "http_4xx", "stream_broken"]
LimitKind = Literal["rpm", "tpm", "concurrency", "budget", "limiter_unavailable"]
BackendState = Literal["healthy", "ejected", "cooling", "unhealthy", "disabled"]
StoreState = Literal["ok", "degraded", "down"]

UPSTREAM_OUTCOMES: Final = frozenset(get_args(UpstreamOutcome))
LIMIT_KINDS: Final = frozenset(get_args(LimitKind))
BACKEND_STATES: Final[tuple[str, ...]] = get_args(BackendState)
STORE_STATES: Final[tuple[str, ...]] = get_args(StoreState)
BACKEND_STATE_SET: Final = frozenset(BACKEND_STATES)
STORE_STATE_SET: Final = frozenset(STORE_STATES)

# Seconds. LLM latencies span from a cached embedding (milliseconds) to a long generation (minutes); the
# request-duration buckets go past 60 s up to the default upstream read timeout.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS: Final = (*LATENCY_BUCKETS, 120.0, 300.0)
# The OpenTelemetry GenAI semantic conventions advise these boundaries for their histograms; using them keeps
# the gen_ai_* series comparable with other GenAI servers' dashboards.
GENAI_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_TTFT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(12))  # 1, 4, 16, … 4,194,304 tokens

# Route (the endpoint name under /v1) -> gen_ai.operation.name. Routes not listed (e.g. "models") are not
# GenAI operations and only feed the tenantgate_* metrics.
GENAI_OPERATIONS: Final = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "responses",
}
OTHER_TENANT: Final = "other"
