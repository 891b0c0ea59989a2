"""The storyboard studio at `/`: one server-rendered page and the static files it uses.

The page is public HTML: it holds no data. Its script signs in with a token kept in the
browser's localStorage (taken from a `#token=` fragment, which browsers never send to the
server) and calls the JSON API with it as a bearer header, the event stream included (fetch
streaming: `EventSource` cannot send headers). Everything it loads is served from here, so it
works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from service.settings import ServiceSettings

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"
# The page's own files only: no inline script or style, nothing from another origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def studio(request: Request) -> Response:
    """GET / : the studio page."""
    settings = cast(ServiceSettings, request.scope["state"]["settings"])
    return TEMPLATES.TemplateResponse(
        request,
        "studio.html",
        # The page stops waiting after as long as a stream may stay open (STREAM_MAX_S).
        {"stream_max_s": settings.stream_max_s},
        headers=PAGE_HEADERS,
    )


ROUTES: list[BaseRoute] = [
    Route("/", studio, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC_DIR), name="studio-static"),
]
