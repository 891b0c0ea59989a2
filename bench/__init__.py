"""`python -m bench`: pgqueue's benchmarks (`make bench`), side by side with its peers.

Each scenario runs against a fresh database migrated by alembic on the same server the tests
use, drives the real worker daemon as a subprocess, and reads its figures back from SQL.
The figures land in `bench/results.json` and `bench/results.md`. See `bench/README.md`.
"""
