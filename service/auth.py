"""API tokens: created by `python -m service create-token`, stored only as SHA-256 hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from typing import Literal

import asyncpg

from service import queries
from service.errors import ApiError

TOKEN_PREFIX = "sbt_"  # makes a leaked token easy to recognise (and to grep for)
MAX_TOKEN_CHARS = 200  # longer bearer values are rejected before hashing
Tier = Literal["free", "pro"]


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """The caller, as its token says."""

    name: str
    tier: Tier
    is_admin: bool


def hash_token(token: str) -> str:
    """The stored form of `token`. Tokens are random, so a plain SHA-256 is enough (no salt)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    conn: asyncpg.Pool | asyncpg.Connection,
    user: str,
    *,
    tier: Tier = "free",
    admin: bool = False,
) -> str:
    """Create a token for `user` and return it; only its hash is stored."""
    if not 1 <= len(user) <= 100 or "\x00" in user:
        raise ValueError("the user name must be 1-100 characters without NUL")
    if tier not in ("free", "pro"):
        raise ValueError(f"tier must be 'free' or 'pro', got {tier!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(queries.INSERT_TOKEN, user, hash_token(token), tier, admin)
    return token


async def authenticate(pool: asyncpg.Pool, authorization: str | None) -> User:
    """The user of an `Authorization: Bearer <token>` header; `ApiError(401)` otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise _unauthorized("invalid token")
    record = await pool.fetchrow(queries.SELECT_TOKEN_USER, hash_token(token))
    if record is None:
        raise _unauthorized("invalid token")
    return User(name=record["user_name"], tier=record["tier"], is_admin=record["is_admin"])


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
