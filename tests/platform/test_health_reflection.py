"""grpcurl-style discovery works without a token: health checking and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_health_is_public_and_serving(env) -> None:
    with grpc.insecure_channel(env.server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ciphercare.v1.ConsentService", "ciphercare.v1.AccessLogService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_api(env) -> None:
    with grpc.insecure_channel(env.server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"ciphercare.v1.ConsentService", "ciphercare.v1.AccessLogService", "grpc.health.v1.Health"} <= services
        symbol = database.FindFileContainingSymbol("ciphercare.v1.ConsentService")
        assert symbol.package == "ciphercare.v1"
        assert any(s.name == "ConsentService" and any(m.name == "Check" for m in s.method) for s in symbol.service)


def test_api_calls_without_a_token_are_refused(env) -> None:
    from ciphercare.v1 import consent_pb2, consent_pb2_grpc

    with grpc.insecure_channel(env.server.target) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(consent_pb2.CheckRequest(pid="pt-1", recipient_organization="hospital-a", purpose="TREAT",
                                                data_class="Observation"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
