"""DevIssuer (key handling, kid) and DevIssuerServer (Keycloak paths, client_credentials)."""

from __future__ import annotations

import base64
import json
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from testkit.identity import AUDIENCE, make_verifier, split

from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer, jwk_thumbprint, rsa_public_jwk
from ciphercare.services.platform.settings import load_settings

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with _NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _post(
    url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    )
    try:
        with _NO_PROXY.open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_rfc7638_thumbprint_vector() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
        "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAt"
        "aSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIq"
        "bw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_key_generated_once_with_mode_0600(tmp_path: Path) -> None:
    key_path = tmp_path / "sub" / "dev.pem"
    first = DevIssuer(key_path, "http://127.0.0.1:8089/realms/ciphercare", AUDIENCE)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    second = DevIssuer(key_path, "http://127.0.0.1:8089/realms/ciphercare", AUDIENCE)
    assert first.kid == second.kid == jwk_thumbprint(rsa_public_jwk(first.public_key))
    assert first.public_key.key_size == 2048
    assert [p.name for p in key_path.parent.iterdir()] == ["dev.pem"]  # no temp files left


def test_server_validates_issuer_url(tmp_path: Path) -> None:
    issuer = DevIssuer(tmp_path / "k.pem", "http://127.0.0.1:8089/realms/ciphercare", AUDIENCE)
    with pytest.raises(ValueError, match="port"):
        DevIssuerServer(issuer, "127.0.0.1", 9999)
    with pytest.raises(ValueError, match="host"):
        DevIssuerServer(issuer, "10.0.0.1", 8089)
    bad_path = DevIssuer(tmp_path / "k.pem", "http://127.0.0.1:8089/auth", AUDIENCE)
    with pytest.raises(ValueError, match="/realms/"):
        DevIssuerServer(bad_path, "127.0.0.1", 8089)
    DevIssuerServer(issuer, "127.0.0.1", 8089)  # matching: fine (not started)


def test_port_zero_rewrites_issuer(tmp_path: Path) -> None:
    issuer = DevIssuer(tmp_path / "k.pem", "http://127.0.0.1:0/realms/ciphercare", AUDIENCE)
    with DevIssuerServer(issuer, "127.0.0.1", 0) as server:
        assert server.port > 0
        assert issuer.issuer == server.issuer_url == f"http://127.0.0.1:{server.port}/realms/ciphercare"
        assert split(issuer.issue("a", ["patient"], None))[1]["iss"] == server.issuer_url


def test_settings_wiring(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, dev_issuer_port=0, oidc_issuer="http://127.0.0.1:0/realms/ciphercare"
    )
    issuer = DevIssuer.from_settings(settings)
    assert issuer.key_path == settings.resolved_dev_issuer_key_path
    assert issuer.token_ttl_s == settings.dev_token_ttl_s
    with DevIssuerServer.for_issuer(issuer, settings) as server:
        assert server.port > 0


def test_discovery_and_jwks(dev_server: DevIssuerServer) -> None:
    status, doc, _ = _get(dev_server.issuer_url + "/.well-known/openid-configuration")
    assert status == 200
    assert doc["issuer"] == dev_server.issuer_url
    assert doc["jwks_uri"] == dev_server.issuer_url + "/protocol/openid-connect/certs"
    assert doc["token_endpoint"] == dev_server.issuer_url + "/protocol/openid-connect/token"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    status, jwks, headers = _get(doc["jwks_uri"])
    assert status == 200 and headers["Content-Type"] == "application/json"
    (key,) = jwks["keys"]
    assert key["kid"] == dev_server.issuer.kid and key["kty"] == "RSA" and key["use"] == "sig"
    assert key["alg"] == "RS256" and "d" not in key and "p" not in key
    assert _get(f"http://127.0.0.1:{dev_server.port}/realms/other/protocol/openid-connect/certs")[0] == 404


def test_client_credentials_basic_and_post(dev_server: DevIssuerServer) -> None:
    verifier = make_verifier(dev_server)
    status, body = _post(
        dev_server.token_url, {"grant_type": "client_credentials"}, _basic("hospital-a", "hospital-a-secret")
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["refresh_expires_in"] == 0
    principal = verifier.verify(body["access_token"])
    assert (
        principal.roles == {"hospital"}
        and principal.org == "hospital-a"
        and principal.client_id == "hospital-a"
    )
    _, claims, _ = split(body["access_token"])
    assert claims["preferred_username"] == "service-account-hospital-a" and "sid" not in claims

    status, body = _post(
        dev_server.token_url,
        {"grant_type": "client_credentials", "client_id": "hospital-b", "client_secret": "hospital-b-secret"},
    )
    assert status == 200
    assert verifier.verify(body["access_token"]).org == "hospital-b"
    # Stable service-account subject across tokens.
    _, again = _post(
        dev_server.token_url,
        {"grant_type": "client_credentials", "client_id": "hospital-b", "client_secret": "hospital-b-secret"},
    )
    assert verifier.verify(again["access_token"]).subject == verifier.verify(body["access_token"]).subject


@pytest.mark.parametrize(
    ("form", "headers", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, _basic("hospital-a", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic("nobody", "x"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        (
            {"grant_type": "password", "username": "u", "password": "p"},
            _basic("hospital-a", "hospital-a-secret"),
            400,
            "unsupported_grant_type",
        ),
        ({}, _basic("hospital-a", "hospital-a-secret"), 400, "invalid_request"),
    ],
)
def test_token_endpoint_errors(
    dev_server: DevIssuerServer, form: dict[str, str], headers: dict[str, str] | None, status: int, error: str
) -> None:
    got_status, body = _post(dev_server.token_url, form, headers)
    assert (got_status, body["error"]) == (status, error)
    assert "access_token" not in body
