"""Admin pages that only read: the audit log (filtered, paged) and the effective settings (secrets masked)."""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin.audit import list_audit
from tenantgate.admin.schemas import INT32_MAX
from tenantgate.console.admin_common import acting, error_flash
from tenantgate.console.forms import logged_in
from tenantgate.console.render import render
from tenantgate.core.errors import GatewayError, InvalidRequest
from tenantgate.people.access import Caller, people_of
from tenantgate.storage.audit import MASK, is_secret_field

# -- audit ------------------------------------------------------------------------------------------------------

AUDIT_PAGE: Final = 50
ACTIONS: Final = (
    "tenant.create",
    "tenant.update",
    "tenant.delete",
    "key.create",
    "key.update",
    "key.revoke",
    "backend.create",
    "backend.update",
    "backend.delete",
    "user.create",
    "user.update",
    "user.delete",
    "user.logout",
    "user.signup",
    "user.password",
    "user.password_reset",
    "user.reset_link",
    "user.login_link",
    "member.put",
    "member.role",
    "member.remove",
    "invite.create",
    "invite.revoke",
    "invite.accept",
)
TARGET_TYPES: Final = ("tenant", "key", "backend", "user", "invite")


def compact_json(value: Any) -> str:
    """One line of JSON, with the spaces after , and : that let a table cell wrap it."""
    return "" if value is None else json.dumps(value, separators=(", ", ": "), sort_keys=True, ensure_ascii=False)


@logged_in
async def audit_page(request: Request, caller: Caller) -> Response:
    acting(request, caller)
    params = request.query_params
    filters = {name: params.get(name, "").strip()[:200] for name in ("actor", "action", "target_type")}
    before_text = params.get("before_id", "").strip()
    try:
        if before_text and not (before_text.isdigit() and 1 <= int(before_text) <= INT32_MAX):
            raise InvalidRequest("Page: not a valid position in the log.", param="before_id", code="invalid_value")
        before_id = int(before_text) if before_text else None
        page = await list_audit(
            request,
            action=filters["action"] or None,
            target_type=filters["target_type"] or None,
            target_id=None,
            actor=filters["actor"] or None,
            since=None,
            until=None,
            limit=AUDIT_PAGE,
            before_id=before_id,
        )
    except GatewayError as exc:
        return render(
            request,
            "admin_audit.html",
            status=exc.status,
            caller=caller,
            notice=error_flash(exc.message, exc.param),
            entries=[],
            filters=filters,
            actions=ACTIONS,
            target_types=TARGET_TYPES,
            next_url=None,
            first_url=None,
        )
    active = {name: value for name, value in filters.items() if value}
    entries = [{**entry, "changes_text": compact_json(entry["changes"])} for entry in page["data"]]
    next_id = page["next_before_id"]
    return render(
        request,
        "admin_audit.html",
        caller=caller,
        entries=entries,
        filters=filters,
        filtered=bool(active),
        actions=ACTIONS,
        target_types=TARGET_TYPES,
        next_url="/console/admin/audit?" + urlencode({**active, "before_id": next_id}) if next_id else None,
        first_url="/console/admin/audit?" + urlencode(active) if before_id else None,
    )


# -- settings ---------------------------------------------------------------------------------------------------

SECRET_SETTINGS: Final = frozenset({"admin_key", "secret_key", "bootstrap_keys", "smtp_url"})


def mask_url(url: str) -> str:
    """A URL with its password (and any secret-looking query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if has_password else f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, MASK if is_secret_field(key) else value) for key, value in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide (urlunsplit would also drop the "//" of "sqlite:///file")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_webhook(url: str | None) -> str | None:
    """A webhook URL is often its own secret (Slack, Teams): only its scheme and host are shown."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return MASK
    return f"{parts.scheme}://{host}/{MASK}" if host else MASK


def shown_value(name: str, value: Any) -> str:
    """A setting as text: the named secrets and every secret type as ``***``; a URL without its password."""
    if value is None:
        return ""
    if name in SECRET_SETTINGS or isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(item) for item in value)
    return str(value)


def setting_rows(settings: BaseModel) -> list[dict[str, Any]]:
    rows = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        rows.append(
            {
                "name": name,
                "env": f"TENANTGATE_{name.upper()}",
                "value": shown_value(name, value),
                "unset": value is None,
                "set": name in settings.model_fields_set,
                "secret": name in SECRET_SETTINGS,
                "description": field.description or "",
            }
        )
    return rows


def flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Nested config as ``(dotted.path, shown value)`` rows."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += flat(f"{prefix}.{key}" if prefix else str(key), item)
        return rows
    if prefix.endswith("webhook"):
        value = mask_webhook(value)
    return [(prefix, shown_value(prefix.rsplit(".", 1)[-1], value))]


@logged_in
async def settings_page(request: Request, caller: Caller) -> Response:
    acting(request, caller)
    gateway = request.app.state.gateway
    settings, config = gateway.settings, gateway.config
    policy = people_of(request).ctx.settings.signup
    sections = (
        ("defaults", config.defaults.model_dump(mode="json")),
        ("signup", config.signup.model_dump(mode="json")),
        ("routing", config.routing.model_dump(mode="json")),
    )
    return render(
        request,
        "admin_settings.html",
        caller=caller,
        settings=setting_rows(settings),
        signup_mode=policy.describe(),
        signup_from_env=settings.signup is not None,
        database="SQLite" if settings.is_sqlite else "PostgreSQL",
        limits_store="Redis" if settings.redis_url else "this process",
        cookie_secure=settings.cookie_secure,
        sections=[(name, flat("", values)) for name, values in sections],
        config_file=str(settings.config_file) if settings.config_file else None,
    )


ROUTES: list[BaseRoute] = [
    Route("/console/admin/audit", audit_page, methods=["GET"]),
    Route("/console/admin/settings", settings_page, methods=["GET"]),
]
