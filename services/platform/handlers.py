"""One way to wrap a gRPC method handler, shared by every server interceptor.

A handler carries exactly one behaviour (unary-unary, unary-stream, stream-unary or
stream-stream). :func:`rewrap` picks it, hands it to ``wrap`` with the handler's
streaming shape, and rebuilds a handler of the same kind and codec around the result.
:class:`DecodeGuardInterceptor` also swaps the request deserialiser, so an undecodable
request is INVALID_ARGUMENT rather than UNKNOWN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

Behaviour = Callable[..., Any]
#: ``wrap(inner, request_streaming, response_streaming) -> behaviour``
Wrapper = Callable[[Behaviour, bool, bool], Behaviour]
State = TypeVar("State")

_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def rewrap(handler: grpc.RpcMethodHandler, wrap: Wrapper) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour, request_streaming, response_streaming)``."""
    request_streaming = bool(handler.request_streaming)
    response_streaming = bool(handler.response_streaming)
    attribute, factory = _FACTORIES[(request_streaming, response_streaming)]
    inner = getattr(handler, attribute)
    if inner is None:
        return handler
    return factory(
        wrap(inner, request_streaming, response_streaming),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def around(handler: grpc.RpcMethodHandler, start: Callable[[aio.ServicerContext], State],
           finish: Callable[[State, aio.ServicerContext, BaseException | None], None]) -> grpc.RpcMethodHandler:
    """``handler`` with ``start(context)`` before each call and ``finish(state, context, error)`` after it.

    ``finish`` runs once the call is over: after the unary result, after a stream's last item, or when the
    behaviour raised (``error`` is the exception, re-raised afterwards). Observers (metrics, tracing) use it.
    """

    def wrap(inner: Behaviour, request_streaming: bool, response_streaming: bool) -> Behaviour:
        if response_streaming:
            async def streamed(request: Any, context: aio.ServicerContext) -> Any:
                state, error = start(context), None
                try:
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(state, context, error)
            return streamed

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            state, error = start(context), None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(state, context, error)
        return unary

    return rewrap(handler, wrap)


def final_code(context: aio.ServicerContext, error: BaseException | None) -> str:
    """The name of the status a finished call ended with (OK, or UNKNOWN for an error gRPC did not map)."""
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


# --- Undecodable requests -----------------------------------------------------------------------------
#
# Undecodable requests get INVALID_ARGUMENT, not UNKNOWN.
#
# gRPC deserialises a request before any interceptor behaviour runs; a deserialiser that raises ends the
# call with UNKNOWN (and an error-level log line). :class:`DecodeGuardInterceptor` (first in the chain)
# swaps each handler's deserialiser for one that never raises: bytes that are not a valid message of the
# method's request type (random bytes, invalid UTF-8 in a string field, nesting past protobuf's recursion
# limit) become an :class:`Undecodable` marker, and the wrapped behaviour refuses it with
# INVALID_ARGUMENT and a fixed message (the input is never echoed).


@dataclass(frozen=True)
class Undecodable:
    """A request message that could not be decoded."""

    size: int


MESSAGE = "the request is not a valid protobuf message of this method's request type"


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - DecodeError, RecursionError, UnicodeDecodeError, ...
            return Undecodable(len(data))

    return decode


async def _refuse(context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)


async def _checked_stream(requests: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
    async for message in requests:
        if isinstance(message, Undecodable):
            await _refuse(context)
        yield message


def _wrap(inner: Callable[..., Any], request_streaming: bool, response_streaming: bool) -> Callable[..., Any]:
    if response_streaming:

        async def streaming(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if request_streaming:
                request = _checked_stream(request, context)
            elif isinstance(request, Undecodable):
                await _refuse(context)
            async for item in inner(request, context):
                yield item

        return streaming

    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        if request_streaming:
            request = _checked_stream(request, context)
        elif isinstance(request, Undecodable):
            await _refuse(context)
        result = inner(request, context)
        return await result if isinstance(result, Awaitable) else result

    return unary


class DecodeGuardInterceptor(aio.ServerInterceptor):
    """Refuses undecodable requests with INVALID_ARGUMENT (see module docstring). Put it first."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        request_streaming = bool(handler.request_streaming)
        response_streaming = bool(handler.response_streaming)
        attribute, factory = _FACTORIES[(request_streaming, response_streaming)]
        inner = getattr(handler, attribute)
        if inner is None:
            return handler
        return factory(
            _wrap(inner, request_streaming, response_streaming),
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
