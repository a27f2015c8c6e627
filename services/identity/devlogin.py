"""Browser login for the development identity provider: OIDC authorization code + PKCE.

Hooked into :class:`~ciphercare.services.identity.devissuer.DevIssuerServer` (its
``login`` attribute), this adds what Keycloak's realm offers a browser client,
on Keycloak's paths:

* ``GET /protocol/openid-connect/auth`` — the authorization endpoint. It checks
  the client and the exact redirect URI first (an unknown one gets an error
  page, never a redirect), requires ``response_type=code``, ``scope`` with
  ``openid``, a ``state`` and PKCE ``S256``, then shows a "choose a demo user"
  form instead of a password prompt.
* ``POST /protocol/openid-connect/auth`` — the form: issues a single-use code
  (60 s) bound to the client, the redirect URI, the code challenge and the nonce,
  and redirects back with ``code``, ``state`` and ``iss`` (RFC 9207).
* the token endpoint's ``authorization_code`` grant (PKCE verifier checked,
  code consumed once) and ``refresh_token`` grant (rotating, opaque refresh
  tokens); access tokens have Keycloak's shape (as :meth:`DevIssuer.issue`),
  ID tokens carry ``nonce``, ``at_hash``, ``aud`` = the client and ``typ: ID``.
* ``GET /protocol/openid-connect/logout`` — RP-initiated logout: ends the
  login's refresh tokens and redirects to a registered ``post_logout_redirect_uri``.

Development only: anyone who can reach the issuer can sign in as any demo user.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from ciphercare.services.identity.devissuer import DevIssuer
    from ciphercare.services.platform.settings import Settings

AUTH_PATH = "/protocol/openid-connect/auth"
LOGOUT_PATH = "/protocol/openid-connect/logout"
CODE_TTL_S = 60
LOGIN_TTL_S = 600
REFRESH_TTL_S = 8 * 3600
MAX_PENDING = 10_000
_MAX_FORM_BYTES = 16 * 1024
_PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class DemoUser:
    """A person the development login offers (mirrors the demo users of deploy/keycloak)."""

    username: str
    name: str
    roles: frozenset[str]
    org: str | None = None
    pid: str | None = None

    @property
    def description(self) -> str:
        parts = [", ".join(sorted(self.roles))]
        if self.org:
            parts.append(f"organisation {self.org}")
        if self.pid:
            parts.append(f"patient pseudonym {self.pid}")
        return "; ".join(parts)


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("patient-1001", "Alex Patient", frozenset({"patient"}), pid="pt-1001"),
    DemoUser("patient-1002", "Bo Patient", frozenset({"patient"}), pid="pt-1002"),
    DemoUser("clinician-a", "Casey Clinician", frozenset({"clinician"}), org="hospital-a"),
    DemoUser("clinician-b", "Dana Clinician", frozenset({"clinician"}), org="hospital-b"),
    DemoUser("officer", "Eli Officer", frozenset({"compliance-officer"}), org="regulator"),
)


@dataclass(frozen=True)
class PublicClient:
    """A browser client (no secret): exact redirect URIs and post-logout redirect URIs."""

    client_id: str
    redirect_uris: frozenset[str]
    post_logout_redirect_uris: frozenset[str] = frozenset()


@dataclass
class _LoginRequest:
    client_id: str
    redirect_uri: str
    state: str
    nonce: str | None
    code_challenge: str
    scope: str
    expires: float


@dataclass
class _Grant:
    """What a code or a refresh token stands for."""

    client_id: str
    user: DemoUser
    scope: str
    sid: str
    auth_time: int
    expires: float
    redirect_uri: str = ""
    code_challenge: str = ""
    nonce: str | None = None


@dataclass
class _Stores:
    logins: dict[str, _LoginRequest] = field(default_factory=dict)
    codes: dict[str, _Grant] = field(default_factory=dict)
    refresh: dict[str, _Grant] = field(default_factory=dict)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 section 4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class DevLogin:
    """Authorization code + PKCE login for a :class:`DevIssuer` (see the module docstring)."""

    def __init__(self, issuer: DevIssuer, clients: Mapping[str, PublicClient],
                 users: tuple[DemoUser, ...] = DEMO_USERS, *, token_ttl_s: int = 300) -> None:
        self.issuer = issuer
        self.clients = dict(clients)
        self.users = {u.username: u for u in users}
        self.token_ttl_s = int(token_ttl_s)
        self._lock = threading.Lock()
        self._stores = _Stores()

    @classmethod
    def from_settings(cls, issuer: DevIssuer, settings: Settings) -> DevLogin:
        """The web app of ``settings`` as the one public client (redirect ``<web url>/auth/callback``)."""
        web = settings.resolved_web_url
        client = PublicClient(
            client_id=settings.web_oidc_client_id,
            redirect_uris=frozenset({f"{web}/auth/callback"}),
            post_logout_redirect_uris=frozenset({f"{web}/", f"{web}/signed-out"}),
        )
        return cls(issuer, {client.client_id: client}, token_ttl_s=min(settings.dev_token_ttl_s, 900))

    def add_client(self, client: PublicClient) -> None:
        """Register another public client (tests, a second web app)."""
        with self._lock:
            self.clients[client.client_id] = client

    # ----------------------------------------------------------- discovery

    def discovery_additions(self, issuer_url: str) -> dict[str, Any]:
        """Members the discovery document gains with a browser login."""
        return {
            "authorization_endpoint": issuer_url + AUTH_PATH,
            "end_session_endpoint": issuer_url + LOGOUT_PATH,
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": True,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "azp", "realm_access", "org", "pid",
                                 "nonce", "at_hash", "auth_time", "sid", "name", "preferred_username"],
        }

    # ------------------------------------------------------------ dispatch

    def handle_get(self, handler: BaseHTTPRequestHandler, route: str | None) -> bool:
        """Serve ``route`` if it is the login's; ``False`` leaves it to the issuer."""
        if route == AUTH_PATH:
            self._authorize(handler, _query(handler))
            return True
        if route == LOGOUT_PATH:
            self._logout(handler, _query(handler))
            return True
        return False

    def handle_post(self, handler: BaseHTTPRequestHandler, route: str | None) -> bool:
        """Serve a POST to the login form or to logout; ``False`` leaves it to the issuer."""
        if route not in (AUTH_PATH, LOGOUT_PATH):
            return False
        form = _read_form(handler)
        if form is None:
            _page(handler, HTTPStatus.BAD_REQUEST, "Bad request", "<p>The form could not be read.</p>")
        elif route == AUTH_PATH:
            self._choose(handler, form)
        else:
            self._logout(handler, form)
        return True

    def handle_token(self, handler: BaseHTTPRequestHandler, grant_type: str, fields: Mapping[str, str]) -> bool:
        """The token endpoint's ``authorization_code`` and ``refresh_token`` grants."""
        if grant_type == "authorization_code":
            self._code_grant(handler, fields)
            return True
        if grant_type == "refresh_token":
            self._refresh_grant(handler, fields)
            return True
        return False

    # ------------------------------------------------------- authorization

    def _authorize(self, handler: BaseHTTPRequestHandler, params: Mapping[str, str]) -> None:
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            _page(handler, HTTPStatus.BAD_REQUEST, "Unknown client", "<p>The application is not registered.</p>")
            return
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            _page(handler, HTTPStatus.BAD_REQUEST, "Invalid redirect URI",
                  "<p>The application asked to return to an address it has not registered.</p>")
            return
        state = params.get("state", "")

        def refuse(error: str, description: str) -> None:
            _redirect(handler, _with_query(redirect_uri, {"error": error, "error_description": description,
                                                          "state": state, "iss": self.issuer.issuer}))

        if params.get("response_type") != "code":
            refuse("unsupported_response_type", "only response_type=code is supported")
            return
        scope = params.get("scope", "")
        if "openid" not in scope.split():
            refuse("invalid_scope", "scope must include openid")
            return
        if not state:
            refuse("invalid_request", "state is required")
            return
        if params.get("code_challenge_method") != "S256" or not _PKCE_CHALLENGE.match(
                params.get("code_challenge", "")):
            refuse("invalid_request", "PKCE with code_challenge_method=S256 is required")
            return
        login_id = secrets.token_urlsafe(24)
        request = _LoginRequest(client.client_id, redirect_uri, state, params.get("nonce") or None,
                                params["code_challenge"], scope, time.time() + LOGIN_TTL_S)
        with self._lock:
            _purge(self._stores.logins)
            if len(self._stores.logins) >= MAX_PENDING:
                refuse("temporarily_unavailable", "too many logins in progress")
                return
            self._stores.logins[login_id] = request
        _page(handler, HTTPStatus.OK, "Sign in to ciphercare (development)", self._chooser(login_id, client))

    def _chooser(self, login_id: str, client: PublicClient) -> str:
        options = []
        for i, user in enumerate(self.users.values()):
            checked = " checked" if i == 0 else ""
            options.append(
                f'<li><input type="radio" id="u-{i}" name="username" value="{html.escape(user.username)}"'
                f'{checked}> <label for="u-{i}"><strong>{html.escape(user.name)}</strong> '
                f'({html.escape(user.username)})<br><small>{html.escape(user.description)}</small></label></li>'
            )
        return (
            f"<p>Development login for <code>{html.escape(client.client_id)}</code>. There are no passwords: "
            "choose who you want to be.</p>"
            f'<form method="post" action="{html.escape(self.issuer.issuer + AUTH_PATH)}">'
            f'<input type="hidden" name="login_id" value="{html.escape(login_id)}">'
            '<fieldset><legend>Choose a demo user</legend><ul>' + "".join(options) + "</ul></fieldset>"
            '<button type="submit">Sign in</button></form>'
        )

    def _choose(self, handler: BaseHTTPRequestHandler, form: Mapping[str, str]) -> None:
        with self._lock:
            request = self._stores.logins.pop(form.get("login_id", ""), None)
        if request is None or request.expires < time.time():
            _page(handler, HTTPStatus.BAD_REQUEST, "Login expired",
                  "<p>This sign-in page has expired or was already used. Go back to the application and "
                  "start again.</p>")
            return
        user = self.users.get(form.get("username", ""))
        if user is None:
            _redirect(handler, _with_query(request.redirect_uri, {
                "error": "access_denied", "error_description": "no such demo user", "state": request.state,
                "iss": self.issuer.issuer}))
            return
        code = secrets.token_urlsafe(32)
        grant = _Grant(request.client_id, user, request.scope, str(uuid.uuid4()), int(time.time()),
                       time.time() + CODE_TTL_S, request.redirect_uri, request.code_challenge, request.nonce)
        with self._lock:
            _purge(self._stores.codes)
            self._stores.codes[code] = grant
        _redirect(handler, _with_query(request.redirect_uri, {
            "code": code, "state": request.state, "session_state": grant.sid, "iss": self.issuer.issuer}))

    # --------------------------------------------------------------- tokens

    def _code_grant(self, handler: BaseHTTPRequestHandler, fields: Mapping[str, str]) -> None:
        with self._lock:
            grant = self._stores.codes.pop(fields.get("code", ""), None)  # single use, even on failure
        if grant is None or grant.expires < time.time():
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "Code not valid")
            return
        if fields.get("client_id") != grant.client_id:
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "Code was issued to another client")
            return
        if fields.get("redirect_uri") != grant.redirect_uri:
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "Incorrect redirect_uri")
            return
        verifier = fields.get("code_verifier", "")
        if not _PKCE_VERIFIER.match(verifier) or not secrets.compare_digest(s256(verifier), grant.code_challenge):
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "PKCE verification failed")
            return
        self._send_tokens(handler, grant, with_id_token=True)

    def _refresh_grant(self, handler: BaseHTTPRequestHandler, fields: Mapping[str, str]) -> None:
        with self._lock:
            grant = self._stores.refresh.pop(fields.get("refresh_token", ""), None)  # rotation
        if grant is None or grant.expires < time.time():
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "Invalid refresh token")
            return
        if fields.get("client_id") != grant.client_id:
            _oauth_error(handler, HTTPStatus.BAD_REQUEST, "invalid_grant", "Token was issued to another client")
            return
        self._send_tokens(handler, grant, with_id_token="openid" in grant.scope.split())

    def _send_tokens(self, handler: BaseHTTPRequestHandler, grant: _Grant, *, with_id_token: bool) -> None:
        user = grant.user
        subject = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer.issuer}/users/{user.username}"))
        common = {"sid": grant.sid, "preferred_username": user.username, "name": user.name,
                  "scope": grant.scope}
        access = self.issuer.issue(subject, user.roles, user.org, user.pid, client_id=grant.client_id,
                                   ttl_s=self.token_ttl_s, extra_claims=common)
        refresh = secrets.token_urlsafe(32)
        renewed = _Grant(grant.client_id, user, grant.scope, grant.sid, grant.auth_time,
                         min(time.time() + REFRESH_TTL_S, grant.auth_time + REFRESH_TTL_S))
        with self._lock:
            _purge(self._stores.refresh)
            self._stores.refresh[refresh] = renewed
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.token_ttl_s,
            "refresh_token": refresh,
            "refresh_expires_in": int(renewed.expires - time.time()),
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": grant.sid,
            "scope": grant.scope,
        }
        if with_id_token:
            digest = hashlib.sha256(access.encode("ascii")).digest()
            id_claims: dict[str, Any] = {
                **common, "aud": grant.client_id, "typ": "ID", "auth_time": grant.auth_time,
                "at_hash": _b64url(digest[:16]), "nonce": grant.nonce, "scope": None, "realm_access": None,
            }
            body["id_token"] = self.issuer.issue(subject, user.roles, user.org, user.pid,
                                                 client_id=grant.client_id, ttl_s=self.token_ttl_s,
                                                 extra_claims=id_claims)
        _json(handler, HTTPStatus.OK, body)

    # --------------------------------------------------------------- logout

    def _logout(self, handler: BaseHTTPRequestHandler, params: Mapping[str, str]) -> None:
        hint = params.get("id_token_hint", "")
        client_id = params.get("client_id", "")
        sid = None
        if hint:
            try:
                claims = jwt.decode(hint, self.issuer.public_key, algorithms=["RS256"],
                                    issuer=self.issuer.issuer, options={"verify_aud": False, "verify_exp": False})
            except jwt.PyJWTError:
                _page(handler, HTTPStatus.BAD_REQUEST, "Invalid logout request", "<p>Invalid id_token_hint.</p>")
                return
            sid = claims.get("sid")
            client_id = client_id or str(claims.get("azp") or "")
        if sid:
            with self._lock:
                for token in [t for t, g in self._stores.refresh.items() if g.sid == sid]:
                    del self._stores.refresh[token]
        target = params.get("post_logout_redirect_uri", "")
        if target:
            client = self.clients.get(client_id)
            if client is None or target not in client.post_logout_redirect_uris:
                _page(handler, HTTPStatus.BAD_REQUEST, "Invalid redirect URI",
                      "<p>The application asked to return to an address it has not registered.</p>")
                return
            state = params.get("state")
            _redirect(handler, _with_query(target, {"state": state} if state else {}))
            return
        _page(handler, HTTPStatus.OK, "Signed out", "<p>You are signed out of the development login.</p>")


# --------------------------------------------------------------------- helpers


def _purge(store: dict[str, Any]) -> None:
    now = time.time()
    for key in [k for k, v in store.items() if v.expires < now]:
        del store[key]


def _query(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    query = urllib.parse.urlsplit(handler.path).query
    return {k: v[0] for k, v in urllib.parse.parse_qs(query).items() if len(v) == 1}


def _read_form(handler: BaseHTTPRequestHandler) -> dict[str, str] | None:
    try:
        length = int(handler.headers.get("Content-Length", "0"))
    except ValueError:
        return None
    if length < 0 or length > _MAX_FORM_BYTES:
        handler.close_connection = True
        return None
    ctype = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
    body = handler.rfile.read(length)
    if ctype != "application/x-www-form-urlencoded":
        return None
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return {k: v[0] for k, v in form.items() if len(v) == 1}


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params)) if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
          extra: Mapping[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    for name, value in (extra or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _json(handler: BaseHTTPRequestHandler, status: int, body: Mapping[str, Any]) -> None:
    _send(handler, status, json.dumps(body, separators=(",", ":")).encode("utf-8"), "application/json",
          {"Pragma": "no-cache"})


def _oauth_error(handler: BaseHTTPRequestHandler, status: int, error: str, description: str) -> None:
    _json(handler, status, {"error": error, "error_description": description})


def _redirect(handler: BaseHTTPRequestHandler, location: str) -> None:
    _send(handler, HTTPStatus.FOUND, b"", "text/plain", {"Location": location})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; color: #1b1f24; }}
ul {{ list-style: none; padding: 0; }} li {{ margin: .6rem 0; display: flex; gap: .5rem; align-items: baseline; }}
button {{ font: inherit; padding: .5rem 1.2rem; background: #0b5cad; color: #fff; border: 0; border-radius: 4px; }}
:focus-visible {{ outline: 3px solid #c85a00; outline-offset: 2px; }}
fieldset {{ border: 1px solid #8a94a0; border-radius: 6px; }}
</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>
"""


def _page(handler: BaseHTTPRequestHandler, status: int, title: str, body: str) -> None:
    text = _PAGE.format(title=html.escape(title), body=body)
    _send(handler, status, text.encode("utf-8"), "text/html; charset=utf-8",
          {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"})
