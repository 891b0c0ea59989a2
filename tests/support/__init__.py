"""What the tests and the benchmarks share: one of each tool, imported as modules.

- `db`: find a Postgres server, migrate a template once, hand out fresh databases cloned from it.
- `processes`: real child processes (`python -m pgqueue.worker`, `python -m service api`, ...),
  each with a log file, signalled, awaited, and killed when the harness closes.
- `upstream`: a fake OpenAI-images-compatible upstream on loopback that answers as scripted
  and records every call under its request identity (the `X-Request-Id` header).
- `settings`: the one table of fast worker settings, and the environment a child starts from.
- `ports`: a free loopback port.
- `wait`: `wait_for(predicate, timeout)`, waiting on conditions instead of sleeping.

`bench/` imports these too, so a benchmark starts its processes and fakes its upstream exactly
as the acceptance tests do. Fixtures wrapping them live in `tests/conftest.py`.
"""
