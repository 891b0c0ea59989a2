"""The one table of fast worker settings, and the environment a child process starts from.

Production defaults (30 s leases, a 3 s poll, 5 s first retry, 30 s grace) would make every
recovery test wait half a minute. These values are the fast ones every test shares: a worker
in the test's event loop takes `WORKER_OPTIONS`, a worker process `WORKER_ENV`; a test that
needs another value passes it on top. The benchmarks use production defaults, not these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices

from pgqueue import RetryPolicy
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from tests.support.upstream import FakeUpstream

LEASE_S = 2.0  # a dead worker's jobs are reaped within a couple of seconds
POLL_INTERVAL_S = 0.5  # the fallback poll; notifications wake workers sooner
RETRY_DELAY_S = 0.05  # the first retry's delay, doubling after
RETRY_CAP_S = 1.0  # the longest retry delay
SHUTDOWN_GRACE_S = 5.0  # what SIGTERM lets running jobs finish in
PROGRESS_INTERVAL_S = 0.0  # every progress update is written (tests read them)
IMAGE_TIMEOUT_S = 5.0  # one upstream call's limit in tests (a hung call is cut off sooner)

# Keyword arguments of an in-process `Worker` (no jitter, so retry timings are exact).
WORKER_OPTIONS: dict[str, Any] = {
    "lease_s": LEASE_S,
    "poll_interval_s": POLL_INTERVAL_S,
    "retry_policy": RetryPolicy(base_s=RETRY_DELAY_S, cap_s=RETRY_CAP_S, jitter=0),
    "shutdown_grace_s": SHUTDOWN_GRACE_S,
    "progress_interval_s": PROGRESS_INTERVAL_S,
}

# The same settings for a worker process (`python -m pgqueue.worker`, `python -m service
# worker`), which reads PGQUEUE_*; the environment cannot turn the retry jitter off.
WORKER_ENV: dict[str, str] = {
    "PGQUEUE_LEASE_S": str(LEASE_S),
    "PGQUEUE_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
    "PGQUEUE_RETRY_DELAY_MS": str(round(RETRY_DELAY_S * 1000)),
    "PGQUEUE_RETRY_CAP_S": str(RETRY_CAP_S),
    "PGQUEUE_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
    "PGQUEUE_PROGRESS_INTERVAL_S": str(PROGRESS_INTERVAL_S),
}


def _service_variables() -> tuple[str, ...]:
    # Read off ServiceSettings, so a setting added there is never inherited by accident.
    names = []
    for name, field in ServiceSettings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.append(alias)
        elif isinstance(alias, AliasChoices):
            names.extend(choice for choice in alias.choices if isinstance(choice, str))
        else:
            names.append(name.upper())
    return tuple(names)


# The environment variables the service reads (DATABASE_URL, IMAGE_*, STORYBOARD_*, ...).
SERVICE_VARIABLES = _service_variables()


def child_env() -> dict[str, str]:
    """Our environment without PGQUEUE_* or the service's settings: where a child starts from.

    A developer's own DATABASE_URL, IMAGE_API_KEY or PGQUEUE_CONCURRENCY must not reach a
    process a test starts; the test says what it wants instead.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PGQUEUE_") and key not in SERVICE_VARIABLES
    }


def service_env(
    database_url: str,
    media_dir: Path,
    upstream: FakeUpstream | None = None,
    **extra: str,
) -> dict[str, str]:
    """The settings of an API or worker process of the storyboard service.

    Args:
        database_url: its DATABASE_URL.
        media_dir: its MEDIA_DIR.
        upstream: a fake upstream to call (`IMAGE_PROVIDER=http`); None: the local renderer.
        extra: further variables, e.g. `STORYBOARD_CONCURRENCY="3"`, or `**WORKER_ENV`.
    """
    env = {
        "DATABASE_URL": database_url,
        "MEDIA_DIR": str(media_dir),
        "IMAGE_TIMEOUT_S": str(IMAGE_TIMEOUT_S),
    }
    if upstream is not None:
        env.update(
            IMAGE_PROVIDER="http",
            IMAGE_API_BASE=upstream.base_url,
            IMAGE_API_KEY=upstream.api_key or "",
            IMAGE_MODEL="seedream-test",
        )
    env.update(extra)
    return env
