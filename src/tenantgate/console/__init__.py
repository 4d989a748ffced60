"""The web console: server-rendered pages (Jinja2, htmx, Chart.js vendored) for people and operators.

It is a client of the same services as the JSON API (:mod:`tenantgate.people`, the admin repositories), mounted
under ``/console`` on the same origin, never on the ``/v1`` request path. Every page is sent with a strict
Content-Security-Policy (no inline script or style), and every form carries the session's CSRF token.
"""
