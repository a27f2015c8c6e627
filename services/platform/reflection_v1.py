"""``grpc.reflection.v1`` beside ``v1alpha``.

The installed grpcio-reflection serves only ``grpc.reflection.v1alpha``. ``v1`` has the same messages
with the same field numbers (only the package differs), so the same servicer answers both: this module
registers the v1alpha servicer's behaviour under the v1 method name, with the v1alpha message codecs.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

SERVICE_NAME_V1 = "grpc.reflection.v1.ServerReflection"
METHOD_V1 = f"/{SERVICE_NAME_V1}/ServerReflectionInfo"


def enable_server_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` under both v1alpha and v1 (each lists both)."""
    names = tuple(dict.fromkeys([*service_names, reflection.SERVICE_NAME, SERVICE_NAME_V1]))
    reflection.enable_server_reflection(names, server)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME_V1, {"ServerReflectionInfo": handler}),)
    )
