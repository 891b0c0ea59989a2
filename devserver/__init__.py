"""Development-only tools: an embedded Postgres for `make run`, `make test` and the bench.

Nothing in `pgqueue` or in a production entry point imports this package: a worker or an API
without `DATABASE_URL` says so and exits, instead of booting a database of its own.
"""

from __future__ import annotations
