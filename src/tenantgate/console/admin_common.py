"""What every platform-admin page shares: acting as the admin, form fields to API bodies, flash messages.

The admin pages call the admin API's own route functions (``tenantgate.admin.api``,
``tenantgate.people.admin_api``), so the console and the JSON API share one code path: the same validation,
the same storage calls, the same audit entries. ``acting`` names the logged-in admin as the audit actor first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse

from tenantgate.admin.auth import AdminServices, services
from tenantgate.admin.schemas import LIMIT_NAMES
from tenantgate.console.forms import Form, admin_only
from tenantgate.core.errors import InvalidRequest
from tenantgate.people.access import Caller

M = TypeVar("M", bound=BaseModel)

EMPTY: Final = Form([])

# Field names as the forms label them, so a refused value is named the way the admin saw it.
LABELS: Final = {
    "name": "Name",
    "email": "Email",
    "password": "Password",
    "rpm": "Requests per minute",
    "tpm": "Tokens per minute",
    "max_concurrency": "Concurrent requests",
    "budget_usd": "Budget (USD)",
    "budget_period": "Budget period",
    "base_url": "Base URL",
    "api_key": "API key",
    "models": "Models",
    "weight": "Weight",
    "priority": "Priority",
    "role": "Role",
    "tenant_id": "Tenant",
    "expires_in_hours": "Expires in (hours)",
    "since": "Since",
    "until": "Until",
    "top": "Top",
    "group_by": "Group by",
    "before_id": "Page",
}

# Messages shown after a successful form (``?done=<code>``): fixed texts, nothing from the query is echoed.
DONE: Final = {
    "tenant_created": "Tenant created.",
    "tenant_saved": "Tenant saved.",
    "tenant_deleted": "Tenant deleted, with its keys.",
    "key_revoked": "Key revoked. Requests with it now fail.",
    "user_created": "User created.",
    "user_saved": "User saved.",
    "user_disabled": "User disabled and logged out everywhere.",
    "user_enabled": "User enabled. They can log in again.",
    "user_deleted": "User deleted, with their memberships, sessions and keys.",
    "member_saved": "Membership saved.",
    "member_removed": "Removed from the tenant; their keys in it were revoked.",
    "sessions_ended": "User logged out everywhere.",
    "invite_withdrawn": "Invite withdrawn.",
    "backend_created": "Backend registered. Its health appears below within a few seconds.",
    "backend_saved": "Backend saved.",
    "backend_enabled": "Backend enabled.",
    "backend_disabled": "Backend disabled: it gets no new requests; running ones finish.",
    "backend_deleted": "Backend removed.",
}


def acting(request: Request, caller: Caller) -> AdminServices:
    """Only platform admins; the audit log names this admin (``user:<email>``) for what the request does."""
    admin_only(caller)
    request.state.actor = f"user:{caller.user.email}"
    return services(request)


def label_of(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """``(param, readable label)`` of a pydantic error location, e.g. ``("models", "Models (entry 2)")``."""
    if not loc:
        return "", "This form"
    param = str(loc[0])
    label = LABELS.get(param, param.replace("_", " ").capitalize())
    index = next((part for part in loc[1:] if isinstance(part, int)), None)
    return param, label if index is None else f"{label} (entry {index + 1})"


def build(model: type[M], data: Mapping[str, Any]) -> M:
    """An API body from form fields; a refused field is a 400 naming it (``Budget (USD): Input should be…``)."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param, label = label_of(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ").rstrip(".")
        raise InvalidRequest(f"{label}: {message}.", param=param or None, code="invalid_value") from None


def limits_from(form: Form, *, blank_is_none: bool) -> dict[str, Any]:
    """The limit fields of a form. Creating: a blank field is left out (the configured default applies).
    Editing: a blank field is ``None`` (no limit)."""
    values: dict[str, Any] = {}
    for name in LIMIT_NAMES:
        value = form.optional(name)
        if value is not None or blank_is_none:
            values[name] = value
    return values


def limit_values(limits: Mapping[str, Any]) -> dict[str, str]:
    """A row's limits as the strings an edit form shows (``None`` as blank)."""
    out: dict[str, str] = {}
    for name in LIMIT_NAMES:
        value = limits.get(name)
        if value is None:
            out[name] = ""
        elif isinstance(value, float) and value.is_integer():
            out[name] = str(int(value)) if name != "budget_usd" else f"{value:g}"
        else:
            out[name] = str(value)
    return out


def form_values(form: Form, names: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {name: form.get(name)[:2000] for name in names}


def flash_of(request: Request) -> dict[str, str] | None:
    code = request.query_params.get("done", "")
    text = DONE.get(code)
    return {"kind": "ok", "text": text} if text else None


def error_flash(message: str, param: str | None = None) -> dict[str, str]:
    """An error message as a sentence; one that starts with the raw parameter name gets its label instead
    (``tenant_id must not…`` → ``Tenant must not…``)."""
    if param and message.startswith(param + " "):
        message = LABELS.get(param, param.replace("_", " ")) + message[len(param) :]
    text = message[:1].upper() + message[1:]
    return {"kind": "error", "text": text if text.endswith((".", "?", "!", ")")) else text + "."}


def done(path: str, code: str, **query: str | None) -> RedirectResponse:
    """Back to a page after a form worked (post/redirect/get), with its fixed message."""
    params = {key: value for key, value in query.items() if value}
    params["done"] = code
    return RedirectResponse(f"{path}?{urlencode(params)}", status_code=303)
