"""A real ciphercare server on loopback for tests: the server thread, settings, an environment of tokens and
clients, and fresh PostgreSQL databases. Imported by tests/conftest.py (fixtures) and by tests directly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.pool import NullPool

from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.settings import Settings, load_settings
from ciphercare.services.platform.wiring import Application
from testkit import component_missing
from testkit.process import free_port

__all__ = ["DATABASE_BACKENDS", "Env", "ServerThread", "fresh_postgres_database", "make_settings",
           "postgres_admin_url"]

class ServerThread:
    """An :class:`Application` serving on its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Application | None = None
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="ciphercare-test-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self.app = Application.from_settings(self.settings)
            ready = asyncio.Event()
            ports: list[int] = []
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self.app.serve(ready, ports, self._stop))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if ports:
                self.port = ports[0]
            self._ready.set()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test by start()
            self._error = exc
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("server did not start within 60 s")
        if self._error is not None or not self.port:
            raise RuntimeError(f"server failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._stop.set)  # type: ignore[union-attr]
        self._thread.join(30)
        if self.app is not None:
            self.app.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"data_dir": data_dir, "grpc_port": 0, "dev_issuer_port": free_port(), "metrics_port": 0}
    base.update(overrides)
    return load_settings(**base)


@dataclass
class Env:
    """A running server plus helpers to mint tokens and clients."""

    server: ServerThread
    issuer: DevIssuer

    @property
    def settings(self) -> Settings:
        return self.server.settings

    @property
    def app(self) -> Application:
        if self.server.app is None:
            raise RuntimeError("server not started")
        return self.server.app

    def token(self, *roles: str, org: str = "", pid: str | None = None, subject: str | None = None,
              ttl_s: int = 600, **claims: object) -> str:
        subject = subject or f"user-{'-'.join(roles)}-{org or pid or 'x'}"
        return self.issuer.issue(subject=subject, roles=list(roles), org=org, pid=pid, ttl_s=ttl_s,
                                 extra_claims=claims or None)

    def client(self, token: str) -> CiphercareClient:
        return CiphercareClient.connect(self.server.target, token, deadline_s=15.0)

    def patient(self, pid: str) -> CiphercareClient:
        return self.client(self.token("patient", pid=pid, subject=f"patient-{pid}"))

    def hospital(self, org: str = "hospital-a") -> CiphercareClient:
        return self.client(self.token("hospital", org=org, subject=f"svc-{org}"))

    def officer(self) -> CiphercareClient:
        return self.client(self.token("compliance-officer", org="regulator", subject="officer-1"))


# --- The off-chain store on SQLite and on a real PostgreSQL --------------------------------------------
#
# scripts/setup/10-postgres.sh starts the server and exports CIPHERCARE_TEST_POSTGRES_URL (a superuser URL).
# Isolation: every test module (every store test) gets a database of its own, created empty and migrated
# by the code under test, dropped afterwards. Rolling back a transaction is not an option: the servicers
# commit, and the concurrency tests need several connections that see each other's commits.

DATABASE_BACKENDS = ("sqlite", "postgresql")


def postgres_admin_url() -> str:
    """The PostgreSQL server's superuser URL; skips (fails under CI=true) when there is none."""
    url = os.environ.get("CIPHERCARE_TEST_POSTGRES_URL", "")
    if not url:
        message = "CIPHERCARE_TEST_POSTGRES_URL is not set (scripts/setup/10-postgres.sh starts PostgreSQL)"
        component_missing(message)
    return url


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "cc") -> Iterator[str]:
    """A new, empty PostgreSQL database for one test or module; dropped (connections and all) afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()
