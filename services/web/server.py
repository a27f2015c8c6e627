"""Run the web app with uvicorn in a background thread (its own event loop).

``ciphercare up`` starts it next to the gRPC server; tests start it the same way.
A thread of its own keeps uvicorn away from the caller's signal handling, and the
app's blocking SDK calls run in that loop's worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import uvicorn

from ciphercare.services.platform.settings import Settings
from ciphercare.services.web.app import create_app

log = logging.getLogger("ciphercare.web")
_WILDCARD = {"", "0.0.0.0", "::", "[::]"}


class WebServer:
    """uvicorn serving one ASGI app from a daemon thread."""

    def __init__(self, app: object, host: str, port: int, *, public_url: str = "",
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,  # type: ignore[arg-type]
                                lifespan="off", server_header=False, proxy_headers=False, loop="asyncio",
                                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        self.scheme = "https" if ssl_certfile else "http"
        self.server = uvicorn.Server(config)
        self.host = host
        self.public_url = public_url
        self._thread = threading.Thread(target=self._run, name="ciphercare-web", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc

    def start(self, timeout_s: float = 30.0) -> WebServer:
        """Start serving; returns once the socket listens (raises if it cannot)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                config = self.server.config
                raise OSError(f"cannot serve the web app on {config.host}:{config.port} (port in use? set "
                              "CIPHERCARE_WEB_PORT, or CIPHERCARE_WEB_ENABLED=false)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the web app is not listening")

    @property
    def url(self) -> str:
        return self.public_url or f"{self.scheme}://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)


def start_web(settings: Settings, grpc_port: int) -> WebServer:
    """Serve the web app of ``settings`` against the gRPC services on ``grpc_port`` (same host)."""
    host = "127.0.0.1" if settings.grpc_host in _WILDCARD else settings.grpc_host
    app = create_app(settings, f"{host}:{grpc_port}")
    try:
        tls = settings.web_tls and settings.tls_cert_path is not None
        return WebServer(app, settings.web_host, settings.web_port, public_url=settings.resolved_web_url,
                         ssl_certfile=str(settings.tls_cert_path) if tls else None,
                         ssl_keyfile=str(settings.tls_key_path) if tls else None).start()
    except OSError:
        app.state.web.close()
        raise
