"""The dashboard's requests and answers beside its pages: where it is mounted, this page's
address, small url-encoded forms, the same-origin check of POSTs, and redirects that carry what
was done."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pgqueue import params

MAX_FORM_BYTES = 8192  # the largest form body read: a bulk action's filter and a path back
# The query parameters a finished action's notice reads; never carried on to the next page.
NOTICE_FIELDS = ("done", "job", "queue", "count", "stopping")


def mount_path(request: Request) -> str:
    """The path the dashboard is mounted at, without a trailing slash ('' at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def here(request: Request) -> str:
    """This page's path and query, where an action on it comes back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def query(request: Request, **changes: Any) -> str:
    """This page's query string with `changes` (None removes a parameter)."""
    kept = {k: v for k, v in request.query_params.items() if k not in NOTICE_FIELDS}
    kept.update({k: str(v) for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        kept.pop(key, None)
    return "?" + urlencode(kept) if kept else "?"


async def back(request: Request, **notice: Any) -> Response:
    """303 to the page the action was sent from (its form's `next`, a path of this dashboard
    only: never an address elsewhere), with what was done."""
    fields = await form_fields(request)
    target = fields.get("next", "")
    base = mount_path(request)
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{base}/") or "\\" in target:
        target = f"{base}/"
    return redirect(target, **notice)


def redirect(target: str, **notice: Any) -> Response:
    """303 to `target` (a path of this dashboard) with what was done in its query."""
    parts = urlsplit(target)
    fields = [(k, v) for k, v in parse_qsl(parts.query) if k not in NOTICE_FIELDS]
    fields += [(k, str(v)) for k, v in notice.items()]
    return RedirectResponse(f"{parts.path}?{urlencode(fields)}", status_code=303)


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (every form here is one). Parsed here rather than
    by Starlette's `request.form()`, which needs python-multipart for this too; a body larger
    than any of ours, or of another type, reads as no fields."""
    declared = request.headers.get("content-length", "0")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    if params.whole_number(declared, 0, MAX_FORM_BYTES) is None:
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        return dict(parse_qsl(body.decode(), max_num_fields=20))
    except (UnicodeDecodeError, ValueError):  # not text, or more fields than any form here
        return {}


def same_origin(request: Request) -> bool:
    """False for a POST whose Origin names another site (None or absent: not a browser's
    cross-site form, which always sends one)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host
