"""Readable API docs at `/docs`: Swagger UI reading `/openapi.json`.

Swagger UI's files come from the `swagger-ui-bundle-v2` package (Swagger UI 5, which reads
OpenAPI 3.1; `swagger-ui-bundle` ships 4.x, which cannot render this document), served from
its installed directory: nothing is fetched from a CDN, so the docs work offline and under the
same kind of Content-Security-Policy as the studio. The page and its start-up script are ours.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

PAGE = (Path(__file__).resolve().parent / "templates" / "docs.html").read_text()
ASSETS = "/docs/assets"
# Scripts and styles of this origin only. Swagger UI sets style attributes and uses data:
# images for its icons; it loads nothing else.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
        " object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def docs(request: Request) -> Response:
    """GET /docs: the page (static HTML; its script loads /openapi.json)."""
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


ROUTES: list[BaseRoute] = [
    Route("/docs", docs, methods=["GET"]),
    Mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets"),
]
