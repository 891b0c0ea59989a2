"""The storyboard service: an HTTP API (Starlette) and job handlers (pgqueue).

    python -m service run        # embedded Postgres, migrations, API and one worker

`create_app(settings)` builds the API; `service.jobs:registry` holds the handlers a
`python -m pgqueue.worker` runs.
"""

from __future__ import annotations

__all__ = ["ServiceSettings", "create_app"]

from service.app import create_app
from service.settings import ServiceSettings
