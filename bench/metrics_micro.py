"""Micro-benchmark: the per-request cost of metrics, and the cost of one scrape.

Times ``request_started()`` + ``request_finished()`` (the pair every proxied request pays) once the labelled
children are cached, for a streamed chat request (every histogram observed) and a refused one (counters
only), with the per-tenant label off and on; then one ``render()`` of a realistically filled registry. Not a
test; run ``.venv/bin/python bench/metrics_micro.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tenantgate.observability.metrics import GatewayMetrics

ROUNDS = 7
CALLS = 50_000


def _per_call_us(fn: Callable[[], None], calls: int = CALLS) -> float:
    """Median over rounds of the mean µs per call (the median damps a noisy neighbour on a 2-CPU machine)."""
    for _ in range(calls // 10):  # warm-up: children cached, branches hot
        fn()
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


def _streamed(metrics: GatewayMetrics) -> Callable[[], None]:
    def call() -> None:
        metrics.request_started()
        metrics.request_finished("chat/completions", "gpt", 200, 1.25, 0.18, 812, 240, 0.0031, "ten_1")

    return call


def _refused(metrics: GatewayMetrics) -> Callable[[], None]:
    def call() -> None:
        metrics.request_started()
        metrics.limit_refused("rpm")
        metrics.request_finished("chat/completions", "gpt", 429, 0.0004, None, 0, 0, 0.0, "ten_1")

    return call


def _filled() -> GatewayMetrics:
    """4 routes x 20 models, 3 statuses, 10 backends, 100 tenants: a busy replica's series count."""
    metrics = GatewayMetrics(tenant_labels=True)
    for route in ("chat/completions", "completions", "embeddings", "responses"):
        for m in range(20):
            for status in (200, 429, 502):
                metrics.request_started()
                metrics.request_finished(route, f"model-{m}", status, 0.8, 0.1, 100, 50, 0.001, f"ten_{m}")
    for b in range(10):
        metrics.set_backend_health(f"backend-{b}", "healthy")
        metrics.upstream_attempt(f"backend-{b}", "success")
    for t in range(100):
        metrics.request_started()
        metrics.request_finished("chat/completions", "model-0", 200, 0.8, 0.1, 100, 50, 0.001, f"tenant-{t}")
    return metrics


def main() -> None:
    print(f"request_started + request_finished, µs per call (median of {ROUNDS} x {CALLS:,} calls)")
    for tenant_labels in (False, True):
        metrics = GatewayMetrics(tenant_labels=tenant_labels)
        streamed = _per_call_us(_streamed(metrics))
        refused = _per_call_us(_refused(metrics))
        print(f"  tenant_labels={tenant_labels!s:5}  streamed chat: {streamed:5.2f}   refused (429): {refused:5.2f}")
    metrics = _filled()
    body, _ = metrics.render()
    lines = body.count(b"\n")

    def scrape() -> None:
        metrics.render()

    render_ms = _per_call_us(scrape, calls=20) / 1000
    print(f"render(): {render_ms:.2f} ms for {lines:,} lines ({len(body) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
