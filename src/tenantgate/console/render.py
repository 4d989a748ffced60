"""Rendering: the Jinja2 environment (autoescaped), static file URLs with a content hash, security headers.

Static files are served from a manifest built at import time (name -> content hash), so a URL names exactly one
version of a file and can be cached for a year; only files in the manifest are served (no path traversal).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tenantgate import __version__

STATIC_PREFIX: Final = "/console/static"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: Path
    digest: str
    media_type: str


def _manifest() -> dict[str, StaticFile]:
    root = Path(str(resources.files("tenantgate.console") / "static"))
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        if path.is_file():
            name = path.relative_to(root).as_posix()
            media = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if media.startswith("text/") or media in ("application/javascript", "text/javascript"):
                media += "; charset=utf-8"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            files[name] = StaticFile(path, digest, media)
    return files


STATIC: Final = _manifest()


def static_url(name: str) -> str:
    entry = STATIC.get(name)
    if entry is None:
        raise KeyError(f"no static file {name!r}")
    return f"{STATIC_PREFIX}/{entry.digest}/{name}"


_ENV: Final = Environment(
    loader=PackageLoader("tenantgate.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(static=static_url, version=__version__)


USER_NAV: Final = (
    ("/console/keys", "Keys"),
    ("/console/usage", "Usage"),
    ("/console/playground", "Playground"),
    ("/console/tenants", "Teams"),
    ("/console/account", "Account"),
)
ADMIN_NAV: Final = (
    ("/console/admin/tenants", "Tenants"),
    ("/console/admin/users", "Users"),
    ("/console/admin/keys", "All keys"),
    ("/console/admin/backends", "Backends"),
    ("/console/admin/usage", "Analytics"),
    ("/console/admin/audit", "Audit"),
    ("/console/admin/settings", "Settings"),
)


def nav_for(path: str, links: tuple[tuple[str, str], ...]) -> list[tuple[str, str, bool]]:
    """Navigation links, the one for the current page marked active."""
    return [(href, label, path == href or path.startswith(href + "/")) for href, label in links]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page with the security headers; ``context`` may hold ``caller`` (sets ``user``, ``csrf_token``, ``nav``)."""
    caller = context.pop("caller", None)
    if caller is not None:
        context.setdefault("user", caller.user)
        context.setdefault("csrf_token", caller.csrf_token)
        context.setdefault("nav", nav_for(request.url.path, USER_NAV))
        if caller.user.is_admin:  # a second bar, so twelve links never wrap the first one
            context.setdefault("admin_nav", nav_for(request.url.path, ADMIN_NAV))
    context.setdefault("request", request)
    body = _ENV.get_template(template).render(**context)
    response = HTMLResponse(body, status_code=status)
    secure_headers(response)
    return response


def secure_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("cache-control", "no-store")
    return response
