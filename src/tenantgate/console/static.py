"""``GET /console/static/<hash>/<name>``: the vendored libraries and the console's own CSS and JS."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tenantgate.console.render import SECURITY_HEADERS, STATIC
from tenantgate.core.errors import NotFound

YEAR = 365 * 86_400


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    entry = STATIC.get(name)
    if entry is None or request.path_params["digest"] != entry.digest:
        raise NotFound("No such file.", code="not_found")
    response = FileResponse(entry.path, media_type=entry.media_type)
    response.headers.update(SECURITY_HEADERS)
    response.headers["cache-control"] = f"public, max-age={YEAR}, immutable"
    return response
