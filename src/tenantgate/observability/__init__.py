"""Observability: the Prometheus metrics of the gateway (declared in one module, one registry per app)."""

from tenantgate.observability.metrics import GatewayMetrics
from tenantgate.observability.vocabulary import (
    BackendState,
    LimitKind,
    StoreState,
    UpstreamOutcome,
)

__all__ = ["BackendState", "GatewayMetrics", "LimitKind", "StoreState", "UpstreamOutcome"]
