"""`QueueSettings`: the PGQUEUE_* environment, read only by entry points."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgqueue import database, retry
from pgqueue.database import Database, PoolMode
from pgqueue.worker import config as defaults
from pgqueue.worker.config import WorkerConfig


class QueueSettings(BaseSettings):
    """Settings of the queue and its workers, from `PGQUEUE_*` environment variables.

    `database_url` is read from `DATABASE_URL` (no prefix), shared with the application. The
    defaults are `WorkerConfig`'s: this class only says where each value comes from.
    """

    model_config = SettingsConfigDict(env_prefix="PGQUEUE_", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    database_pool_mode: PoolMode = Field(
        default=PoolMode.SESSION, validation_alias=database.POOL_MODE_VARIABLE
    )
    database_direct_url: str | None = Field(
        default=None, validation_alias=database.DIRECT_URL_VARIABLE
    )
    concurrency: int = Field(default=defaults.DEFAULT_CONCURRENCY, ge=1, le=10_000)
    max_attempts: int = Field(default=3, ge=1)
    retry_delay_ms: int = Field(
        default=int(retry.DEFAULT_BASE_S * 1000), ge=0, le=int(retry.MAX_DELAY_S * 1000)
    )
    retry_cap_s: float = Field(default=retry.DEFAULT_CAP_S, gt=0, le=retry.MAX_DELAY_S)
    lease_s: float = Field(default=defaults.DEFAULT_LEASE_S, gt=0, le=defaults.MAX_DURATION_S)
    poll_interval_s: float = Field(
        default=defaults.DEFAULT_POLL_INTERVAL_S, gt=0, le=defaults.MAX_DURATION_S
    )
    shutdown_grace_s: float = Field(
        default=defaults.DEFAULT_SHUTDOWN_GRACE_S, ge=0, le=defaults.MAX_DURATION_S
    )
    backlog_warn: int = Field(default=defaults.DEFAULT_BACKLOG_WARN, ge=0)
    progress_interval_s: float = Field(
        default=defaults.DEFAULT_PROGRESS_INTERVAL_S, ge=0, le=defaults.MAX_DURATION_S
    )
    retention_succeeded_s: float = Field(
        default=defaults.DEFAULT_RETENTION_SUCCEEDED_S, gt=0, le=defaults.MAX_DURATION_S
    )
    retention_failed_s: float = Field(
        default=defaults.DEFAULT_RETENTION_FAILED_S, gt=0, le=defaults.MAX_DURATION_S
    )
    vacuum_every_jobs: int = Field(default=defaults.DEFAULT_VACUUM_EVERY_JOBS, ge=0)
    transaction_idle_limit_s: float | None = Field(default=None, gt=0, le=defaults.MAX_DURATION_S)
    queues: list[str] = Field(default_factory=lambda: list(defaults.DEFAULT_QUEUES))
    synchronous_commit: bool = True

    def database(self) -> Database | None:
        """Where `DATABASE_URL` leads and how (None when it is not set)."""
        if self.database_url is None:
            return None
        return Database(
            self.database_url, self.database_pool_mode, direct_url=self.database_direct_url
        )

    def retry_policy(self) -> retry.RetryPolicy:
        """The backoff these settings describe."""
        base_s = self.retry_delay_ms / 1000
        return retry.RetryPolicy(base_s=base_s, cap_s=max(self.retry_cap_s, base_s))

    def worker_config(self, **overrides: object) -> WorkerConfig:
        """The `WorkerConfig` these settings describe; `overrides` (e.g. a CLI's flags) win."""
        values: dict[str, object] = {
            "queues": self.queues,
            "concurrency": self.concurrency,
            "lease_s": self.lease_s,
            "poll_interval_s": self.poll_interval_s,
            "retry_policy": self.retry_policy(),
            "shutdown_grace_s": self.shutdown_grace_s,
            "backlog_warn": self.backlog_warn,
            "progress_interval_s": self.progress_interval_s,
            "retention_succeeded_s": self.retention_succeeded_s,
            "retention_failed_s": self.retention_failed_s,
            "vacuum_every_jobs": self.vacuum_every_jobs,
            "transaction_idle_limit_s": self.transaction_idle_limit_s,
            "synchronous_commit": self.synchronous_commit,
        }
        values.update(overrides)
        return WorkerConfig(**values)  # type: ignore[arg-type]
