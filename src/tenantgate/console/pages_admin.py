"""Console pages for platform admins: tenants, users and invites, every key, backends with live health, usage
analytics, the audit log and the effective settings. Every page starts with ``admin_only`` (a 403 page for
everyone else) and acts through the admin API's own functions; the pages live in ``admin_*`` modules."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tenantgate.console import admin_backends, admin_people, admin_reports, admin_tenants, admin_usage


async def admin_home(request: Request) -> Response:
    return RedirectResponse("/console/admin/tenants", status_code=303)


ROUTES: list[BaseRoute] = [
    Route("/console/admin", admin_home, methods=["GET"]),
    Route("/console/admin/", admin_home, methods=["GET"]),
    *admin_tenants.ROUTES,
    *admin_people.ROUTES,
    *admin_backends.ROUTES,
    *admin_usage.ROUTES,
    *admin_reports.ROUTES,
]
