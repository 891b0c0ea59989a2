"""`QueueSettings`: the PGQUEUE_* environment, read only by entry points."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgqueue import retry


class QueueSettings(BaseSettings):
    """Settings of the queue and its workers, from `PGQUEUE_*` environment variables.

    `database_url` is read from `DATABASE_URL` (no prefix), shared with the application.
    """

    model_config = SettingsConfigDict(env_prefix="PGQUEUE_", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    concurrency: int = Field(default=3, ge=1, le=10_000)
    max_attempts: int = Field(default=3, ge=1)
    retry_delay_ms: int = Field(default=int(retry.DEFAULT_BASE_S * 1000), ge=0)
    retry_cap_s: float = Field(default=retry.DEFAULT_CAP_S, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=3.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    backlog_warn: int = Field(default=10, ge=0)
    progress_interval_s: float = Field(default=1.0, ge=0)
    retention_succeeded_s: float = Field(default=7 * 86400.0, gt=0)
    retention_failed_s: float = Field(default=30 * 86400.0, gt=0)
    vacuum_every_jobs: int = Field(default=20_000, ge=0)
    queues: list[str] = Field(default_factory=lambda: ["default"])
    synchronous_commit: bool = True

    def retry_policy(self) -> retry.RetryPolicy:
        """The backoff these settings describe."""
        base_s = self.retry_delay_ms / 1000
        return retry.RetryPolicy(base_s=base_s, cap_s=max(self.retry_cap_s, base_s))
