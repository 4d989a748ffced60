"""GatewayMetrics: exact values after scripted calls, bounded labels, GenAI names, isolated registries."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenantgate.observability.metrics import GatewayMetrics
from tenantgate.observability.vocabulary import GENAI_TTFT_BUCKETS, TOKEN_BUCKETS

Labels = tuple[tuple[str, str], ...]


def scrape(metrics: GatewayMetrics) -> dict[str, dict[Labels, float]]:
    """Every sample of one render: sample name -> sorted label pairs -> value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def finish(metrics: GatewayMetrics, **overrides: object) -> None:
    call: dict[str, object] = {
        "route": "chat/completions",
        "model": "gpt",
        "status": 200,
        "duration_s": 1.0,
        "ttft_s": 0.2,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.01,
        "tenant_id": "t1",
    }
    call.update(overrides)
    metrics.request_started()
    metrics.request_finished(**call)  # type: ignore[arg-type]


@pytest.fixture()
def scripted() -> GatewayMetrics:
    metrics = GatewayMetrics()
    finish(metrics)
    finish(metrics, duration_s=3.0, ttft_s=0.5, prompt_tokens=100, completion_tokens=50, cost_usd=0.5)
    finish(metrics, route="embeddings", model="embed", ttft_s=None, duration_s=0.05, completion_tokens=0, cost_usd=0)
    finish(metrics, status=429, ttft_s=None, prompt_tokens=0, completion_tokens=0, cost_usd=0, duration_s=0.001)
    finish(metrics, model="", status=401, ttft_s=None, prompt_tokens=0, completion_tokens=0, cost_usd=0, tenant_id=None)
    metrics.request_started()  # still in flight
    metrics.upstream_attempt("gpu-1", "connect_error")
    metrics.upstream_attempt("gpu-2", "success")
    metrics.upstream_attempt("gpu-2", "success")
    metrics.retry("gpt")
    metrics.failover("gpt")
    metrics.retry_budget_exhausted()
    metrics.limit_refused("rpm")
    metrics.limit_refused("budget")
    metrics.limit_refused("budget")
    return metrics


def test_request_counters_and_tokens(scripted: GatewayMetrics) -> None:
    s = scrape(scripted)
    assert value(s, "tenantgate_requests_total", route="chat/completions", model="gpt", status="200") == 2
    assert value(s, "tenantgate_requests_total", route="chat/completions", model="gpt", status="429") == 1
    assert value(s, "tenantgate_requests_total", route="chat/completions", model="", status="401") == 1
    assert value(s, "tenantgate_requests_total", route="embeddings", model="embed", status="200") == 1
    assert value(s, "tenantgate_tokens_total", model="gpt", type="prompt") == 110
    assert value(s, "tenantgate_tokens_total", model="gpt", type="completion") == 55
    assert value(s, "tenantgate_tokens_total", model="embed", type="prompt") == 10
    assert value(s, "tenantgate_tokens_total", model="embed", type="completion") == 0
    assert value(s, "tenantgate_spend_usd_total", model="gpt") == pytest.approx(0.51)
    assert value(s, "tenantgate_requests_in_flight") == 1
    assert not any(name.endswith("_created") for name in s)


def test_histograms_count_and_sum(scripted: GatewayMetrics) -> None:
    s = scrape(scripted)
    gpt = {"route": "chat/completions", "model": "gpt"}
    assert value(s, "tenantgate_request_duration_seconds_count", **gpt) == 3
    assert value(s, "tenantgate_request_duration_seconds_sum", **gpt) == pytest.approx(4.001)
    assert value(s, "tenantgate_request_duration_seconds_bucket", le="0.005", **gpt) == 1
    assert value(s, "tenantgate_request_duration_seconds_bucket", le="+Inf", **gpt) == 3
    assert value(s, "tenantgate_time_to_first_token_seconds_count", **gpt) == 2
    assert value(s, "tenantgate_time_to_first_token_seconds_sum", **gpt) == pytest.approx(0.7)
    embed = {"route": "embeddings", "model": "embed"}
    assert value(s, "tenantgate_time_to_first_token_seconds_count", **embed) == 0


def test_genai_metrics(scripted: GatewayMetrics) -> None:
    s = scrape(scripted)
    chat = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "gpt"}
    assert value(s, "gen_ai_server_request_duration_count", **chat) == 3
    assert value(s, "gen_ai_server_time_to_first_token_count", **chat) == 2
    assert value(s, "gen_ai_server_time_to_first_token_sum", **chat) == pytest.approx(0.7)
    assert value(s, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **chat) == 2
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **chat) == 110
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **chat) == 55
    assert value(s, "gen_ai_client_token_usage_bucket", gen_ai_token_type="output", le="4.0", **chat) == 0
    assert value(s, "gen_ai_client_token_usage_bucket", gen_ai_token_type="output", le="16.0", **chat) == 1
    embed = {"gen_ai_operation_name": "embeddings", "gen_ai_request_model": "embed", "gen_ai_token_type": "input"}
    assert value(s, "gen_ai_client_token_usage_count", **embed) == 1
    token_les = {float(dict(k)["le"]) for k in s["gen_ai_client_token_usage_bucket"]}
    assert token_les == {*TOKEN_BUCKETS, float("inf")} and max(TOKEN_BUCKETS) == 4**11 == 4_194_304
    ttft_les = {dict(k)["le"] for k in s["gen_ai_server_time_to_first_token_bucket"]}
    assert len(ttft_les) == len(GENAI_TTFT_BUCKETS) + 1


def test_genai_operation_names_and_non_genai_routes() -> None:
    metrics = GatewayMetrics()
    for route in ("chat/completions", "completions", "embeddings", "responses", "models"):
        finish(metrics, route=route)
    s = scrape(metrics)
    operations = {dict(k)["gen_ai_operation_name"] for k in s["gen_ai_server_request_duration_count"]}
    assert operations == {"chat", "text_completion", "embeddings", "responses"}
    assert value(s, "tenantgate_requests_total", route="models", model="gpt", status="200") == 1


def test_upstream_limits_and_failover(scripted: GatewayMetrics) -> None:
    s = scrape(scripted)
    assert value(s, "tenantgate_upstream_attempts_total", backend="gpu-1", outcome="connect_error") == 1
    assert value(s, "tenantgate_upstream_attempts_total", backend="gpu-2", outcome="success") == 2
    assert value(s, "tenantgate_upstream_retries_total", model="gpt") == 1
    assert value(s, "tenantgate_failovers_total", model="gpt") == 1
    assert value(s, "tenantgate_retry_budget_exhausted_total") == 1
    assert value(s, "tenantgate_limit_refusals_total", kind="rpm") == 1
    assert value(s, "tenantgate_limit_refusals_total", kind="budget") == 2


def test_unknown_enumerated_label_values_are_refused() -> None:
    metrics = GatewayMetrics()
    with pytest.raises(ValueError, match="upstream outcome"):
        metrics.upstream_attempt("gpu-1", "http_500")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit kind"):
        metrics.limit_refused("key:abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend state"):
        metrics.set_backend_health("gpu-1", "sleepy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limits store state"):
        metrics.set_limits_store("fine")  # type: ignore[arg-type]


def test_backend_health_one_hot_and_removal() -> None:
    metrics = GatewayMetrics()
    metrics.set_backend_health("gpu-1", "healthy")
    metrics.set_backend_health("gpu-2", "ejected")
    metrics.upstream_attempt("gpu-2", "timeout")
    s = scrape(metrics)
    assert value(s, "tenantgate_backend_healthy", backend="gpu-1") == 1
    assert value(s, "tenantgate_backend_healthy", backend="gpu-2") == 0
    states = {dict(k)["state"]: v for k, v in s["tenantgate_backend_state"].items() if dict(k)["backend"] == "gpu-2"}
    assert states == {"healthy": 0, "ejected": 1, "cooling": 0, "unhealthy": 0, "disabled": 0}
    metrics.set_backend_health("gpu-2", "cooling")
    assert value(scrape(metrics), "tenantgate_backend_state", backend="gpu-2", state="cooling") == 1
    metrics.remove_backend("gpu-2")
    s = scrape(metrics)
    assert {dict(k)["backend"] for k in s["tenantgate_backend_healthy"]} == {"gpu-1"}
    assert "tenantgate_upstream_attempts_total" not in s
    metrics.upstream_attempt("gpu-2", "timeout")  # a backend re-added under the same name starts from zero
    assert value(scrape(metrics), "tenantgate_upstream_attempts_total", backend="gpu-2", outcome="timeout") == 1


def test_usage_queue_totals_become_counter_increments() -> None:
    metrics = GatewayMetrics()
    metrics.set_usage_queue(depth=7, dropped_total=2, written_total=100)
    metrics.set_usage_queue(depth=3, dropped_total=2, written_total=150)
    s = scrape(metrics)
    assert value(s, "tenantgate_usage_queue_depth") == 3
    assert value(s, "tenantgate_usage_records_dropped_total") == 2
    assert value(s, "tenantgate_usage_records_written_total") == 150
    metrics.set_usage_queue(depth=0, dropped_total=0, written_total=5)  # a new writer counts from zero
    assert value(scrape(metrics), "tenantgate_usage_records_written_total") == 155


def test_dependency_gauges_and_collect_hook() -> None:
    metrics = GatewayMetrics()
    assert "tenantgate_redis_up" not in scrape(metrics)  # no Redis configured: no series to alert on
    depth = iter([4, 9])
    metrics.collect_hook = lambda: metrics.set_usage_queue(next(depth), 0, 0)
    metrics.set_redis_up(False)
    metrics.set_database_up(True)
    metrics.set_limits_store("degraded")
    s = scrape(metrics)
    assert value(s, "tenantgate_usage_queue_depth") == 4
    assert value(s, "tenantgate_redis_up") == 0
    assert value(s, "tenantgate_database_up") == 1
    assert {dict(k)["state"]: v for k, v in s["tenantgate_limits_store_state"].items()} == {
        "ok": 0,
        "degraded": 1,
        "down": 0,
    }
    assert value(scrape(metrics), "tenantgate_usage_queue_depth") == 9


def test_failing_collect_hook_still_renders() -> None:
    metrics = GatewayMetrics()

    def broken() -> None:
        raise RuntimeError("boom")

    metrics.collect_hook = broken
    assert value(scrape(metrics), "tenantgate_requests_in_flight") == 0


def test_openmetrics_when_asked() -> None:
    metrics = GatewayMetrics()
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_tenant_label_is_opt_in() -> None:
    metrics = GatewayMetrics()
    finish(metrics, tenant_id="t1")
    assert "tenantgate_tenant_requests_total" not in scrape(metrics)


def test_tenant_label_cardinality_is_capped() -> None:
    metrics = GatewayMetrics(tenant_labels=True, max_tenant_label_values=100)
    for i in range(1000):
        finish(metrics, tenant_id=f"tenant-{i}")
    finish(metrics, tenant_id="tenant-5")  # an early tenant keeps its own series
    finish(metrics, tenant_id=None)  # unauthenticated: not counted per tenant
    series = scrape(metrics)["tenantgate_tenant_requests_total"]
    assert len(series) <= 101
    by_tenant = {dict(k)["tenant"]: v for k, v in series.items()}
    assert by_tenant["other"] == 900
    assert by_tenant["tenant-5"] == 2
    assert sum(by_tenant.values()) == 1001
    assert "tenant-999" not in by_tenant


def test_instances_do_not_share_state() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    finish(first)
    first.limit_refused("tpm")
    s = scrape(second)
    assert "tenantgate_requests_total" not in s
    assert "tenantgate_limit_refusals_total" not in s
    assert value(s, "tenantgate_requests_in_flight") == 0
    assert value(scrape(first), "tenantgate_requests_total", route="chat/completions", model="gpt", status="200") == 1
