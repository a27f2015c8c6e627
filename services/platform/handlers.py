"""One way to wrap a gRPC method handler, shared by every server interceptor.

A handler carries exactly one behaviour (unary-unary, unary-stream, stream-unary or
stream-stream). :func:`rewrap` picks it, hands it to ``wrap`` with the handler's
streaming shape, and rebuilds a handler of the same kind and codec around the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]
#: ``wrap(inner, request_streaming, response_streaming) -> behaviour``
Wrapper = Callable[[Behaviour, bool, bool], Behaviour]

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
