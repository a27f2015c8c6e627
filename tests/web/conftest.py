"""Browser-test fixtures: real services, the real web app, Debian's Chromium driven by Playwright.

The gRPC services run in a :class:`ServerThread` (with the development issuer and
its browser login), the web app in uvicorn on a loopback port, and Chromium is
``/usr/bin/chromium`` from Debian (``scripts/setup/30-chromium.sh`` installs it and
exports ``CIPHERCARE_TEST_CHROMIUM``); Playwright never downloads a browser.
Under ``CI=true`` a missing Chromium fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from testkit import component_missing
from testkit.process import free_port
from testkit.server import Env, ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.web.app import create_app
from ciphercare.services.web.server import WebServer

#: Flags that keep Chromium quiet on a closed network (no background connections that get refused).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """Debian's Chromium (exported by scripts/setup/30-chromium.sh), or skip/fail."""
    path = os.environ.get("CIPHERCARE_TEST_CHROMIUM") or shutil.which("chromium") or ""
    if not path or not os.access(path, os.X_OK):
        message = ("Chromium not found: install Debian's chromium (source scripts/setup/30-chromium.sh) "
                   "or set CIPHERCARE_TEST_CHROMIUM")
        component_missing(message)
    return path


@dataclass
class WebEnv(Env):
    """Env plus the web app: ``base`` is its URL."""

    web: WebServer | None = None
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def web_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    """Real services (ServerThread, dev issuer with browser login) and the web app on loopback ports."""
    web_port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("ciphercare-web"), web_port=web_port)
    server = ServerThread(settings).start()
    web = None
    try:
        web = WebServer(create_app(settings, server.target), "127.0.0.1", web_port).start()
        yield WebEnv(server=server, issuer=DevIssuer.from_settings(settings), web=web,
                     base=settings.resolved_web_url)
    finally:
        if web is not None:
            web.stop()
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium for the session (each test gets a fresh context and profile)."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives Chromium a fresh temporary --user-data-dir of its own.
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                  locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()
