"""Routing: which deployment serves a request, in which failover order, given what we know about backend health.

:mod:`.catalog` holds the immutable model → deployments snapshot, :mod:`.policy` the pure ordering functions,
:mod:`.health` the per-backend state machine (passive ejection, 429 cool-down, active-check verdicts, admin
disable, in-flight counts) and :mod:`.checker` the loop that probes backends on an interval.
"""

from tenantgate.routing.catalog import Catalog, Deployment, RoutePlan
from tenantgate.routing.checker import HealthChecker, Probe, Target
from tenantgate.routing.health import HealthRegistry
from tenantgate.routing.policy import ModelPolicy, PolicyName
from tenantgate.routing.snapshot import BackendStatus, HealthConfig, HealthState, HealthView

__all__ = [
    "BackendStatus",
    "Catalog",
    "Deployment",
    "HealthChecker",
    "HealthConfig",
    "HealthRegistry",
    "HealthState",
    "HealthView",
    "ModelPolicy",
    "PolicyName",
    "Probe",
    "RoutePlan",
    "Target",
]
