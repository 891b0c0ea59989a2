"""`ServiceSettings`: the storyboard service's environment, read only by entry points."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgqueue import Breaker, Database, PoolMode, RateLimit

DEFAULT_IMAGE_TIMEOUT_S = 55.0  # seconds; below a 60 s platform limit, unlike the old 50/60 pair
DEFAULT_STORYBOARD_TIMEOUT_S = 300.0  # seconds a storyboard may stay `generating` unattended
DEFAULT_STORYBOARD_CONCURRENCY = 3  # shots of one project generating at once
DEFAULT_MAX_PENDING_PER_USER = 200  # storyboard jobs one user may have pending at once
STORE_MARGIN_S = 5.0  # seconds an attempt may take beyond its two upstream requests
DEFAULT_DRAIN_BUDGET_S = 50.0  # seconds; under a serverless function's usual 60 s limit
MIN_DRAIN_BUDGET_S = 1.0
MAX_DRAIN_BUDGET_S = 300.0
DEFAULT_STREAM_MAX_S = 300.0  # seconds one live-progress stream stays open
DEFAULT_STREAM_MAX_PER_USER = 8  # live-progress streams one user may hold open per API process
DEFAULT_API_MAX_CONNECTIONS = 1000  # connections one API process serves at once
DEFAULT_IMAGE_BREAKER = "5/30s,open=30s"  # IMAGE_BREAKER
ADAPTIVE_PERIOD_S = 1.0  # the learnt rate's window when IMAGE_RATE_LIMIT is unset
IMAGE_RATE_LIMIT_KEY = "storyboard.upstream"  # the pgqueue rate-limit key of upstream calls


class ServiceSettings(BaseSettings):
    """Settings of the API and the job handlers, from the environment (see CONTRACT.md).

    Args:
        database_url: `DATABASE_URL`; None means the embedded server under `.pgdata/`.
        database_pool_mode: `DATABASE_POOL_MODE`, `transaction` behind a transaction pooler.
        database_direct_url: `DATABASE_DIRECT_URL`, a session-mode URL for LISTEN.
        cron_secret: `CRON_SECRET`, a bearer secret that may call the drain endpoint.
        metrics_token: `METRICS_TOKEN`; when set, `/metrics` needs it as a bearer token.
        drain_budget_s: `DRAIN_BUDGET_S`, the default time budget of one drain call.
        image_provider: `local` (offline Pillow renderer) or `http` (Seedream-compatible API).
        image_api_base: for `http`, the base URL; requests go to `{base}/images/generations`.
        image_api_key: for `http`, the bearer key.
        image_model: for `http`, the model name sent upstream.
        image_timeout_s: one upstream call's time limit, in seconds.
        image_rate_limit: `IMAGE_RATE_LIMIT`, `N/s`, `N/min` or `N/h`: at most N upstream
            calls started per period, across all workers and drains (unset: no limit).
        storyboard_concurrency: most shots of one project generating at once, across workers.
        storyboard_timeout_s: a storyboard `generating` this long with no live job reads failed.
        storyboard_max_pending_per_user: most storyboard jobs one user may have pending
            (`generating` shots); generate past it answers 429.
        media_dir: where images are written.
        host, port: the API's address.
        max_attempts: attempts per storyboard job (`PGQUEUE_MAX_ATTEMPTS`, shared with workers).
        queue: the pgqueue queue storyboard jobs go to (`STORYBOARD_QUEUE`); workers must
            take jobs from it (`--queue`, `PGQUEUE_QUEUES`).
        stream_max_s: `STREAM_MAX_S`, how long one live-progress stream stays open (the
            studio stops waiting after as long).
        stream_max_per_user: `STREAM_MAX_PER_USER`, most live-progress streams one user may
            hold open in one API process; the next answers 429 with `Retry-After`.
        api_max_connections: `API_MAX_CONNECTIONS`, connections one API process serves at
            once (uvicorn's `limit_concurrency`; lowered to fit the descriptor limit).
        image_rate_adaptive: `IMAGE_RATE_ADAPTIVE`: the upstream start rate is learnt (a 429
            halves it, successes win it back), never above `IMAGE_RATE_LIMIT` when set.
        image_breaker: `IMAGE_BREAKER`, `N/Ws,open=Os` or `off`: the upstream's breaker.
        image_cost: `IMAGE_COST`, credits one upstream call costs.
        budget_free_per_day, budget_pro_per_day: `BUDGET_FREE_PER_DAY`, `BUDGET_PRO_PER_DAY`:
            credits a user of that tier may spend per UTC day (unset: no limit).
        storyboard_fairness: `STORYBOARD_FAIRNESS`, `user` (users take turns) or `none`.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    database_pool_mode: PoolMode = Field(
        default=PoolMode.SESSION, validation_alias="DATABASE_POOL_MODE"
    )
    database_direct_url: str | None = Field(default=None, validation_alias="DATABASE_DIRECT_URL")
    cron_secret: str | None = Field(default=None, min_length=16)
    # Unset (or empty): /metrics is open, as Prometheus scrapes by default.
    metrics_token: str | None = None
    drain_budget_s: float = Field(
        default=DEFAULT_DRAIN_BUDGET_S, ge=MIN_DRAIN_BUDGET_S, le=MAX_DRAIN_BUDGET_S
    )
    image_provider: Literal["local", "http"] = "local"
    image_api_base: str = ""
    image_api_key: str = ""
    image_model: str = ""
    image_timeout_s: float = Field(default=DEFAULT_IMAGE_TIMEOUT_S, gt=0)
    image_rate_limit: str | None = None
    # IMAGE_MAX_BYTES: the largest image accepted from the upstream (answer body or download).
    image_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    storyboard_concurrency: int = Field(default=DEFAULT_STORYBOARD_CONCURRENCY, ge=1, le=1000)
    storyboard_timeout_s: float = Field(default=DEFAULT_STORYBOARD_TIMEOUT_S, gt=0)
    storyboard_max_pending_per_user: int = Field(default=DEFAULT_MAX_PENDING_PER_USER, ge=1)
    media_dir: Path = Path("media")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_attempts: int = Field(default=3, ge=1, validation_alias="PGQUEUE_MAX_ATTEMPTS")
    queue: str = Field(default="default", min_length=1, validation_alias="STORYBOARD_QUEUE")
    stream_max_s: float = Field(default=DEFAULT_STREAM_MAX_S, gt=0)
    stream_max_per_user: int = Field(default=DEFAULT_STREAM_MAX_PER_USER, ge=1)
    api_max_connections: int = Field(default=DEFAULT_API_MAX_CONNECTIONS, ge=1)
    image_rate_adaptive: bool = True
    image_breaker: str = DEFAULT_IMAGE_BREAKER
    image_cost: Decimal = Field(default=Decimal(1), ge=0, lt=10**12)
    budget_free_per_day: Decimal | None = Field(default=None, ge=0, lt=10**12)
    budget_pro_per_day: Decimal | None = Field(default=None, ge=0, lt=10**12)
    storyboard_fairness: Literal["user", "none"] = "user"

    @field_validator("image_breaker")
    @classmethod
    def _valid_breaker(cls, value: str) -> str:
        try:
            Breaker.parse(value)
        except ValueError as exc:
            raise ValueError(f"IMAGE_BREAKER: {exc}") from None
        return value.strip()

    @property
    def breaker(self) -> Breaker | None:
        """`IMAGE_BREAKER` as a pgqueue breaker, or None when `off`."""
        return Breaker.parse(self.image_breaker)

    def budget_per_day(self, tier: str) -> Decimal | None:
        """The daily budget of a user of `tier` without one of their own (None: no limit)."""
        return self.budget_pro_per_day if tier == "pro" else self.budget_free_per_day

    @field_validator("image_rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str | None) -> str | None:
        # Read here, so that a bad value stops the process at startup with its reason.
        if value is None or not value.strip():
            return None
        try:
            RateLimit.parse(value)
        except ValueError as exc:
            raise ValueError(f"IMAGE_RATE_LIMIT: {exc}") from None
        return value.strip()

    @property
    def rate_limit(self) -> RateLimit | None:
        """`IMAGE_RATE_LIMIT` as a pgqueue rate limit, or None when unset."""
        return None if self.image_rate_limit is None else RateLimit.parse(self.image_rate_limit)

    def database(self) -> Database:
        """Where `DATABASE_URL` leads and how (it must be set)."""
        if self.database_url is None:
            raise ValueError("DATABASE_URL is not set")
        return Database(
            self.database_url, self.database_pool_mode, direct_url=self.database_direct_url
        )

    @property
    def storyboard_job_timeout_s(self) -> float:
        """One storyboard attempt's time limit: the call, the download, and a margin.

        `2 x IMAGE_TIMEOUT_S + STORE_MARGIN_S` (115 s by default): each of the two upstream
        requests is cut at `IMAGE_TIMEOUT_S`; the margin is for storing the image and the
        fenced write. The worker cancels a handler past it, even one whose heartbeats live.
        """
        return 2 * self.image_timeout_s + STORE_MARGIN_S

    def check(self) -> None:
        """Raise `ValueError` when the settings cannot work together, saying how to fix it."""
        if self.image_provider == "http" and not self.image_api_base:
            raise ValueError(
                "IMAGE_PROVIDER=http needs IMAGE_API_BASE, e.g. "
                "https://ark.ap-southeast.bytepluses.com/api/v3"
            )
        if self.storyboard_job_timeout_s > self.storyboard_timeout_s:
            # An attempt allowed to outlive the storyboard would keep it `generating` past the
            # promised STORYBOARD_TIMEOUT_S.
            raise ValueError(
                f"STORYBOARD_TIMEOUT_S={self.storyboard_timeout_s:g} is shorter than one "
                f"attempt may take (2 x IMAGE_TIMEOUT_S + {STORE_MARGIN_S:g} = "
                f"{self.storyboard_job_timeout_s:g} s): raise STORYBOARD_TIMEOUT_S or lower "
                "IMAGE_TIMEOUT_S"
            )
