"""Shared fixtures: a real ciphercare server on loopback, tokens from the real development issuer.

The helpers themselves live in the importable test kit (tests/testkit/); this file only makes fixtures of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from testkit.server import DATABASE_BACKENDS, Env, ServerThread, fresh_postgres_database, make_settings

from ciphercare.services.identity.devissuer import DevIssuer


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The off-chain store URL for a module: "" (SQLite in the data dir, the default) or a fresh PostgreSQL db."""
    if request.param == "sqlite":
        yield ""
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def server_kit() -> SimpleNamespace:
    """ServerThread, Env and make_settings for tests that start (and restart) servers of their own."""
    return SimpleNamespace(ServerThread=ServerThread, Env=Env, make_settings=make_settings)


@pytest.fixture(params=DATABASE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An explicit off-chain store URL for one test: a SQLite file in tmp_path or a fresh PostgreSQL db."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'offchain.db'}"
        return
    with fresh_postgres_database("cs") as url:
        yield url


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Env]:
    settings = make_settings(tmp_path_factory.mktemp("ciphercare"), database_url=database_url)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


TokenFactory = Callable[..., str]
