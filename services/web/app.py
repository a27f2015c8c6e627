"""The Starlette app: login (OIDC code + PKCE), sessions, CSRF, security headers and routing.

Pages live in :mod:`.portal` (patients) and :mod:`.console` (compliance); both
reach data only through :class:`~.backend.Services` with the signed-in user's
access token.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ciphercare.services.identity.tokens import TokenVerifier
from ciphercare.services.platform.settings import Settings
from ciphercare.services.platform.telemetry import Tracing, TracingMiddleware
from ciphercare.services.web.backend import ServiceRefusal, Services, backend_security
from ciphercare.services.web.oidc import LoginRequest, OidcClient, OidcError
from ciphercare.services.web.sessions import PendingLogin, Session, SessionStore, WebUser

log = logging.getLogger("ciphercare.web")

HERE = Path(__file__).parent
REFRESH_MARGIN_S = 30.0
LOGIN_MAX_AGE_S = 600.0

Handler = Callable[["WebApp", Request, Session], Awaitable[Response]]


class SignInRequired(Exception):
    """No usable session: sign in (again)."""


@dataclass(frozen=True)
class WebConfig:
    """What the app needs beyond :class:`Settings`: where the gRPC services are."""

    grpc_target: str


class SecurityHeaders:
    """Adds CSP and friends to every response; pages with user data are never cached."""

    def __init__(self, app: ASGIApp, form_targets: str) -> None:
        self.app = app
        self.csp = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    f"form-action 'self' {form_targets}; frame-ancestors 'none'; base-uri 'none'; "
                    "object-src 'none'").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [
                    (b"content-security-policy", self.csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class WebApp:
    """Everything one running web app holds: settings, sessions, the OIDC client, the services."""

    def __init__(self, settings: Settings, config: WebConfig, *, oidc: OidcClient | None = None) -> None:
        self.settings = settings
        self.base_url = settings.resolved_web_url
        self.secure = self.base_url.startswith("https://")
        self.cookie_name = "__Host-ciphercare" if self.secure else "ciphercare_session"
        self.sessions = SessionStore(settings.web_session_idle_s, settings.web_session_max_s)
        # Tracing (off by default): a span per HTTP request, its context carried into the gRPC metadata.
        self.tracing = Tracing.from_settings(settings, service_suffix="-web")
        self.services = Services(config.grpc_target, settings.client_deadline_s, settings.grpc_max_message_bytes,
                                 security=backend_security(settings),
                                 interceptors=self.tracing.client_interceptors() if self.tracing else ())
        self.oidc = oidc or OidcClient(settings.resolved_oidc_issuer, settings.web_oidc_client_id,
                                       f"{self.base_url}/auth/callback", TokenVerifier.from_settings(settings))
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                 autoescape=jinja2.select_autoescape(["html", "svg"]),
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters["ucfirst"] = lambda text: str(text)[:1].upper() + str(text)[1:]
        self.templates = Jinja2Templates(env=env)

    # ---------------------------------------------------------------- pages

    def render(self, request: Request, name: str, context: dict[str, Any] | None = None,
               status: int = 200) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        page = {"user": session.user if session else None, "csrf_token": session.csrf_token if session else "",
                "flash": session.flash[:] if session else [], "path": request.url.path, "title": ""}
        if session:
            session.flash.clear()
        page.update(context or {})
        return self.templates.TemplateResponse(request, name, page, status_code=status)

    def error(self, request: Request, status: int, title: str, message: str, *, code: str = "",
              action: tuple[str, str] | None = None) -> Response:
        return self.render(request, "error.html", {"title": title, "message": message, "code": code,
                                                   "action": action}, status)

    # -------------------------------------------------------------- cookies

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookie_name))

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(self.cookie_name, session.id, max_age=int(self.settings.web_session_max_s),
                            path="/", secure=self.secure, httponly=True, samesite="lax")

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="lax")

    # ----------------------------------------------------------------- CSRF

    def same_origin(self, request: Request) -> bool:
        """A present Origin header must be this app's (the token check below is the main defence)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        allowed = {_origin(self.base_url), _origin(str(request.base_url))}
        return origin in allowed

    def csrf_ok(self, request: Request, session: Session, form: FormData) -> bool:
        token = form.get("csrf_token")
        return (isinstance(token, str) and secrets.compare_digest(token, session.csrf_token)
                and self.same_origin(request))

    # --------------------------------------------------------------- tokens

    async def access_token(self, session: Session) -> str:
        """The session's access token, refreshed when it is about to expire; :class:`SignInRequired` if gone."""
        if not session.signed_in:
            raise SignInRequired()
        if session.access_expires - REFRESH_MARGIN_S > time.time():
            return session.access_token
        if session.refresh_token:
            try:
                tokens, principal = await self.oidc.refresh(session.refresh_token)
            except OidcError as exc:
                log.info("token refresh failed: %s", exc)
            else:
                if session.user is not None and principal.subject == session.user.subject:
                    session.access_token = tokens.access_token
                    session.access_expires = tokens.expires_at
                    session.refresh_token = tokens.refresh_token or session.refresh_token
                    session.id_token = tokens.id_token or session.id_token
                    return session.access_token
        session.user, session.access_token, session.refresh_token = None, "", ""
        raise SignInRequired()

    async def call(self, session: Session, operation: Callable[[Any], Any]) -> Any:
        """Call the services as the signed-in user (see :meth:`Services.call`)."""
        token = await self.access_token(session)
        return await self.services.call(token, operation)

    # -------------------------------------------------------------- routing

    def page(self, handler: Handler, *, csrf: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: it needs a signed-in session; POSTs need the CSRF token."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            request.state.session = session
            if session is None or not session.signed_in:
                if request.method in ("GET", "HEAD"):
                    return self.to_login(request)
                return self.error(request, 401, "Not signed in",
                                  "Your session has expired or you are not signed in, so nothing was changed. "
                                  "Sign in and try again.", action=("/login", "Sign in"))
            if request.method == "POST" and csrf:
                form = await request.form()
                if not self.csrf_ok(request, session, form):
                    return self.error(request, 403, "Request refused",
                                      "This form was not sent from your current session (missing or wrong "
                                      "security token), so nothing was changed. Reload the page and try again.")
            try:
                return await handler(self, request, session)
            except SignInRequired:
                return self.to_login(request)
            except ServiceRefusal as exc:
                return self.refusal(request, exc)

        return endpoint

    def refusal(self, request: Request, exc: ServiceRefusal) -> Response:
        titles = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 400: "Not accepted",
                  409: "Not possible now", 503: "Service unavailable", 504: "Service too slow"}
        return self.error(request, exc.http_status, titles.get(exc.http_status, "Service error"),
                          f"The ciphercare service refused this request: {exc.message}", code=exc.code_name)

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), status_code=303)

    # ------------------------------------------------------------ the login

    async def login(self, request: Request) -> Response:
        """Start the authorization code flow (PKCE S256, state, nonce kept server-side)."""
        session = self.session_of(request) or self.sessions.new()
        request.state.session = session
        next_path = _safe_next(request.query_params.get("next", "/"))
        if session.signed_in:
            return RedirectResponse(next_path, status_code=303)
        login = LoginRequest.new()
        try:
            url = await self.oidc.authorization_url(login)
        except OidcError as exc:
            response = self.error(request, 503, "Sign-in unavailable", str(exc))
            self.set_cookie(response, session)
            return response
        session.add_pending(PendingLogin(login.state, login.nonce, login.code_verifier, next_path, time.time()))
        response = RedirectResponse(url, status_code=303)
        self.set_cookie(response, session)
        return response

    async def callback(self, request: Request) -> Response:
        """Finish the login: state must match this browser's pending login; tokens are verified."""
        session = self.session_of(request)
        request.state.session = session
        params = request.query_params
        state = params.get("state", "")
        pending = session.pending.pop(state, None) if session and state else None
        if session is None or pending is None or time.time() - pending.created > LOGIN_MAX_AGE_S:
            return self.error(request, 400, "Sign-in not completed",
                              "This sign-in response does not belong to a sign-in started in this browser "
                              "(or it took too long). Start again.", action=("/login", "Sign in"))
        if params.get("error"):
            description = params.get("error_description") or params["error"]
            return self.error(request, 400, "Sign-in refused", f"The identity provider said: {description}",
                              action=("/login", "Try again"))
        iss = params.get("iss")
        if iss is not None and iss.rstrip("/") != self.oidc.issuer:
            return self.error(request, 400, "Sign-in not completed", "The response came from another issuer.")
        code = params.get("code", "")
        if not code:
            return self.error(request, 400, "Sign-in not completed", "The identity provider sent no code.")
        login = LoginRequest(pending.state, pending.nonce, pending.code_verifier)
        try:
            tokens, principal, claims = await self.oidc.redeem(code, login)
        except OidcError as exc:
            return self.error(request, 400, "Sign-in not completed", str(exc), action=("/login", "Try again"))
        session = self.sessions.rotate(session)  # a fresh id after login (no session fixation)
        request.state.session = session
        session.pending.clear()
        session.user = WebUser(
            subject=principal.subject,
            username=str(claims.get("preferred_username") or principal.subject),
            name=str(claims.get("name") or claims.get("preferred_username") or "you"),
            roles=principal.roles, org=principal.org, pid=principal.pid,
        )
        session.access_token, session.access_expires = tokens.access_token, tokens.expires_at
        session.refresh_token, session.id_token = tokens.refresh_token, tokens.id_token
        log.info("signed in", extra={"roles": sorted(principal.roles)})
        response = RedirectResponse(pending.next_path if pending.next_path != "/" else self.home(session.user),
                                    status_code=303)
        self.set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session here, then at the identity provider (RP-initiated logout) when it offers that."""
        session = self.session_of(request)
        request.state.session = session
        if session is None:
            return RedirectResponse("/signed-out", status_code=303)
        form = await request.form()
        if not self.csrf_ok(request, session, form):
            return self.error(request, 403, "Request refused",
                              "This sign-out was not sent from your current session. Reload and try again.")
        id_token = session.id_token
        self.sessions.drop(session.id)
        target = await self.oidc.end_session_url(id_token, f"{self.base_url}/signed-out") or "/signed-out"
        response = RedirectResponse(target, status_code=303)
        self.clear_cookie(response)
        return response

    async def signed_out(self, request: Request) -> Response:
        request.state.session = None
        return self.render(request, "signed_out.html", {"title": "Signed out"})

    async def index(self, request: Request) -> Response:
        session = self.session_of(request)
        request.state.session = session
        if session is not None and session.user is not None and session.signed_in:
            return RedirectResponse(self.home(session.user), status_code=303)
        return self.render(request, "home.html", {"title": "Welcome"})

    @staticmethod
    def home(user: WebUser) -> str:
        if user.is_patient and user.pid:
            return f"/patients/{urllib.parse.quote(user.pid)}"
        return "/console"

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    def build(self) -> Starlette:
        from ciphercare.services.web import breakglass, console, portal

        routes = [
            Route("/", self.index),
            Route("/healthz", self.healthz),
            Route("/login", self.login),
            Route("/auth/callback", self.callback),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/signed-out", self.signed_out),
            *portal.routes(self),
            *console.routes(self),
            *breakglass.routes(self),  # issue 15: break-glass review
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_error,
                                                            Exception: self._crash})
        app.add_middleware(SecurityHeaders, form_targets=_origin(self.oidc.issuer))
        if self.tracing is not None:
            app.add_middleware(TracingMiddleware, tracing=self.tracing)
        app.state.web = self
        return app

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if not hasattr(request.state, "session"):
            request.state.session = self.session_of(request)
        messages = {404: ("Not found", "There is no page at this address."),
                    405: ("Not allowed", "This address does not accept that kind of request.")}
        title, message = messages.get(status, ("Error", "The request could not be handled."))
        return self.error(request, status, title, message)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("web request failed", exc_info=(type(exc), exc, exc.__traceback__))
        request.state.session = None  # render without user data
        return self.error(request, 500, "Something went wrong",
                          "The page could not be shown because of an error in ciphercare. Nothing was changed "
                          "unless a confirmation said so.")

    def close(self) -> None:
        self.services.close()
        if self.tracing is not None:
            self.tracing.shutdown()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _safe_next(value: str) -> str:
    """Only local paths may be a post-login target (no open redirect)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def create_app(settings: Settings, grpc_target: str, *, oidc: OidcClient | None = None) -> Starlette:
    """The ASGI app for ``settings``, talking to the gRPC services at ``grpc_target``."""
    return WebApp(settings, WebConfig(grpc_target), oidc=oidc).build()
