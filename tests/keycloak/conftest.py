"""Fixtures: one real Keycloak per test session, and ciphercare servers trusting it or the dev issuer.

Keycloak comes from ``CIPHERCARE_TEST_KEYCLOAK_HOME`` (exported by
``scripts/setup/20-keycloak.sh``). Under ``CI=true`` a missing distribution or a
Keycloak that does not start fails the run; elsewhere the Keycloak tests skip
only when the distribution is absent.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from testkit import component_missing
from testkit.keycloak import (
    AUDIENCE,
    EXPIRY_PROBE,
    NO_AUDIENCE,
    OTHER_API,
    ROGUE,
    KeycloakServer,
    KeycloakTokens,
    KeycloakUnavailable,
    test_realms,
)
from testkit.matrix import CLINICIAN_B, HOSPITAL_B, DevTokens, World
from testkit.server import ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.identity.matrix import NO_ROLE
from ciphercare.services.identity.rules import ADMIN, CLINICIAN, COMPLIANCE_OFFICER, HOSPITAL, PATIENT

#: persona -> (username, client) for the realm's demo users; hospitals use client credentials.
KEYCLOAK_USERS = {
    CLINICIAN: ("clinician-a", "ciphercare-console"),
    PATIENT: ("patient-1001", "ciphercare-portal"),
    COMPLIANCE_OFFICER: ("officer", "ciphercare-console"),
    ADMIN: ("admin", "ciphercare-console"),
    NO_ROLE: ("visitor", "ciphercare-portal"),
}


class KeycloakPersonas:
    """The matrix personas' real Keycloak tokens."""

    def __init__(self, tokens: KeycloakTokens) -> None:
        self.tokens = tokens

    def token(self, persona: str) -> str:
        if persona == HOSPITAL:
            return self.tokens.client_credentials("hospital-a")
        if persona == HOSPITAL_B:
            return self.tokens.client_credentials("hospital-b")
        if persona == CLINICIAN_B:  # writes the "other" break-glass fixtures (issue 15)
            return self.tokens.user("clinician-b", "ciphercare-console")
        username, client = KEYCLOAK_USERS[persona]
        return self.tokens.user(username, client)


@pytest.fixture(scope="session")
def keycloak() -> Iterator[KeycloakServer]:
    """A real Keycloak with the ciphercare realm (plus test-only accounts), once per session."""
    home = os.environ.get("CIPHERCARE_TEST_KEYCLOAK_HOME", "")
    if not home or not (Path(home) / "bin" / "kc.sh").is_file():
        message = (
            "Keycloak distribution absent: CIPHERCARE_TEST_KEYCLOAK_HOME is "
            f"{home or 'unset'} (run: source scripts/setup/20-keycloak.sh)"
        )
        component_missing(message)
    password = secrets.token_urlsafe(18)
    client_secrets = {c: secrets.token_urlsafe(24) for c in ("hospital-a", "hospital-b")}
    test_secret = secrets.token_urlsafe(24)
    env = {
        "CIPHERCARE_KC_HOSPITAL_A_SECRET": client_secrets["hospital-a"],
        "CIPHERCARE_KC_HOSPITAL_B_SECRET": client_secrets["hospital-b"],
        "CIPHERCARE_KC_DEMO_PASSWORD": password,
    }
    # Not under pytest's basetemp: concurrent pytest runs on this machine prune old basetemps.
    workdir = Path(tempfile.mkdtemp(prefix="ciphercare-keycloak-"))
    server = KeycloakServer(Path(home), workdir, test_realms(test_secret), env)
    try:
        server.start()
    except KeycloakUnavailable as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"Keycloak did not start: {exc}")
    server.client_secrets = {**client_secrets, EXPIRY_PROBE: test_secret, OTHER_API: test_secret,  # type: ignore[attr-defined]
                             NO_AUDIENCE: test_secret, ROGUE: test_secret}
    server.demo_password = password  # type: ignore[attr-defined]
    print(f"\nKeycloak {server.version} ready in {server.start_seconds:.1f} s "
          f"(http {server.http_port}, management {server.management_port})")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kc_tokens(keycloak: KeycloakServer) -> KeycloakTokens:
    return KeycloakTokens(keycloak, keycloak.client_secrets, keycloak.demo_password)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def kc_server(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ciphercare server that trusts only the real Keycloak (configuration only: no dev issuer).

    One second of clock leeway (instead of 30) so the one-second tokens of the
    ``expiry-probe`` client are really expired a few seconds later.
    """
    settings = make_settings(
        tmp_path_factory.mktemp("ciphercare-kc"),
        dev_issuer_enabled=False,
        oidc_issuer=keycloak.issuer(),
        oidc_audience=AUDIENCE,
        oidc_leeway_s=1.0,
    )
    server = ServerThread(settings).start()
    try:
        yield server
    finally:
        server.stop()


def _dev_client_token(settings_issuer: str, client_id: str, secret: str) -> str:
    """A client-credentials token from the dev issuer's token endpoint, over HTTP like Keycloak's."""
    body = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(f"{settings_issuer}/protocol/openid-connect/token", data=body,
                                     headers={"Authorization": f"Basic {auth}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, DevIssuer]]:
    """A ciphercare server with the embedded default: the development issuer."""
    settings = make_settings(tmp_path_factory.mktemp("ciphercare-dev"))
    server = ServerThread(settings).start()
    try:
        yield server, DevIssuer.from_settings(settings)
    finally:
        server.stop()


def _world(target: str, tokens: object) -> World:
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=15)
    return World(target=target, tokens=tokens, channel=channel).seed()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def kc_world(kc_server: Any, kc_tokens: KeycloakTokens) -> Iterator[World]:
    world = _world(kc_server.target, KeycloakPersonas(kc_tokens))
    yield world
    world.channel.close()


@pytest.fixture(scope="module")
def dev_world(dev_server: tuple[Any, DevIssuer]) -> Iterator[World]:
    server, issuer = dev_server
    issuer_url = server.settings.resolved_oidc_issuer

    def fetch(client_id: str) -> str:
        return _dev_client_token(issuer_url, client_id, issuer.clients[client_id].secret)

    world = _world(server.target, DevTokens(issuer, fetch))
    yield world
    world.channel.close()


def wait_until(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
