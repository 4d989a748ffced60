"""The routing catalog: which deployments serve each public model name, as an immutable snapshot.

A deployment is one (backend, model) pair with the upstream model name, the backend's credential, prices,
its weight/priority for the routing policy and optional per-deployment timeouts. The snapshot is rebuilt
whenever the config version changes; the hot path only reads it. The one mutable bit is a per-model request
counter that drives round-robin rotation; the ordering itself is in :mod:`tenantgate.routing.policy`.

``candidates`` is what the request path uses: this model's deployments in policy order (the first is the one to
use, the rest the failover order), then each fallback model's candidates, depth first, without cycles and
without repeating a deployment.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tenantgate.core.errors import ModelNotFound
from tenantgate.core.secrets import Redacted
from tenantgate.routing.checker import Target
from tenantgate.routing.policy import ModelPolicy, order
from tenantgate.routing.snapshot import HealthView

__all__ = ["Catalog", "Deployment", "ModelPolicy", "RoutePlan"]

_DEFAULT_POLICY = ModelPolicy()


@dataclass(frozen=True, slots=True)
class Deployment:
    backend_id: str
    backend_name: str
    base_url: str
    api_key: Redacted | None
    model: str
    upstream_model: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    weight: int = 1  # relative share under the "weighted" policy; 0 = standby (failover only)
    priority: int = 0  # lower = preferred group under the "priority" policy
    connect_timeout: float | None = None  # seconds; None = the gateway-wide setting
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None  # longest silence between stream chunks
    output_cap_field: str = "max_tokens"  # the chat length field this backend honours (see edge/request.py)

    def __post_init__(self) -> None:
        # Deployments come from config files and the admin API; refuse nonsense when the catalog is built.
        if self.weight < 0:
            raise ValueError(f"deployment {self.backend_name}/{self.model}: weight must be >= 0")
        for name in ("connect_timeout", "first_byte_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"deployment {self.backend_name}/{self.model}: {name} must be > 0")

    @property
    def key(self) -> tuple[str, str]:
        """A deployment's identity: one backend serving one public model."""
        return (self.backend_id, self.model)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_mtok + completion_tokens * self.output_price_per_mtok) / 1_000_000


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The candidates for one request, and which of the models involved were in panic mode (for logs/metrics)."""

    candidates: tuple[Deployment, ...]
    panic_models: tuple[str, ...] = ()


@dataclass(slots=True)
class _ModelRoute:
    deployments: tuple[Deployment, ...]
    policy: ModelPolicy
    counter: itertools.count[int] = field(default_factory=itertools.count)


class Catalog:
    """An immutable view of models → deployments and their routing policies."""

    def __init__(self, deployments: Iterable[Deployment], policies: Mapping[str, ModelPolicy] | None = None) -> None:
        grouped: dict[str, dict[str, Deployment]] = {}
        for deployment in deployments:
            # One backend listed twice for one model is one deployment; keep the first (it would otherwise
            # get a double share of traffic and be tried twice in failover).
            grouped.setdefault(deployment.model, {}).setdefault(deployment.backend_id, deployment)
        policies = policies or {}
        self._routes = {
            name: _ModelRoute(tuple(items.values()), policies.get(name, _DEFAULT_POLICY))
            for name, items in grouped.items()
        }

    def models(self) -> list[str]:
        return sorted(self._routes)

    def has(self, model: str) -> bool:
        return model in self._routes

    def deployments(self, model: str) -> tuple[Deployment, ...]:
        route = self._routes.get(model)
        return route.deployments if route else ()

    def policy(self, model: str) -> ModelPolicy:
        route = self._routes.get(model)
        return route.policy if route else _DEFAULT_POLICY

    def targets(self) -> list[Target]:
        """Every backend once, for the health checker (``HealthChecker.set_targets(catalog.targets())``)."""
        seen: dict[str, Target] = {}
        for route in self._routes.values():
            for d in route.deployments:
                seen.setdefault(d.backend_id, Target(d.backend_id, d.base_url, d.api_key))
        return list(seen.values())

    def pick(self, model: str) -> Deployment:
        """The policy's first choice ignoring health (kept for callers that do not do failover)."""
        candidates = self.candidates(model, HealthView.empty(), 0.0)
        if not candidates:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        return candidates[0]

    def candidates(self, model: str, health: HealthView, now: float) -> list[Deployment]:
        """The ordered deployments to try for one request; may be empty when every one is disabled."""
        return list(self.plan(model, health, now).candidates)

    def plan(self, model: str, health: HealthView, now: float) -> RoutePlan:
        """Like :meth:`candidates`, also naming the models whose health put them in panic mode."""
        if model not in self._routes:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        chosen: list[Deployment] = []
        panic: list[str] = []
        self._collect(model, health, now, visited=set(), out=chosen, panic=panic)
        return RoutePlan(tuple(chosen), tuple(panic))

    def _collect(
        self,
        model: str,
        health: HealthView,
        now: float,
        *,
        visited: set[str],
        out: list[Deployment],
        panic: list[str],
    ) -> None:
        """Depth first over the fallback graph; ``visited`` breaks cycles and, since every deployment belongs to
        exactly one model (and duplicates collapse in the constructor), also keeps each deployment unique.

        Fallback names that are not in this snapshot are skipped: models come and go with admin changes, and a
        missing fallback must not break the model that names it.
        """
        route = self._routes.get(model)
        if route is None or model in visited:
            return
        visited.add(model)
        ordering = order(route.deployments, route.policy, health, now, next(route.counter))
        if ordering.panic:
            panic.append(model)
        out.extend(ordering.deployments)
        for fallback in route.policy.fallbacks:
            self._collect(fallback, health, now, visited=visited, out=out, panic=panic)
