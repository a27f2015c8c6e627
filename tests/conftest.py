"""Shared fixtures: a real ciphercare server on loopback, tokens from the real development issuer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest_helpers import free_port

from ciphercare.services.auth.devissuer import DevIssuer
from ciphercare.services.client import CiphercareClient
from ciphercare.services.server import Application
from ciphercare.services.settings import Settings, load_settings


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
    base: dict[str, object] = {"data_dir": data_dir, "grpc_port": 0, "dev_issuer_port": free_port()}
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


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = make_settings(tmp_path_factory.mktemp("ciphercare"))
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


TokenFactory = Callable[..., str]
