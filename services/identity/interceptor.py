"""gRPC (asyncio) server interceptor: bearer-token authentication + the role table.

For every call whose method is not public the interceptor wraps the method
handler so that, before the servicer's behaviour runs, it

1. reads ``authorization: Bearer <jwt>`` from the call metadata and verifies it
   (missing/invalid -> ``UNAUTHENTICATED`` with the verifier's precise message);
2. looks the method up in the access table (absent -> ``PERMISSION_DENIED``,
   fail closed) and checks the caller's roles (-> ``PERMISSION_DENIED``);
3. exposes the verified :class:`Principal` to the servicer through
   :func:`current_principal` (a context variable scoped to the call).

Every rejection is reported to the optional async ``on_rejection`` hook (the
service logs unauthenticated callers to its security log and writes an
aggregated ``denied`` access event for authenticated ones; see
services/audit/refusals.py) before the call is aborted;
the hook cannot change the outcome and its failures are logged, not raised.
Token verification does no network I/O per request (see :class:`JwksCache`).

Only asyncio behaviours (``async def`` / async generators) are supported, as
used by every ciphercare servicer; a synchronous behaviour on a protected
method is refused with ``INTERNAL`` rather than run unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc import aio

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.rules import RULES, AccessRule
from ciphercare.services.identity.token_cache import Verifier
from ciphercare.services.identity.tokens import AuthError, TokenVerifier
from ciphercare.services.platform.handlers import rewrap

log = logging.getLogger(__name__)

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "ciphercare_current_principal", default=None
)


class NoPrincipalError(RuntimeError):
    """:func:`current_principal` was called outside an authenticated call."""


def current_principal() -> Principal:
    """The verified caller of the current gRPC call; raises :class:`NoPrincipalError` if unset."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise NoPrincipalError(
            "no authenticated principal in this context (public method or no AuthInterceptor)"
        )
    return principal


def principal_or_none() -> Principal | None:
    """The verified caller, or ``None`` (public methods)."""
    return _PRINCIPAL.get()


@dataclass(frozen=True)
class RejectedCall:
    """What the interceptor refused, as given to ``on_rejection``.

    ``code`` is the gRPC status name (``"UNAUTHENTICATED"`` or
    ``"PERMISSION_DENIED"``); ``principal`` is ``None`` when the token was
    missing or invalid; ``pid`` is the request's ``pid`` field when the request
    is a single message that has one.
    """

    method: str
    code: str
    message: str
    principal: Principal | None
    pid: str | None
    peer: str = ""
    #: The request message (unary requests only; None for client streams), for what it named.
    request: object = None


RejectionHook = Callable[[RejectedCall], Awaitable[None]]


def _is_async(behaviour: Callable[..., Any]) -> bool:
    # Mirrors grpc.aio's own test for "async handler".
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


def _request_pid(request: object) -> str | None:
    try:
        pid = getattr(request, "pid", None)
    except Exception:  # noqa: BLE001 - a hostile/odd message must not break rejection handling
        return None
    return pid if isinstance(pid, str) and pid else None


def _bearer_token(metadata: Any) -> str:
    """The bearer token from call metadata; raises :class:`AuthError` if absent or malformed."""
    values = [value for key, value in (metadata or ()) if key.lower() == "authorization"]
    if not values:
        raise AuthError("UNAUTHENTICATED", "missing authorization metadata (expected 'Bearer <token>')")
    if len(values) > 1:
        raise AuthError("UNAUTHENTICATED", "more than one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        raise AuthError("UNAUTHENTICATED", "authorization metadata must be text")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("UNAUTHENTICATED", "authorization scheme must be Bearer")
    token = token.strip()
    if not token:
        raise AuthError("UNAUTHENTICATED", "empty bearer token")
    return token


def _names(roles: frozenset[str]) -> str:
    return "[" + ", ".join(sorted(roles)) + "]"


class AuthInterceptor(aio.ServerInterceptor):
    """Authenticates and authorises every non-public call (see module docstring).

    ``rules`` maps full method names to :class:`AccessRule` (default: :data:`RULES`).
    ``on_rejection`` is awaited (at most ``hook_timeout_s``; ``None``: no limit
    beyond the call's deadline) before each rejection is sent.
    """

    def __init__(
        self,
        verifier: TokenVerifier | Verifier,
        rules: Mapping[str, AccessRule] = RULES,
        on_rejection: RejectionHook | None = None,
        *,
        hook_timeout_s: float | None = 30.0,
    ) -> None:
        self.verifier = verifier
        self.rules = rules
        self.on_rejection = on_rejection
        self.hook_timeout_s = hook_timeout_s

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        rule = self.rules.get(method)
        handler = await continuation(handler_call_details)
        if handler is None or (rule is not None and rule.public):
            return handler  # unknown to the server (UNIMPLEMENTED) or public
        return self._wrap(handler, method, rule)

    # --------------------------------------------------------------- checks

    async def _authorize(
        self, method: str, rule: AccessRule | None, request: object, context: aio.ServicerContext
    ) -> Principal:
        """Verify the caller and apply the rule; aborts the call on failure."""
        try:
            token = _bearer_token(context.invocation_metadata())
            principal = await self.verifier.averify(token)
        except AuthError as exc:
            # UNAVAILABLE when the identity provider's keys cannot be fetched (issue 14); else UNAUTHENTICATED.
            code = grpc.StatusCode.UNAVAILABLE if exc.code == "UNAVAILABLE" else grpc.StatusCode.UNAUTHENTICATED
            await self._reject(context, method, code, exc.message, None, request)
        if rule is None:
            await self._reject(
                context,
                method,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} is not in the access table (denied by default)",
                principal,
                request,
            )
        if not rule.allows(principal.roles):
            await self._reject(
                context,
                method,
                grpc.StatusCode.PERMISSION_DENIED,
                f"role(s) {_names(principal.roles)} may not call {method}; "
                f"requires one of {_names(rule.roles)}",
                principal,
                request,
            )
        return principal

    async def _reject(
        self,
        context: aio.ServicerContext,
        method: str,
        code: grpc.StatusCode,
        message: str,
        principal: Principal | None,
        request: object,
    ) -> NoReturn:
        log.info("rejected %s: %s %s", method, code.name, message)
        if self.on_rejection is not None:
            try:
                peer = context.peer()
            except Exception:  # noqa: BLE001
                peer = ""
            rejected = RejectedCall(method, code.name, message, principal, _request_pid(request), peer or "", request)
            try:
                await asyncio.wait_for(self.on_rejection(rejected), self.hook_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the hook must never turn a rejection into anything else
                log.exception(
                    "on_rejection hook failed for %s (%s); the call is still rejected", method, code.name
                )
        trailing = (("www-authenticate", 'Bearer error="invalid_token"'),)
        await context.abort(code, message, trailing if code == grpc.StatusCode.UNAUTHENTICATED else ())
        raise RuntimeError("context.abort returned")  # unreachable: abort always raises

    # ------------------------------------------------------------- wrapping

    def _wrap(
        self, handler: grpc.RpcMethodHandler, method: str, rule: AccessRule | None
    ) -> grpc.RpcMethodHandler:
        return rewrap(
            handler,
            lambda inner, request_streaming, _response_streaming: self._wrap_behaviour(
                inner, method, rule, not request_streaming
            ),
        )

    def _wrap_behaviour(
        self, inner: Callable[..., Any], method: str, rule: AccessRule | None, unary_request: bool
    ) -> Callable[..., Any]:
        authorize = self._authorize

        if inspect.isasyncgenfunction(inner):

            async def streaming(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                principal = await authorize(method, rule, request if unary_request else None, context)
                token = _PRINCIPAL.set(principal)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    _reset(token)

            return streaming

        if inspect.iscoroutinefunction(inner):

            async def coroutine(request: Any, context: aio.ServicerContext) -> Any:
                principal = await authorize(method, rule, request if unary_request else None, context)
                token = _PRINCIPAL.set(principal)
                try:
                    return await inner(request, context)
                finally:
                    _reset(token)

            return coroutine

        log.error("%s has a synchronous behaviour; AuthInterceptor supports only async servicers", method)

        async def refuse(request: Any, context: aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.INTERNAL, "server misconfiguration: synchronous handler")

        return refuse


def _reset(token: contextvars.Token[Principal | None]) -> None:
    try:
        _PRINCIPAL.reset(token)
    except ValueError:  # finalised from another context (e.g. generator closed by GC)
        pass
