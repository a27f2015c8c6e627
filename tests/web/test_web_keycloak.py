"""Sign in to the web app through a real Keycloak's login page (authorization code + PKCE), then sign out.

Keycloak comes from ``CIPHERCARE_TEST_KEYCLOAK_HOME`` (``scripts/setup/20-keycloak.sh``) and is
started with the deployed realm (deploy/keycloak), whose ``ciphercare-portal`` client gets this
test's loopback redirect URI added. Under ``CI=true`` a missing Keycloak fails the run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from testkit import component_missing
from testkit.keycloak import AUDIENCE, REALM_FILE, KeycloakServer, KeycloakUnavailable
from testkit.process import free_port
from testkit.web import ServerThread, make_settings, screenshot

from ciphercare.services.web.app import create_app
from ciphercare.services.web.server import WebServer

PORTAL = "ciphercare-portal"


@dataclass
class KeycloakWeb:
    base: str
    password: str


def _realm(web_base: str) -> dict[str, Any]:
    """The deployed realm, with this test's web app registered on the portal client."""
    realm = json.loads(REALM_FILE.read_text())
    for client in realm["clients"]:
        if client["clientId"] == PORTAL:
            client["redirectUris"] = [*client["redirectUris"], f"{web_base}/*"]
            client["webOrigins"] = [*client.get("webOrigins", []), web_base]
            attributes = client.setdefault("attributes", {})
            logout = attributes.get("post.logout.redirect.uris", "")
            attributes["post.logout.redirect.uris"] = "##".join(filter(None, [logout, f"{web_base}/*"]))
    return realm


@pytest.fixture(scope="module")
def keycloak_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakWeb]:
    home = os.environ.get("CIPHERCARE_TEST_KEYCLOAK_HOME", "")
    if not home or not (Path(home) / "bin" / "kc.sh").is_file():
        message = f"Keycloak distribution absent (CIPHERCARE_TEST_KEYCLOAK_HOME={home or 'unset'})"
        component_missing(message)
    web_port = free_port()
    web_base = f"http://127.0.0.1:{web_port}"
    password = secrets.token_urlsafe(18)
    env = {"CIPHERCARE_KC_DEMO_PASSWORD": password,
           "CIPHERCARE_KC_HOSPITAL_A_SECRET": secrets.token_urlsafe(24),
           "CIPHERCARE_KC_HOSPITAL_B_SECRET": secrets.token_urlsafe(24)}
    keycloak = KeycloakServer(Path(home), tmp_path_factory.mktemp("keycloak-web"), [_realm(web_base)], env)
    try:
        keycloak.start()
    except KeycloakUnavailable as exc:
        pytest.fail(f"Keycloak did not start: {exc}")
    server = web = None
    try:
        settings = make_settings(tmp_path_factory.mktemp("ciphercare-web-kc"), dev_issuer_enabled=False,
                                 oidc_issuer=keycloak.issuer(), oidc_audience=AUDIENCE, web_port=web_port)
        server = ServerThread(settings).start()
        web = WebServer(create_app(settings, server.target), "127.0.0.1", web_port).start()
        yield KeycloakWeb(base=web_base, password=password)
    finally:
        if web is not None:
            web.stop()
        if server is not None:
            server.stop()
        keycloak.stop()


def test_sign_in_through_keycloak_grant_and_sign_out(keycloak_web: KeycloakWeb, page: Any) -> None:
    base = keycloak_web.base
    page.goto(base + "/")
    page.get_by_role("link", name="Sign in").click()
    expect(page.locator("#kc-form-login")).to_be_visible()  # Keycloak's own login page
    screenshot(page, "17-keycloak-login")
    page.locator("#username").fill("patient-1001")
    page.locator("#password").fill(keycloak_web.password)
    page.locator("#kc-login").click()

    expect(page).to_have_url(base + "/patients/pt-1001")
    expect(page.get_by_role("heading", level=1)).to_have_text("My consents")
    expect(page.locator(".who-name")).to_contain_text("Alex Patient")

    # The Keycloak access token works against the services: grant a consent.
    page.get_by_role("link", name="Grant a new consent").click()
    page.get_by_label("Organisation that may use the data").select_option("hospital-a")
    page.get_by_label("Treatment", exact=True).check()
    page.get_by_label("Your vaccinations (Immunization)").check()
    page.get_by_role("button", name="Grant consent").click()
    expect(page.locator(".flash")).to_contain_text("Consent granted: Hospital A may use your vaccinations")
    screenshot(page, "18-keycloak-patient")

    # RP-initiated logout ends the Keycloak session too: signing in again shows the login form.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(base + "/signed-out")
    page.get_by_role("link", name="Sign in again").click()
    expect(page.locator("#kc-form-login")).to_be_visible()
    expect(page).to_have_url(re.compile(r".*/realms/ciphercare/protocol/openid-connect/auth\?.*"))
