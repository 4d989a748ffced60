"""Every Prometheus metric the gateway exports, declared in this one module.

Why one module: names, label sets and buckets are an operator-facing contract (dashboards and alerts depend on
them), so they are reviewed in one place (this module, with its closed label vocabularies and buckets in
:mod:`.vocabulary`), and the request path calls a handful of intention-named methods instead of touching
``prometheus_client`` objects itself.

Why a registry per :class:`GatewayMetrics`: no module-level state. The app factory builds one object per app,
so several apps in one test process (or one process serving two apps) never share or collide on series.

Labels are bounded by construction: route and model names come from code and the model catalog (the caller
passes ``""`` for a model not in the catalog), backends from configuration, kinds/outcomes/states from the
closed sets below (checked at run time on first sight, and statically through the ``Literal`` types). A key
id, user id or raw path is never a label. The per-tenant counter is opt-in and capped.

Why children are cached in dicts: ``metric.labels(...)`` validates and joins label values and takes a lock on
every call; the hot path looks a tuple up in a dict instead and only calls ``labels`` the first time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from tenantgate.observability.exposition import WithoutCreated
from tenantgate.observability.vocabulary import (
    BACKEND_STATE_SET,
    BACKEND_STATES,
    DURATION_BUCKETS,
    GENAI_DURATION_BUCKETS,
    GENAI_OPERATIONS,
    GENAI_TTFT_BUCKETS,
    LATENCY_BUCKETS,
    LIMIT_KINDS,
    OTHER_TENANT,
    STORE_STATE_SET,
    STORE_STATES,
    TOKEN_BUCKETS,
    UPSTREAM_OUTCOMES,
    BackendState,
    LimitKind,
    StoreState,
    UpstreamOutcome,
)

log = logging.getLogger("tenantgate.metrics")


class _RouteModel:
    """The labelled children one (route, model) pair touches on every finished request, resolved once."""

    __slots__ = ("completion", "duration", "genai", "prompt", "spend", "ttft")

    def __init__(self, metrics: GatewayMetrics, route: str, model: str) -> None:
        self.duration = metrics.request_duration.labels(route, model)
        self.ttft = metrics.time_to_first_token.labels(route, model)
        self.prompt = metrics.tokens.labels(model, "prompt")
        self.completion = metrics.tokens.labels(model, "completion")
        self.spend = metrics.spend.labels(model)
        operation = GENAI_OPERATIONS.get(route)
        self.genai = _GenAI(metrics, operation, model) if operation is not None else None


class _GenAI:
    __slots__ = ("duration", "input", "output", "ttft")

    def __init__(self, metrics: GatewayMetrics, operation: str, model: str) -> None:
        self.duration = metrics.genai_request_duration.labels(operation, model)
        self.ttft = metrics.genai_time_to_first_token.labels(operation, model)
        self.input = metrics.genai_token_usage.labels(operation, model, "input")
        self.output = metrics.genai_token_usage.labels(operation, model, "output")


class GatewayMetrics:
    """All gateway metrics on a private registry, plus the cheap recording methods the gateway calls."""

    def __init__(self, *, tenant_labels: bool = False, max_tenant_label_values: int = 100) -> None:
        if max_tenant_label_values < 0:
            raise ValueError("max_tenant_label_values must be >= 0")
        self.registry = CollectorRegistry(auto_describe=True)
        self._exposed = WithoutCreated(self.registry)
        self.collect_hook: Callable[[], None] | None = None
        self._max_tenants = max_tenant_label_values
        self._declare_requests()
        self._declare_upstream()
        self._declare_dependencies()
        self.tenant_requests: Counter | None = None
        if tenant_labels:
            self.tenant_requests = self._counter(
                "tenantgate_tenant_requests_total",
                f"Requests per tenant (first {max_tenant_label_values} tenants seen; the rest as tenant=other).",
                ["tenant"],
            )
        self._requests_children: dict[tuple[str, str, int], Counter] = {}
        self._route_model: dict[tuple[str, str], _RouteModel] = {}
        self._attempt_children: dict[tuple[str, str], Counter] = {}
        self._retry_children: dict[str, Counter] = {}
        self._failover_children: dict[str, Counter] = {}
        self._refusal_children: dict[str, Counter] = {}
        self._tenant_children: dict[str, Counter] = {}
        self._backend_states: dict[str, str] = {}
        self._usage_dropped_seen = 0
        self._usage_written_seen = 0
        self._redis_registered = False

    # -- declarations ------------------------------------------------------------------------------------

    def _counter(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, doc, labels or [], registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, doc, labels or [], registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def _declare_requests(self) -> None:
        self.requests = self._counter(
            "tenantgate_requests_total",
            "Finished requests by route, model and HTTP status.",
            ["route", "model", "status"],
        )
        self.request_duration = self._histogram(
            "tenantgate_request_duration_seconds",
            "Time from request start to the last byte sent.",
            ["route", "model"],
            DURATION_BUCKETS,
        )
        self.time_to_first_token = self._histogram(
            "tenantgate_time_to_first_token_seconds",
            "Time from request start to the first content byte sent to the client.",
            ["route", "model"],
            LATENCY_BUCKETS,
        )
        self.tokens = self._counter("tenantgate_tokens_total", "Tokens metered, by type.", ["model", "type"])
        self.spend = self._counter("tenantgate_spend_usd_total", "Cost of metered usage in USD.", ["model"])
        self.in_flight = self._gauge("tenantgate_requests_in_flight", "Requests being served right now.")
        self.genai_token_usage = self._histogram(
            "gen_ai_client_token_usage",
            "OpenTelemetry GenAI: tokens used per request (gen_ai.client.token.usage), by token type.",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            TOKEN_BUCKETS,
        )
        self.genai_time_to_first_token = self._histogram(
            "gen_ai_server_time_to_first_token",
            "OpenTelemetry GenAI: seconds to the first token of successful responses.",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            GENAI_TTFT_BUCKETS,
        )
        self.genai_request_duration = self._histogram(
            "gen_ai_server_request_duration",
            "OpenTelemetry GenAI: seconds from request to the last byte.",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            GENAI_DURATION_BUCKETS,
        )

    def _declare_upstream(self) -> None:
        self.upstream_attempts = self._counter(
            "tenantgate_upstream_attempts_total", "Calls to backends, by outcome.", ["backend", "outcome"]
        )
        self.upstream_retries = self._counter(
            "tenantgate_upstream_retries_total", "Attempts after the first one, by requested model.", ["model"]
        )
        self.failovers = self._counter(
            "tenantgate_failovers_total", "Requests moved to another backend or a fallback model.", ["model"]
        )
        self.retry_budget_spent = self._counter(
            "tenantgate_retry_budget_exhausted_total", "Retries skipped because the retry budget was spent."
        )
        self.backend_healthy = self._gauge("tenantgate_backend_healthy", "1 if the backend is healthy.", ["backend"])
        self.backend_state = self._gauge(
            "tenantgate_backend_state", "Backend health state (one-hot).", ["backend", "state"]
        )
        self.limit_refusals = self._counter(
            "tenantgate_limit_refusals_total", "Requests refused by limits or budgets, by kind.", ["kind"]
        )
        self.reservation_overshoot = self._counter(
            "tenantgate_reservation_overshoot_total",
            "Usage billed beyond what was reserved (kind=tokens: tokens, kind=usd: USD).",
            ["kind"],
        )

    def _declare_dependencies(self) -> None:
        self.usage_queue_depth = self._gauge("tenantgate_usage_queue_depth", "Usage records waiting to be written.")
        self.usage_dropped = self._counter(
            "tenantgate_usage_records_dropped_total", "Usage records dropped because the queue was full."
        )
        self.usage_written = self._counter(
            "tenantgate_usage_records_written_total", "Usage records written to the database."
        )
        # Registered only once set_redis_up() is first called: a gateway without Redis exports no series that
        # an alert on ``tenantgate_redis_up == 0`` would fire on.
        self.redis_up = Gauge("tenantgate_redis_up", "1 if Redis answered the last check.", registry=None)
        self.limits_store_state = self._gauge(
            "tenantgate_limits_store_state", "State of the limits store (one-hot).", ["state"]
        )
        self.database_up = self._gauge("tenantgate_database_up", "1 if the database answered the last check.")
        # Reasons are tenantgate.edge.protocol.CloseReason: header_timeout, body_timeout, header_too_large (431),
        # evicted (oldest waiting connection closed at the connection cap), refused (cap reached, all busy).
        self.connections_closed = self._counter(
            "tenantgate_connections_closed_total",
            "Client connections the gateway closed to protect itself, by reason.",
            ["reason"],
        )
        self.connections_open = self._gauge("tenantgate_connections_open", "Client connections open right now.")

    # -- request path --------------------------------------------------------------------------------------

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(
        self,
        route: str,
        model: str,
        status: int,
        duration_s: float,
        ttft_s: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        tenant_id: str | None,
    ) -> None:
        """Record one finished request (call exactly once per :meth:`request_started`, in a ``finally``).

        ``model`` is a catalog name or ``""``; ``tenant_id`` is None when unauthenticated (not counted per
        tenant). Token and TTFT histograms only see non-zero counts and measured TTFTs, so refused or failed
        requests do not drag those distributions towards zero; the counters still count every request.
        """
        self.in_flight.dec()
        key = (route, model, status)
        counter = self._requests_children.get(key)
        if counter is None:
            counter = self._requests_children[key] = self.requests.labels(route, model, str(status))
        counter.inc()
        children = self._route_model.get((route, model))
        if children is None:
            children = self._route_model[(route, model)] = _RouteModel(self, route, model)
        children.duration.observe(duration_s)
        if ttft_s is not None:
            children.ttft.observe(ttft_s)
        if prompt_tokens:
            children.prompt.inc(prompt_tokens)
        if completion_tokens:
            children.completion.inc(completion_tokens)
        if cost_usd:
            children.spend.inc(cost_usd)
        genai = children.genai
        if genai is not None:
            genai.duration.observe(duration_s)
            if ttft_s is not None and status < 400:
                genai.ttft.observe(ttft_s)
            if prompt_tokens:
                genai.input.observe(prompt_tokens)
            if completion_tokens:
                genai.output.observe(completion_tokens)
        if tenant_id and self.tenant_requests is not None:
            self._tenant_child(self.tenant_requests, tenant_id).inc()

    def _tenant_child(self, counter: Counter, tenant_id: str) -> Counter:
        """The tenant's child; past the cap, new tenants share ``other`` (and are not remembered), so the
        series count stays <= max + 1."""
        child = self._tenant_children.get(tenant_id)
        if child is not None:
            return child
        named = len(self._tenant_children) - (OTHER_TENANT in self._tenant_children)
        label = OTHER_TENANT if named >= self._max_tenants else tenant_id
        child = self._tenant_children.get(label)
        if child is None:
            child = self._tenant_children[label] = counter.labels(label)
        return child

    def upstream_attempt(self, backend: str, outcome: UpstreamOutcome) -> None:
        child = self._attempt_children.get((backend, outcome))
        if child is None:
            _check(outcome, UPSTREAM_OUTCOMES, "upstream outcome")
            child = self._attempt_children[(backend, outcome)] = self.upstream_attempts.labels(backend, outcome)
        child.inc()

    def retry(self, model: str) -> None:
        child = self._retry_children.get(model)
        if child is None:
            child = self._retry_children[model] = self.upstream_retries.labels(model)
        child.inc()

    def failover(self, model: str) -> None:
        child = self._failover_children.get(model)
        if child is None:
            child = self._failover_children[model] = self.failovers.labels(model)
        child.inc()

    def retry_budget_exhausted(self) -> None:
        self.retry_budget_spent.inc()

    def limit_refused(self, kind: LimitKind) -> None:
        child = self._refusal_children.get(kind)
        if child is None:
            _check(kind, LIMIT_KINDS, "limit kind")
            child = self._refusal_children[kind] = self.limit_refusals.labels(kind)
        child.inc()

    def reservation_overshot(self, tokens: int, cost_usd: float) -> None:
        """An upstream used more than its reservation (the store billed it in full); pass the excess only."""
        if tokens > 0:
            self.reservation_overshoot.labels("tokens").inc(tokens)
        if cost_usd > 0:
            self.reservation_overshoot.labels("usd").inc(cost_usd)

    # -- state (set by health checks and the collect hook) -----------------------------------------------

    def set_backend_health(self, backend: str, state: BackendState) -> None:
        if self._backend_states.get(backend) == state:
            return
        _check(state, BACKEND_STATE_SET, "backend state")
        self._backend_states[backend] = state
        self.backend_healthy.labels(backend).set(1 if state == "healthy" else 0)
        for each in BACKEND_STATES:
            self.backend_state.labels(backend, each).set(1 if each == state else 0)

    def remove_backend(self, backend: str) -> None:
        """Drop a deleted backend's series, so removed backends do not linger as labels forever."""
        self._backend_states.pop(backend, None)
        for metric in (self.backend_healthy, self.backend_state, self.upstream_attempts):
            metric.remove_by_labels({"backend": backend})
        for key in [key for key in self._attempt_children if key[0] == backend]:
            del self._attempt_children[key]

    def set_usage_queue(self, depth: int, dropped_total: int, written_total: int) -> None:
        """Mirror the usage writer's gauges and running totals (the totals become counter increments).

        A total below the last one seen means a new writer started counting from zero: its whole total is new.
        """
        self.usage_queue_depth.set(depth)
        self.usage_dropped.inc(_delta(dropped_total, self._usage_dropped_seen))
        self.usage_written.inc(_delta(written_total, self._usage_written_seen))
        self._usage_dropped_seen = dropped_total
        self._usage_written_seen = written_total

    def set_limits_store(self, state: StoreState) -> None:
        _check(state, STORE_STATE_SET, "limits store state")
        for each in STORE_STATES:
            self.limits_store_state.labels(each).set(1 if each == state else 0)

    def set_redis_up(self, up: bool) -> None:
        if not self._redis_registered:
            self.registry.register(self.redis_up)
            self._redis_registered = True
        self.redis_up.set(1 if up else 0)

    def set_database_up(self, up: bool) -> None:
        self.database_up.set(1 if up else 0)

    def connection_closed(self, reason: str) -> None:
        self.connections_closed.labels(reason).inc()

    def watch_connections(self, count: Callable[[], int]) -> None:
        """Read ``tenantgate_connections_open`` from ``count`` at scrape time."""
        self.connections_open.set_function(count)

    # -- exposition ----------------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics``: :meth:`refresh`, then :meth:`encode`."""
        self.refresh()
        return self.encode(accept)

    def refresh(self) -> None:
        """Run the collect hook so scrape-time gauges (queue depth, health) are fresh.

        A failing hook is logged and the scrape still answers with what is known: one broken gauge must not
        blind the operator to all the others.
        """
        if self.collect_hook is not None:
            try:
                self.collect_hook()
            except Exception:
                log.exception("metrics collect hook failed")

    def encode(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper's Accept asks for it), safe to run in a worker thread.

        Encoding thousands of series takes milliseconds, so an async handler should call :meth:`refresh` on
        the event loop and this through ``asyncio.to_thread``; prometheus_client locks every value it reads.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._exposed), content_type


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")


def _delta(total: int, seen: int) -> int:
    return total - seen if total >= seen else total
