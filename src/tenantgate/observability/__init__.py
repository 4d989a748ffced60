"""Observability: the Prometheus metrics of the gateway (one module, one registry per app)."""

from tenantgate.observability.metrics import (
    BackendState,
    GatewayMetrics,
    LimitKind,
    StoreState,
    UpstreamOutcome,
)

__all__ = ["BackendState", "GatewayMetrics", "LimitKind", "StoreState", "UpstreamOutcome"]
