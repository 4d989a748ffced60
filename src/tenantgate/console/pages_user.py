"""Console pages for people: their API keys (create, show once, rotate, revoke) and the chat playground.

``ROUTES`` also holds the usage pages (:mod:`pages_usage`) and the team pages (:mod:`pages_team`). Every page
mirrors a call of the JSON API in :mod:`tenantgate.people.me_api` and goes through the same services.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin.schemas import INT32_MAX, MAX_YEAR, path_id, text_problem
from tenantgate.console import pages_team, pages_usage
from tenantgate.console.forms import Form, form_caller, logged_in, posted
from tenantgate.console.pages_usage import PLAYGROUND_KEY_NAME, key_view, tenant_names
from tenantgate.console.render import render, secure_headers
from tenantgate.core.errors import GatewayError, InvalidRequest
from tenantgate.people.access import Caller, people_of
from tenantgate.people.keys import KeyRequest, is_active
from tenantgate.storage.rows import MAX_BUDGET_USD, KeyRow, LimitFields, utcnow

PERIODS: Final = (("monthly", "per month"), ("weekly", "per week"), ("daily", "per day"), ("total", "in total"))
PLAYGROUND_TTL: Final = timedelta(hours=12)
DONE: Final = {"revoked": "Key revoked. Requests with it are refused within a few seconds."}


# ---------- Reading the create form ----------


@dataclass
class KeyForm:
    """The create form's values as typed (kept on an error) and as a :class:`KeyRequest`."""

    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, form: Form) -> KeyForm:
        names = ("name", "tenant_id", "expires_on", "rpm", "tpm", "max_concurrency", "budget_usd", "budget_period")
        values: dict[str, Any] = {name: form.get(name)[:300] for name in names}
        values["models"] = form.getlist("models")
        return cls(values)

    def _int(self, name: str, label: str) -> int | None:
        raw = self.values[name].replace(",", "").replace("_", "")
        if not raw:
            return None
        if not raw.isdigit() or not 1 <= int(raw) <= INT32_MAX:
            raise InvalidRequest(f"{label} must be a whole number from 1 to {INT32_MAX:,}.", param=name)
        return int(raw)

    def request(self) -> KeyRequest:
        name = self.values["name"]
        if not name:
            raise InvalidRequest("Give the key a name, e.g. the app or machine that will use it.", param="name")
        problem = text_problem(name)
        if problem:
            raise InvalidRequest(f"The name {problem}.", param="name")
        budget: float | None = None
        if self.values["budget_usd"]:
            try:
                budget = float(self.values["budget_usd"].lstrip("$").replace(",", ""))
            except ValueError:
                budget = math.nan
            if not (math.isfinite(budget) and 0 <= budget <= MAX_BUDGET_USD):
                raise InvalidRequest(f"The budget must be an amount in USD from 0 to {MAX_BUDGET_USD:,.0f}.")
        period = self.values["budget_period"] or "monthly"
        if period not in dict(PERIODS):
            raise InvalidRequest("Pick a budget period from the list.", param="budget_period")
        limits = LimitFields(
            rpm=self._int("rpm", "Requests per minute"),
            tpm=self._int("tpm", "Tokens per minute"),
            max_concurrency=self._int("max_concurrency", "Max concurrent requests"),
            budget_usd=budget,
            budget_period=period if budget is not None else None,
        )
        return KeyRequest(
            name=name,
            tenant_id=self.values["tenant_id"] or None,
            models=self.values["models"] or None,
            expires_at=self._expiry(),
            limits=limits,
        )

    def _expiry(self) -> datetime | None:
        """The end (UTC) of the day picked: a key set to expire "on" a day works all that day."""
        raw = self.values["expires_on"]
        if not raw:
            return None
        try:
            day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise InvalidRequest("The expiry must be a date (YYYY-MM-DD).", param="expires_on") from None
        if day.year > MAX_YEAR:
            raise InvalidRequest(f"The expiry must be before the year {MAX_YEAR + 1}.", param="expires_on")
        end = day + timedelta(days=1)
        if end <= utcnow():
            raise InvalidRequest("The expiry date has passed; pick today or a later day.", param="expires_on")
        return end


# ---------- Pages ----------


def base_url(request: Request) -> str:
    """The OpenAI base URL of this gateway, as clients outside should use it."""
    public = people_of(request).ctx.settings.public_url
    return (public or str(request.base_url)).rstrip("/") + "/v1"


async def keys_page_response(
    request: Request,
    caller: Caller,
    *,
    status: int = 200,
    flash: dict[str, str] | None = None,
    form: KeyForm | None = None,
) -> Response:
    people = people_of(request)
    user = caller.user
    rows = sorted(await people.keys.mine(user), key=lambda row: row.created_at, reverse=True)
    memberships = await people.ctx.repos.memberships.of_user(user.id)
    names = await tenant_names(people, memberships, rows)
    now = utcnow()
    if flash is None and request.query_params.get("welcome") == "1":
        flash = {
            "kind": "ok",
            "text": "Welcome to tenantgate! Create your first API key below to start calling models.",
        }
    elif flash is None and request.query_params.get("done") in DONE:
        flash = {"kind": "ok", "text": DONE[request.query_params["done"]]}
    owned = [m for m in memberships if m.role == "owner"]
    values = (
        form.values if form else {"tenant_id": (owned or memberships)[0].tenant_id if memberships else "", "models": []}
    )
    return render(
        request,
        "user_keys.html",
        status=status,
        caller=caller,
        flash=flash,
        keys=[key_view(row, names, now) for row in rows],
        active_count=sum(1 for row in rows if is_active(row)),
        max_keys=people.ctx.settings.max_keys_per_user,
        memberships=memberships,
        show_team=len(memberships) != 1 or any(row.tenant_id != memberships[0].tenant_id for row in rows),
        models=sorted(people.ctx.known_models()),
        periods=PERIODS,
        values=values,
        today=now.date().isoformat(),
    )


@logged_in
async def keys_page(request: Request, caller: Caller) -> Response:
    return await keys_page_response(request, caller)


def chat_model(models: list[str], wanted: str | None) -> str:
    """The model to suggest: the one asked for if it exists, else the first that is not an embedding model."""
    if wanted in models:
        return str(wanted)
    return next((m for m in models if "embed" not in m), models[0] if models else "")


def snippets(base: str, secret: str, model: str) -> list[dict[str, str]]:
    """Ready-to-run examples with this key: curl, the openai Python SDK, the openai Node SDK. Every value is
    quoted for its language (a JSON string literal is valid Python and JavaScript), whatever a model is named."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]}).replace("'", "'\\''")
    url, key, name = json.dumps(base), json.dumps(secret), json.dumps(model)
    curl = (
        f"curl {shlex.quote(base + '/chat/completions')} \\\n"
        f"  -H {shlex.quote('Authorization: Bearer ' + secret)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'"
    )
    python = (
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f"    base_url={url},\n"
        f"    api_key={key},\n"
        ")\n"
        "reply = client.chat.completions.create(\n"
        f"    model={name},\n"
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)"
    )
    node = (
        'import OpenAI from "openai";\n\n'
        "const client = new OpenAI({\n"
        f"  baseURL: {url},\n"
        f"  apiKey: {key},\n"
        "});\n"
        "const reply = await client.chat.completions.create({\n"
        f"  model: {name},\n"
        '  messages: [{ role: "user", content: "Hello!" }],\n'
        "});\n"
        "console.log(reply.choices[0].message.content);"
    )
    return [
        {"id": "curl", "title": "curl", "install": "", "code": curl},
        {"id": "python", "title": "Python (openai SDK)", "install": "pip install openai", "code": python},
        {"id": "node", "title": "Node.js (openai SDK)", "install": "npm install openai", "code": node},
    ]


async def secret_page(request: Request, caller: Caller, row: KeyRow, secret: str, *, rotated: bool) -> Response:
    """The one page that ever shows a key's secret; never cached, never shown again."""
    people = people_of(request)
    memberships = await people.ctx.repos.memberships.of_user(caller.user.id)
    view = key_view(row, await tenant_names(people, memberships, [row]), utcnow())
    models = row.models or sorted(people.ctx.known_models())
    base = base_url(request)
    response = render(
        request,
        "user_key_created.html",
        status=201,
        caller=caller,
        key=view,
        secret=secret,
        rotated=rotated,
        base_url=base,
        models=models,
        snippets=snippets(base, secret, chat_model(models, None) or "gpt-4o-mini"),
    )
    response.headers["cache-control"] = "no-store"
    return response


@posted
async def key_create(request: Request, caller: Caller, form: Form) -> Response:
    key_form = KeyForm.read(form)
    try:
        row, secret = await people_of(request).keys.create(caller.user, key_form.request())
    except GatewayError as exc:
        error = {"kind": "error", "text": exc.message}
        return await keys_page_response(request, caller, status=exc.status, flash=error, form=key_form)
    return await secret_page(request, caller, row, secret, rotated=False)


@posted
async def key_revoke(request: Request, caller: Caller, form: Form) -> Response:
    await people_of(request).keys.revoke(caller.user, path_id(request.path_params["key_id"], "key_id"))
    return RedirectResponse("/console/keys?done=revoked", status_code=303)


@posted
async def key_rotate(request: Request, caller: Caller, form: Form) -> Response:
    row, secret = await people_of(request).keys.rotate(caller.user, path_id(request.path_params["key_id"], "key_id"))
    return await secret_page(request, caller, row, secret, rotated=True)


# ---------- Playground ----------


@logged_in
async def playground_page(request: Request, caller: Caller) -> Response:
    people = people_of(request)
    models = sorted(people.ctx.known_models())
    selected = chat_model(models, request.query_params.get("model"))
    memberships = await people.ctx.repos.memberships.of_user(caller.user.id)
    return render(
        request,
        "playground.html",
        caller=caller,
        models=models,
        selected=selected,
        has_team=bool(memberships),
        key_name=PLAYGROUND_KEY_NAME,
        ttl_hours=int(PLAYGROUND_TTL.total_seconds() // 3600),
    )


def _json(body: dict[str, Any], status: int) -> Response:
    response = JSONResponse(body, status_code=status)
    secure_headers(response)
    response.headers["cache-control"] = "no-store"
    return response


async def playground_key(request: Request) -> Response:
    """``POST /console/playground/key`` (session + ``X-CSRF-Token``): a fresh 12-hour key for the playground.

    The user's earlier playground keys are revoked first, so reloading the page never piles keys up against
    ``max_keys_per_user``."""
    try:
        caller, _form = await form_caller(request)
        if caller is None:
            return _json({"error": {"message": "Log in first.", "code": "not_authenticated"}}, 401)
        keys = people_of(request).keys
        for old in await keys.mine(caller.user):
            if old.name == PLAYGROUND_KEY_NAME and old.revoked_at is None:
                await keys.revoke(caller.user, old.id)
        row, secret = await keys.create(
            caller.user, KeyRequest(name=PLAYGROUND_KEY_NAME, expires_at=utcnow() + PLAYGROUND_TTL)
        )
    except GatewayError as exc:
        return _json({"error": {"message": exc.message, "code": exc.code}}, exc.status)
    expires = row.expires_at.isoformat() if row.expires_at else None
    return _json({"key": secret, "expires_at": expires, "id": row.id, "name": row.name}, 201)


ROUTES: list[BaseRoute] = [
    Route("/console/keys", keys_page, methods=["GET"]),
    Route("/console/keys", key_create, methods=["POST"]),
    Route("/console/keys/{key_id}/revoke", key_revoke, methods=["POST"]),
    Route("/console/keys/{key_id}/rotate", key_rotate, methods=["POST"]),
    Route("/console/usage", pages_usage.usage_page, methods=["GET"]),
    Route("/console/usage/chart.json", pages_usage.usage_chart, methods=["GET"]),
    Route("/console/playground", playground_page, methods=["GET"]),
    Route("/console/playground/key", playground_key, methods=["POST"]),
    *pages_team.ROUTES,
]
