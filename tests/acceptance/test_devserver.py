"""The embedded dev server trusts nobody and makes nothing of its user's readable to others."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devserver.embedded import PASSWORD_FILE, EmbeddedPostgres


@pytest.fixture
def private_home(tmp_path: Path) -> Path:
    """A directory only its owner may enter, as a home directory is."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    return home


@pytest.fixture
def server(private_home: Path) -> Iterator[EmbeddedPostgres]:
    """A fresh embedded server whose data lives inside the private directory."""
    embedded = EmbeddedPostgres(private_home / "pgdata", fast=True)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


async def test_it_answers_only_with_the_password_it_generated(server: EmbeddedPostgres) -> None:
    assert await _select_one(server.url) == 1
    without_password = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _select_one(without_password)
    saved = server.data_dir / PASSWORD_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved.read_text().strip() in server.url


def test_its_parents_do_not_become_listable(server: EmbeddedPostgres, private_home: Path) -> None:
    # Under root the server runs as a user of its own, who may pass through (o+x), no more.
    mode = stat.S_IMODE(private_home.stat().st_mode)
    assert not mode & 0o044, oct(mode)
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700


async def _select_one(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()
