"""The development issuer's browser login over HTTP: authorization code + PKCE, refresh, logout."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from ciphercare.services.identity.devlogin import s256
from ciphercare.services.identity.tokens import AuthError, TokenVerifier
from ciphercare.services.web.oidc import IdTokenVerifier, LoginRequest, OidcClient, OidcError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _http(url: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with _OPENER.open(url, data, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture(scope="module")
def idp(web_env: Any) -> dict[str, str]:
    issuer = web_env.settings.resolved_oidc_issuer
    return {"issuer": issuer, "auth": issuer + "/protocol/openid-connect/auth",
            "token": issuer + "/protocol/openid-connect/token",
            "logout": issuer + "/protocol/openid-connect/logout",
            "redirect": web_env.base + "/auth/callback", "client": "ciphercare-portal"}


def _authorize(idp: dict[str, str], login: LoginRequest, username: str = "patient-1001",
               **overrides: str) -> tuple[int, dict[str, str], str]:
    params = {"response_type": "code", "client_id": idp["client"], "redirect_uri": idp["redirect"],
              "scope": "openid profile", "state": login.state, "nonce": login.nonce,
              "code_challenge": login.code_challenge, "code_challenge_method": "S256", **overrides}
    status, headers, body = _http(idp["auth"] + "?" + urllib.parse.urlencode(params))
    if status != 200:
        return status, headers, body
    login_id = re.search(r'name="login_id" value="([^"]+)"', body)
    assert login_id is not None, body
    return _http(idp["auth"], {"login_id": login_id.group(1), "username": username})


def _code(idp: dict[str, str], login: LoginRequest) -> str:
    status, headers, _ = _authorize(idp, login)
    assert status == 302
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)
    assert headers["Location"].startswith(idp["redirect"] + "?")
    assert query["state"] == [login.state] and query["iss"] == [idp["issuer"]]
    return query["code"][0]


def _redeem(idp: dict[str, str], code: str, verifier: str) -> tuple[int, dict[str, Any]]:
    status, _, body = _http(idp["token"], {"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": idp["redirect"], "client_id": idp["client"],
                                           "code_verifier": verifier})
    return status, json.loads(body)


def test_discovery_announces_the_browser_login(idp: dict[str, str]) -> None:
    _, _, body = _http(idp["issuer"] + "/.well-known/openid-configuration")
    doc = json.loads(body)
    assert doc["authorization_endpoint"] == idp["auth"]
    assert doc["end_session_endpoint"] == idp["logout"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in doc["grant_types_supported"]


def test_unknown_client_or_redirect_gets_an_error_page_not_a_redirect(idp: dict[str, str]) -> None:
    login = LoginRequest.new()
    for overrides in ({"client_id": "nobody"}, {"redirect_uri": "http://evil.example/cb"},
                      {"redirect_uri": idp["redirect"] + "/../x"}):
        status, headers, body = _authorize(idp, login, **overrides)
        assert status == 400 and "Location" not in headers, overrides
    status, headers, _ = _authorize(idp, login, code_challenge_method="plain")
    assert status == 302 and "error=invalid_request" in headers["Location"]
    assert f"state={login.state}" in headers["Location"]


def test_code_needs_the_pkce_verifier_and_works_once(idp: dict[str, str], web_env: Any) -> None:
    login = LoginRequest.new()
    code = _code(idp, login)
    status, body = _redeem(idp, code, secrets.token_urlsafe(64))
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = _redeem(idp, code, login.code_verifier)  # consumed by the failed attempt
    assert status == 400 and body["error"] == "invalid_grant"

    login = LoginRequest.new()
    code = _code(idp, login)
    status, tokens = _redeem(idp, code, login.code_verifier)
    assert status == 200, tokens
    status, body = _redeem(idp, code, login.code_verifier)
    assert status == 400 and body["error"] == "invalid_grant"

    verifier = TokenVerifier.from_settings(web_env.settings)
    principal = verifier.verify(tokens["access_token"])
    assert principal.roles == frozenset({"patient"}) and principal.pid == "pt-1001"
    id_verifier = IdTokenVerifier(verifier.issuer, idp["client"], verifier.jwks)
    assert id_verifier.verify(tokens["id_token"]).subject == principal.subject
    with pytest.raises(AuthError, match="wrong audience|not an access token"):
        verifier.verify(tokens["id_token"])  # an ID token is no bearer token for the services
    assert s256(login.code_verifier) == login.code_challenge


def test_relying_party_checks_nonce_refreshes_and_logs_out(idp: dict[str, str], web_env: Any) -> None:
    asyncio.run(_relying_party(idp, web_env))


async def _relying_party(idp: dict[str, str], web_env: Any) -> None:
    client = OidcClient(idp["issuer"], idp["client"], idp["redirect"],
                        TokenVerifier.from_settings(web_env.settings))
    login = LoginRequest.new()
    code = _code(idp, login)
    wrong_nonce = LoginRequest(login.state, "another-nonce", login.code_verifier)
    with pytest.raises(OidcError, match="nonce"):
        await client.redeem(code, wrong_nonce)

    login = LoginRequest.new()
    tokens, principal, claims = await client.redeem(_code(idp, login), login)
    assert claims["nonce"] == login.nonce and claims["name"] == "Alex Patient"
    renewed, again = await client.refresh(tokens.refresh_token)
    assert again.subject == principal.subject and renewed.access_token != tokens.access_token
    with pytest.raises(OidcError, match="invalid_grant"):
        await client.refresh(tokens.refresh_token)  # rotated: the old refresh token is spent

    url = await client.end_session_url(renewed.id_token or tokens.id_token, web_env.base + "/signed-out")
    assert url is not None
    status, headers, _ = _http(url)
    assert status == 302 and headers["Location"] == web_env.base + "/signed-out"
    with pytest.raises(OidcError, match="invalid_grant"):
        await client.refresh(renewed.refresh_token)  # logout ended the login's refresh tokens
    status, headers, _ = _http(idp["logout"] + "?" + urllib.parse.urlencode(
        {"client_id": idp["client"], "post_logout_redirect_uri": "http://evil.example/"}))
    assert status == 400 and "Location" not in headers
