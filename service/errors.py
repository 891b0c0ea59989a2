"""`ApiError`: a 4xx answer in the contract's shape, and the handlers that render errors.

Every error the API answers is `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Starlette raises HTTPException for routing failures; these are their codes in our shape.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


class ApiError(Exception):
    """An error answered to the client as JSON.

    Args:
        status: the HTTP status (4xx, or 503 for readiness).
        code: a stable, machine-readable code, e.g. `not_found`.
        message: a sentence for people.
        details: more structure, e.g. one entry per invalid field.
        headers: extra response headers (e.g. `WWW-Authenticate`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})


def not_found(what: str) -> ApiError:
    """A 404 for `what` (also answered for other users' objects, which must stay invisible)."""
    return ApiError(404, "not_found", f"{what} not found")


def error_response(error: ApiError) -> JSONResponse:
    """The JSON response of `error`."""
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Exception handler for `ApiError`."""
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Exception handler for Starlette's `HTTPException` (unknown route, wrong method)."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(
        ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers or None)
    )
