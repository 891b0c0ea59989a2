"""`ApiError`: a 4xx answer in the contract's shape, and the handlers that render errors.

Every error the API answers is `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgqueue import pooler_hint

logger = logging.getLogger(__name__)

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


# Failures to reach the database, as distinct from a bug in a statement or a local file
# error: the server is down or restarting (refused or reset connections, a connection cut
# under a query, "starting up" and shutdown answers). The request was fine; the client should
# retry, so they answer 503. Anything else (asyncpg's own argument errors, a statement
# timeout, a media file's PermissionError) is a 500.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset or aborted connections
    socket.gaierror,  # the database host does not resolve
    TimeoutError,  # connect timeouts
    asyncpg.PostgresConnectionError,  # class 08, and a connection closed under the query
    asyncpg.exceptions.AdminShutdownError,  # 57P01
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
)
RETRY_AFTER_S = 2  # seconds a client should wait before retrying an outage


async def handle_database_unavailable(request: Request, exc: Exception) -> Response:
    """A 503 in the contract's shape while the database cannot be reached."""
    logger.warning("database unavailable: %r", exc, extra={"action": "database_unavailable"})
    return error_response(
        ApiError(
            503,
            "database_unavailable",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    )


# What asyncpg raises on a connection a failover cut under a request: using it, or leaving a
# transaction block on it (`InterfaceError`: "... connection is closed", often with the outage
# as its context), or using a pooled connection handed out between the server's "terminating
# connection" message and the socket's close (`InternalClientError`: "cannot switch to state
# ..."). The worker retries both (pgqueue.worker.transient); the pool replaces the connection
# on release. Other `InterfaceError`s (bad arguments: `DataError`) stay 500s.
CUT_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def handle_cut_connection(request: Request, exc: Exception) -> Response:
    """A 503 for a connection an outage cut (see CUT_CONNECTION); else the last resort."""
    if isinstance(exc, asyncpg.InternalClientError) or "connection is closed" in str(exc):
        return await handle_database_unavailable(request, exc)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DATABASE_UNAVAILABLE) and isinstance(seen, Exception):
            return await handle_database_unavailable(request, seen)
        seen = seen.__cause__ or seen.__context__
    logger.error("unexpected %r", exc, exc_info=exc, extra={"action": "internal_error"})
    return await handle_unexpected(request, exc)


# What asyncpg's statement cache meets behind a transaction-mode pooler when
# DATABASE_POOL_MODE was not set: its named statements are missing or taken on the server
# connection the pooler handed over. Not the client's fault, and not an outage.
POOLER_MISMATCH: tuple[type[BaseException], ...] = (
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.DuplicatePreparedStatementError,
)


async def handle_pooler_mismatch(request: Request, exc: Exception) -> Response:
    """A 503 naming the setting, when DATABASE_URL is pooled but configured as direct."""
    hint = pooler_hint(exc)
    if hint is None:
        return await handle_unexpected(request, exc)
    logger.error("%s (%r)", hint, exc, extra={"action": "pooler_mismatch"})
    return error_response(ApiError(503, "database_misconfigured", hint))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The last resort: a 500 in the contract's shape (the traceback goes to the log)."""
    return error_response(ApiError(500, "internal_error", "internal server error"))
