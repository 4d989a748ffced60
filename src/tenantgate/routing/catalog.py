"""The routing catalog: which deployments serve each public model name, as an immutable snapshot.

A deployment is one (backend, model) pair with the upstream model name, the backend's credential and prices.
The snapshot is rebuilt whenever the config version changes; the hot path only reads it. Picking is
round-robin over the model's enabled deployments.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from tenantgate.core.errors import ModelNotFound
from tenantgate.core.secrets import Redacted


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

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_mtok + completion_tokens * self.output_price_per_mtok) / 1_000_000


@dataclass(slots=True)
class _ModelRoute:
    deployments: tuple[Deployment, ...]
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self) -> Deployment:
        return self.deployments[next(self.counter) % len(self.deployments)]


class Catalog:
    """An immutable view of models → deployments; ``pick`` is the routing policy (round-robin)."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        grouped: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            grouped.setdefault(deployment.model, []).append(deployment)
        self._routes = {name: _ModelRoute(tuple(items)) for name, items in grouped.items()}

    def models(self) -> list[str]:
        return sorted(self._routes)

    def has(self, model: str) -> bool:
        return model in self._routes

    def deployments(self, model: str) -> tuple[Deployment, ...]:
        route = self._routes.get(model)
        return route.deployments if route else ()

    def pick(self, model: str) -> Deployment:
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        return route.pick()
