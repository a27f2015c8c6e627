"""Fixtures: a real DevIssuerServer on loopback (port 0) and verifiers pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.identity import AUDIENCE, FakeClock, make_verifier

from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.tokens import TokenVerifier


def _start(key_path: Path) -> DevIssuerServer:
    issuer = DevIssuer(key_path, "http://127.0.0.1:0/realms/ciphercare", AUDIENCE)
    return DevIssuerServer(issuer, "127.0.0.1", 0).start()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIssuerServer]:
    """A DevIssuerServer shared by a test module (do not rotate its key)."""
    server = _start(tmp_path_factory.mktemp("devissuer") / "dev-issuer.pem")
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[DevIssuerServer]:
    """A DevIssuerServer of one's own (for key rotation)."""
    server = _start(tmp_path / "dev-issuer.pem")
    yield server
    server.stop()


@pytest.fixture
def dev_issuer(dev_server: DevIssuerServer) -> DevIssuer:
    return dev_server.issuer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(dev_server: DevIssuerServer, clock: FakeClock) -> TokenVerifier:
    """A verifier with its own (cold) JWKS cache on a fake monotonic clock."""
    return make_verifier(dev_server, clock)
