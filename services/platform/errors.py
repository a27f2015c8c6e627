"""One table from domain errors to gRPC status codes, applied by one interceptor.

Servicers raise domain exceptions; :class:`ErrorMappingInterceptor` turns each
into a status with a precise message. A dependency that is down, slow or flaky
(the off-chain store's database, the ledger's storage or node) is UNAVAILABLE
with a readable message, or DEADLINE_EXCEEDED when the ledger did not confirm a
transaction in time (it may still commit). Anything unexpected becomes INTERNAL
with an opaque message (details go to the structured log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy import exc as sa_exc

from ciphercare.ledger.api import CommitError, EndorseError, LedgerError, LedgerTimeout
from ciphercare.services.platform.convert import ConversionError
from ciphercare.services.platform.handlers import Behaviour, rewrap

log = logging.getLogger("ciphercare.errors")


@dataclass
class ServiceError(Exception):
    """A servicer's own refusal with an explicit status."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return self.message


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def forbidden(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


def precondition(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


ENDORSE_CODES: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and caller-facing message for ``exc`` (the one table)."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, EndorseError):
        return ENDORSE_CODES.get(exc.code, grpc.StatusCode.INTERNAL), (
            exc.message if exc.code in ENDORSE_CODES else "the contract failed; see the server log"
        )
    if isinstance(exc, ConversionError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, LedgerTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, CommitError):
        return grpc.StatusCode.UNAVAILABLE, f"ledger commit failed for {exc.tx_id}; nothing was written"
    unavailable = dependency_unavailable(exc)
    if unavailable is not None:
        return grpc.StatusCode.UNAVAILABLE, unavailable
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"


#: SQLAlchemy errors that say the database could not be reached or did not answer in time (connection
#: refused or reset, server shutting down, pool exhausted, statement or lock timeout). Integrity and
#: programming errors are not among them: those are bugs (INTERNAL).
STORE_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def dependency_unavailable(exc: BaseException) -> str | None:
    """The caller-facing message when ``exc`` means a dependency is down, slow or flaky; else ``None``.

    The message names the dependency and says nothing of the request (no pid, no document).
    """
    if isinstance(exc, STORE_UNAVAILABLE_ERRORS) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return "the off-chain store is unavailable; nothing was written, retry later"
    if isinstance(exc, LedgerError):
        return "the ledger is unavailable; retry later"
    if isinstance(exc, ConnectionError):
        return "a service this call depends on is unavailable; retry later"
    return None


#: ``on_refusal(method, code, message, request, context)``: told of every refusal a servicer or contract
#: decided with one of :data:`RECORDED_CODES` (the access log records it), before the status is sent.
RefusalHook = Callable[[str, grpc.StatusCode, str, Any, grpc.aio.ServicerContext], Awaitable[None]]
RECORDED_CODES = frozenset({grpc.StatusCode.PERMISSION_DENIED})


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException, request: Any = None,
                 on_refusal: RefusalHook | None = None) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("unhandled error in %s", method, exc_info=(type(exc), exc, exc.__traceback__))
    elif dependency_unavailable(exc) is not None:
        # The operator needs to know which dependency failed and how; the first line of the driver's message
        # names it (SQLAlchemy puts the statement and its parameters on later lines, which are not logged).
        # Other dependencies' messages may carry keys or ids, so only the type is logged for them.
        detail = str(exc).splitlines()[0][:200] if isinstance(exc, sa_exc.SQLAlchemyError) and str(exc) else ""
        log.warning("dependency unavailable", extra={"method": method, "code": code.name,
                                                     "error": type(exc).__name__, "detail": detail})
    else:
        log.info("rpc refused", extra={"method": method, "code": code.name})
    if on_refusal is not None and code in RECORDED_CODES:
        try:
            await on_refusal(method, code, message, request, context)
        except Exception:  # noqa: BLE001 - recording must never change the refusal
            log.exception("refusal hook failed for %s", method)
    await context.abort(code, message)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary and unary-stream handler with :func:`status_for`.

    The wrapped handler of a method is built once and reused (handlers are
    per method, not per call), which keeps the per-call cost to one lookup.
    """

    def __init__(self, on_refusal: RefusalHook | None = None) -> None:
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler] = {}
        self.on_refusal = on_refusal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        key = (handler_call_details.method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrap(handler_call_details.method, handler)
            if len(self._wrapped) < 1024:
                self._wrapped[key] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        on_refusal = self.on_refusal

        def wrap(inner: Behaviour, _request_streaming: bool, response_streaming: bool) -> Behaviour:
            if response_streaming:

                async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    try:
                        async for item in inner(request, context):
                            yield item
                    except (grpc.aio.AbortError, grpc.aio.BaseError):
                        raise
                    except Exception as exc:  # noqa: BLE001 - mapped, logged and re-raised as a status
                        await _abort(context, method, exc, None if _request_streaming else request, on_refusal)

                return streaming

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner(request, context)
                except (grpc.aio.AbortError, grpc.aio.BaseError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped, logged and re-raised as a status
                    await _abort(context, method, exc, None if _request_streaming else request, on_refusal)

            return unary

        return rewrap(handler, wrap)
