"""Every console route, mounted by the app factory. Pages live in ``pages_*`` modules, one per audience."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from tenantgate.console import pages_admin, pages_auth, pages_user
from tenantgate.console.static import static_file


def console_routes() -> list[BaseRoute]:
    auth = pages_auth
    routes: list[BaseRoute] = [
        Route("/", auth.root, methods=["GET"]),
        Route("/console", auth.root, methods=["GET"]),
        Route("/console/", auth.home, methods=["GET"]),
        Route("/console/static/{digest}/{name:path}", static_file, methods=["GET", "HEAD"]),
        Route("/console/login", auth.login_page, methods=["GET"]),
        Route("/console/login", auth.login_submit, methods=["POST"]),
        Route("/console/signup", auth.signup_page, methods=["GET"]),
        Route("/console/signup", auth.signup_submit, methods=["POST"]),
        Route("/console/logout", auth.logout, methods=["POST"]),
        Route("/console/link", auth.link_page, methods=["GET"]),
        Route("/console/link", auth.link_submit, methods=["POST"]),
        Route("/console/reset", auth.reset_page, methods=["GET"]),
        Route("/console/reset", auth.reset_submit, methods=["POST"]),
        Route("/console/account", auth.account_page, methods=["GET"]),
        Route("/console/account/password", auth.password_submit, methods=["POST"]),
        Route("/console/account/sessions/end", auth.sessions_end, methods=["POST"]),
    ]
    fallback: list[BaseRoute] = [Route("/console/{path:path}", auth.not_found, methods=["GET", "HEAD"])]
    return routes + pages_user.ROUTES + pages_admin.ROUTES + fallback
