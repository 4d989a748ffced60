"""The YAML config file: backends, models, prices and defaults declared at start-up.

Validation runs in two stages: shape (pydantic) and then cross-references (unique names, at least one model).
Both report errors as ``path.to.key: message`` so an operator can find the line to fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)\}")


class ConfigError(Exception):
    """The config file is invalid; ``errors`` lists every problem with its key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(errors))
        self.errors = errors


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    upstream_model: str | None = None
    input_price_per_mtok: float = Field(default=0.0, ge=0, le=1e6, allow_inf_nan=False)
    output_price_per_mtok: float = Field(default=0.0, ge=0, le=1e6, allow_inf_nan=False)


class Timeouts(BaseModel):
    """Per-backend timeouts in seconds; unset ones use the gateway-wide settings."""

    model_config = ConfigDict(extra="forbid")
    connect: float | None = Field(default=None, gt=0)
    first_byte: float | None = Field(default=None, gt=0)
    idle: float | None = Field(default=None, gt=0)


class BackendEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    base_url: str
    api_key: str | None = None
    models: list[str | ModelEntry] = Field(min_length=1)
    weight: int = Field(default=1, ge=0, description="Share under the weighted policy; 0 = standby.")
    priority: int = Field(default=0, description="Lower = preferred group under the priority policy.")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    output_cap_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens",
        description="The chat output-length field this server honours; limited keys' caps are sent in it "
        "(max_tokens: vLLM, Ollama, llama.cpp; max_completion_tokens: OpenAI's reasoning models).",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def model_entries(self) -> list[ModelEntry]:
        return [ModelEntry(name=m) if isinstance(m, str) else m for m in self.models]


class LimitDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, gt=0, lt=2**31)
    tpm: int | None = Field(default=None, gt=0, lt=2**31)
    max_concurrency: int | None = Field(default=None, gt=0, lt=2**31)
    budget_usd: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    budget_period: Literal["total", "daily", "weekly", "monthly"] | None = None


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_output_tokens: int = Field(default=4096, gt=0, le=10_000_000)
    media_token_allowance: int = Field(
        default=4096, gt=0, description="Prompt tokens reserved per image, audio or file part of a request."
    )
    tenant_limits: LimitDefaults = Field(default_factory=LimitDefaults)
    key_limits: LimitDefaults = Field(default_factory=LimitDefaults)
    budget_alert_threshold: float = Field(default=0.8, gt=0, le=1)
    budget_alert_webhook: str | None = None


class SignupConfig(BaseModel):
    """Who may create an account, and what a self-made account may spend (``TENANTGATE_SIGNUP`` overrides mode)."""

    model_config = ConfigDict(extra="forbid")
    mode: str = Field(default="closed", description="closed | invite | open | domain:example.org,example.com")
    # A user who signs up without an invite gets a personal tenant with these limits, so an open instance
    # cannot be drained by creating accounts.
    personal_tenant_limits: LimitDefaults = Field(
        default_factory=lambda: LimitDefaults(
            rpm=60, tpm=100_000, max_concurrency=4, budget_usd=5.0, budget_period="monthly"
        )
    )
    user_limits: LimitDefaults = Field(default_factory=LimitDefaults)


class ModelRouting(BaseModel):
    """How one public model is routed: policy over its backends, fallback models, overall deadline."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["round_robin", "weighted", "least_outstanding", "priority"] = "round_robin"
    fallbacks: list[str] = Field(default_factory=list)
    max_ejection_share: float = Field(default=0.5, ge=0, le=1)
    timeout: float | None = Field(default=None, gt=0, description="Overall deadline shared by all attempts.")
    max_output_tokens: int | None = Field(
        default=None, gt=0, le=10_000_000, description="Output reserved (and capped) when a request sets none."
    )


class RoutingDefaults(BaseModel):
    """Health checking, outlier ejection and retry behaviour for every backend."""

    model_config = ConfigDict(extra="forbid")
    health_check_interval: float = Field(default=10.0, gt=0)
    health_check_timeout: float = Field(default=5.0, gt=0)
    unhealthy_threshold: int = Field(default=3, ge=1)
    healthy_threshold: int = Field(default=2, ge=1)
    consecutive_failures_to_eject: int = Field(default=5, ge=1)
    base_ejection_seconds: float = Field(default=10.0, gt=0)
    max_ejection_seconds: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, description="Upstream attempts per request, fallbacks included.")
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1, description="Retries allowed per request.")
    retry_budget_min_per_second: float = Field(default=5.0, ge=0)
    backoff_base_seconds: float = Field(default=0.025, ge=0)
    backoff_max_seconds: float = Field(default=0.5, ge=0)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backends: list[BackendEntry] = Field(default_factory=list)
    models: dict[str, ModelRouting] = Field(default_factory=dict)
    routing: RoutingDefaults = Field(default_factory=RoutingDefaults)
    defaults: Defaults = Field(default_factory=Defaults)
    signup: SignupConfig = Field(default_factory=SignupConfig)


def _expand_env(value: Any, missing: set[str]) -> Any:
    """``${NAME}`` in a string is replaced by that environment variable, so secrets stay out of the file; a name
    that is not set is collected in ``missing`` (an empty credential would fail much later, and obscurely)."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                missing.add(name)
            return os.environ.get(name, "")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, list):
        return [_expand_env(item, missing) for item in value]
    if isinstance(value, dict):
        return {key: _expand_env(item, missing) for key, item in value.items()}
    return value


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and part in ("str", "ModelEntry")))


def parse_config(data: Any) -> GatewayConfig:
    if data is None:
        data = {}
    try:
        missing: set[str] = set()
        expanded = _expand_env(data, missing)
        if missing:
            raise ConfigError([f"${{{name}}} is used but not set in the environment" for name in sorted(missing)])
        config = GatewayConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError([f"{_path(err['loc'])}: {err['msg']}" for err in exc.errors()]) from None
    errors: list[str] = []
    seen: dict[str, int] = {}
    for index, backend in enumerate(config.backends):
        if backend.name in seen:
            errors.append(f"backends.{index}.name: duplicate backend name {backend.name!r}")
        seen[backend.name] = index
        names = [entry.name for entry in backend.model_entries()]
        for model_index, name in enumerate(names):
            if names.index(name) != model_index:
                errors.append(f"backends.{index}.models.{model_index}: model {name!r} listed twice")
    declared = {entry.name for backend in config.backends for entry in backend.model_entries()}
    for model, routing in config.models.items():
        for index, fallback in enumerate(routing.fallbacks):
            if fallback == model:
                errors.append(f"models.{model}.fallbacks.{index}: a model cannot fall back to itself")
            elif fallback not in declared:
                errors.append(f"models.{model}.fallbacks.{index}: unknown model {fallback!r}")
    if errors:
        raise ConfigError(errors)
    return config


def load_config(path: Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    return parse_config(data)


def with_env_defaults(config: GatewayConfig, rate_limit_rpm: int | None) -> GatewayConfig:
    """``RATE_LIMIT_RPM`` (seed 001's knob) as the default key rpm, unless the file sets one."""
    if rate_limit_rpm is None or config.defaults.key_limits.rpm is not None:
        return config
    key_limits = config.defaults.key_limits.model_copy(update={"rpm": rate_limit_rpm})
    defaults = config.defaults.model_copy(update={"key_limits": key_limits})
    return config.model_copy(update={"defaults": defaults})
