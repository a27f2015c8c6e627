"""AuthInterceptor over a real grpc.aio server and client channel on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from testkit.identity import make_verifier

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.interceptor import (
    AuthInterceptor,
    NoPrincipalError,
    RejectedCall,
    current_principal,
    principal_or_none,
)
from ciphercare.services.identity.rules import RULES, AccessRule

CONSENT = "ciphercare.v1.ConsentService"
ACCESS_LOG = "ciphercare.v1.AccessLogService"
SCORING = "ciphercare.v1.ScoringService"


def _who() -> bytes:
    p = current_principal()
    return json.dumps({"sub": p.subject, "org": p.org, "roles": sorted(p.roles), "pid": p.pid}).encode()


def _request(raw: bytes) -> SimpleNamespace:
    """Request 'message' with an optional pid field (like the protobuf requests)."""
    doc = json.loads(raw or b"{}")
    return SimpleNamespace(pid=doc.get("pid", ""), raw=raw)


async def _unary(request: SimpleNamespace, context: grpc.aio.ServicerContext) -> bytes:
    return _who()


async def _unary_stream(request: SimpleNamespace, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        await asyncio.sleep(0)
        yield _who()


async def _unary_stream_writer(request: SimpleNamespace, context: grpc.aio.ServicerContext) -> None:
    await context.write(_who())
    await context.write(_who())


async def _stream_unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    count = 0
    async for _ in requests:
        count += 1
    return _who() + b"|" + str(count).encode()


async def _stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for item in requests:
        yield item + b"|" + _who()


def _sync_unary(request: Any, context: Any) -> bytes:
    return b"ran without auth"


def _handlers() -> list[grpc.GenericRpcHandler]:
    def uu(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_request)

    return [
        grpc.method_handlers_generic_handler(
            CONSENT,
            {
                "Grant": uu(_unary),
                "Get": uu(_unary),
                "Check": uu(_sync_unary),
                "Secret": uu(_unary),  # implemented but absent from the access table
                "ListForPatient": grpc.unary_stream_rpc_method_handler(
                    _unary_stream, request_deserializer=_request
                ),
                "GetHistory": grpc.unary_stream_rpc_method_handler(
                    _unary_stream_writer, request_deserializer=_request
                ),
            },
        ),
        grpc.method_handlers_generic_handler(
            ACCESS_LOG,
            {
                "Record": uu(_unary),
                "Watch": grpc.unary_stream_rpc_method_handler(_unary_stream, request_deserializer=_request),
            },
        ),
        grpc.method_handlers_generic_handler(
            SCORING,
            {
                "RegisterContext": grpc.stream_unary_rpc_method_handler(_stream_unary),
                "Score": grpc.stream_stream_rpc_method_handler(_stream_stream),
            },
        ),
    ]


@asynccontextmanager
async def serving(
    interceptor: AuthInterceptor,
) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers(_handlers())
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[RejectedCall] = []
        self.fail = fail

    async def __call__(self, call: RejectedCall) -> None:
        self.calls.append(call)
        if self.fail:
            raise RuntimeError("hook exploded")


def _md(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return None if token is None else (("authorization", f"Bearer {token}"),)


def run(
    dev_server: DevIssuerServer,
    scenario: Callable[[grpc.aio.Channel], Awaitable[None]],
    hook: Recorder | None = None,
    rules: Any = RULES,
) -> None:
    interceptor = AuthInterceptor(make_verifier(dev_server), rules, on_rejection=hook)

    async def main() -> None:
        async with serving(interceptor) as channel:
            await scenario(channel)

    asyncio.run(main())


async def call_unary(channel: grpc.aio.Channel, method: str, token: str | None, body: bytes = b"{}") -> bytes:
    return await channel.unary_unary(method)(body, metadata=_md(token), timeout=10)


async def expect_status(
    awaitable: Awaitable[Any], code: grpc.StatusCode, fragment: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value
    assert fragment in (info.value.details() or ""), info.value.details()
    return info.value


# --------------------------------------------------------------------- tests


def test_no_token_is_unauthenticated(dev_server: DevIssuerServer) -> None:
    hook = Recorder()

    async def scenario(channel: grpc.aio.Channel) -> None:
        err = await expect_status(
            call_unary(channel, f"/{CONSENT}/Grant", None, b'{"pid": "P-1"}'),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing authorization metadata",
        )
        assert ("www-authenticate", 'Bearer error="invalid_token"') in tuple(err.trailing_metadata() or ())

    run(dev_server, scenario, hook)
    (call,) = hook.calls
    assert call.method == f"/{CONSENT}/Grant" and call.code == "UNAUTHENTICATED"
    assert call.principal is None and call.pid == "P-1" and "missing" in call.message and call.peer


def test_bad_token_is_unauthenticated(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    good = dev_issuer.issue("alice", ["patient"], None, pid="P-1")
    h, p, s = good.split(".")
    forged = f"{h}.{p}.{s[:10]}{'A' if s[10] != 'A' else 'B'}{s[11:]}"
    expired = dev_issuer.issue("alice", ["patient"], None, ttl_s=-600)

    async def scenario(channel: grpc.aio.Channel) -> None:
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Get", forged), grpc.StatusCode.UNAUTHENTICATED, "bad signature"
        )
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Get", expired), grpc.StatusCode.UNAUTHENTICATED, "token expired"
        )
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Get", "garbage"),
            grpc.StatusCode.UNAUTHENTICATED,
            "malformed token",
        )
        basic = channel.unary_unary(f"/{CONSENT}/Get")(b"{}", metadata=(("authorization", "Basic abc"),))
        await expect_status(basic, grpc.StatusCode.UNAUTHENTICATED, "scheme must be Bearer")

    run(dev_server, scenario)


def test_wrong_role_is_permission_denied(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    hook = Recorder()
    patient = dev_issuer.issue("pat", ["patient"], None, pid="P-7")

    async def scenario(channel: grpc.aio.Channel) -> None:
        await expect_status(
            call_unary(channel, f"/{ACCESS_LOG}/Record", patient, b'{"pid": "P-42"}'),
            grpc.StatusCode.PERMISSION_DENIED,
            f"role(s) [patient] may not call /{ACCESS_LOG}/Record; requires one of [clinician, hospital]",
        )

    run(dev_server, scenario, hook)
    (call,) = hook.calls
    assert call.code == "PERMISSION_DENIED" and call.method == f"/{ACCESS_LOG}/Record"
    assert call.principal == Principal("pat", "", frozenset({"patient"}), "ciphercare-dev", "P-7")
    assert call.pid == "P-42"  # from the request message, not the token


def test_right_role_handler_sees_principal(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    hook = Recorder()
    clinician = dev_issuer.issue("dr-who", ["clinician", "offline_access"], "hospital-a")
    hospital = dev_issuer.issue("svc-a", ["hospital"], "hospital-a")

    async def scenario(channel: grpc.aio.Channel) -> None:
        body = json.loads(await call_unary(channel, f"/{CONSENT}/Grant", clinician, b'{"pid": "P-1"}'))
        assert body == {"sub": "dr-who", "org": "hospital-a", "roles": ["clinician"], "pid": None}
        # unary_stream (async generator and writer API)
        items = [
            json.loads(x)
            async for x in channel.unary_stream(f"/{CONSENT}/ListForPatient")(b"{}", metadata=_md(clinician))
        ]
        assert [i["sub"] for i in items] == ["dr-who"] * 3
        items = [
            json.loads(x)
            async for x in channel.unary_stream(f"/{CONSENT}/GetHistory")(b"{}", metadata=_md(clinician))
        ]
        assert [i["sub"] for i in items] == ["dr-who"] * 2

        # stream_unary
        async def requests() -> AsyncIterator[bytes]:
            for i in range(4):
                yield str(i).encode()

        reply = await channel.stream_unary(f"/{SCORING}/RegisterContext")(requests(), metadata=_md(hospital))
        who, count = reply.split(b"|")
        assert json.loads(who)["sub"] == "svc-a" and count == b"4"
        # stream_stream
        replies = [
            r async for r in channel.stream_stream(f"/{SCORING}/Score")(requests(), metadata=_md(hospital))
        ]
        assert len(replies) == 4 and all(
            json.loads(r.split(b"|", 1)[1])["org"] == "hospital-a" for r in replies
        )
        # Streaming methods are protected too. (Request streams are left open: the server rejects
        # before reading, and a client still pushing requests would see its own send fail instead.)
        unary_reply = channel.stream_unary(f"/{SCORING}/RegisterContext")(metadata=_md(clinician))
        await expect_status(unary_reply, grpc.StatusCode.PERMISSION_DENIED, "requires one of [hospital]")
        stream = channel.unary_stream(f"/{ACCESS_LOG}/Watch")(b"{}", metadata=_md(clinician))
        await expect_status(stream.read(), grpc.StatusCode.PERMISSION_DENIED, "may not call")
        bidi = channel.stream_stream(f"/{SCORING}/Score")()
        await expect_status(bidi.read(), grpc.StatusCode.UNAUTHENTICATED, "missing authorization")

    run(dev_server, scenario, hook)
    assert [c.pid for c in hook.calls] == [None, None, None]  # streaming requests carry no pid
    assert principal_or_none() is None


def test_unknown_method_is_denied(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    hook = Recorder()
    admin = dev_issuer.issue("root", ["admin"], "ops")

    async def scenario(channel: grpc.aio.Channel) -> None:
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Secret", admin),
            grpc.StatusCode.PERMISSION_DENIED,
            "not in the access table",
        )
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Secret", None),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing authorization",
        )
        # Not implemented at all: the server answers UNIMPLEMENTED, nothing runs.
        await expect_status(call_unary(channel, f"/{CONSENT}/Nope", admin), grpc.StatusCode.UNIMPLEMENTED, "")

    run(dev_server, scenario, hook)
    assert [(c.code, c.principal is not None) for c in hook.calls] == [
        ("PERMISSION_DENIED", True),
        ("UNAUTHENTICATED", False),
    ]


def test_health_is_public(dev_server: DevIssuerServer) -> None:
    hook = Recorder()

    async def scenario(channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    run(dev_server, scenario, hook)
    assert hook.calls == []


def test_failing_hook_cannot_turn_rejection_into_success(
    dev_server: DevIssuerServer, dev_issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Recorder(fail=True)
    patient = dev_issuer.issue("pat", ["patient"], None)

    async def scenario(channel: grpc.aio.Channel) -> None:
        await expect_status(
            call_unary(channel, f"/{ACCESS_LOG}/Record", patient),
            grpc.StatusCode.PERMISSION_DENIED,
            "may not call",
        )
        await expect_status(
            call_unary(channel, f"/{ACCESS_LOG}/Record", None), grpc.StatusCode.UNAUTHENTICATED, "missing"
        )

    with caplog.at_level(logging.ERROR, logger="ciphercare.services.identity.interceptor"):
        run(dev_server, scenario, hook)
    assert len(hook.calls) == 2
    assert any("on_rejection hook failed" in r.getMessage() for r in caplog.records)
    assert patient not in caplog.text  # no token contents in logs


def test_sync_behaviour_refused_not_run(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("pat", ["patient"], None)

    async def scenario(channel: grpc.aio.Channel) -> None:
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Check", token), grpc.StatusCode.INTERNAL, "synchronous handler"
        )

    run(dev_server, scenario)


def test_custom_rules_table(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    rules = {f"/{CONSENT}/Get": AccessRule(public=True)}
    patient = dev_issuer.issue("pat", ["patient"], None)

    async def scenario(channel: grpc.aio.Channel) -> None:
        # Public: runs without a token, and the servicer sees no principal.
        await expect_status(call_unary(channel, f"/{CONSENT}/Get", None), grpc.StatusCode.UNKNOWN, "")
        await expect_status(
            call_unary(channel, f"/{CONSENT}/Grant", patient),
            grpc.StatusCode.PERMISSION_DENIED,
            "not in the access table",
        )

    run(dev_server, scenario, rules=rules)


def test_current_principal_outside_a_call() -> None:
    with pytest.raises(NoPrincipalError):
        current_principal()


def test_rules_table_shape() -> None:
    public = {m for m, r in RULES.items() if r.public}
    assert public == {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
    assert RULES[f"/{ACCESS_LOG}/Watch"].roles == {"hospital", "compliance-officer", "admin"}
    assert RULES[f"/{CONSENT}/Check"].roles == {"patient", "clinician", "hospital", "compliance-officer"}
    assert RULES[f"/{SCORING}/GetModelInfo"].roles == {"hospital", "clinician"}
    assert len(RULES) == 7 + 7 + 3 + 4 + 7 + 3 + 4
    compliance = "ciphercare.v1.ComplianceService"
    assert RULES[f"/{compliance}/ListFlags"].roles == {"hospital", "compliance-officer", "admin"}
    assert RULES[f"/{compliance}/Export"].roles == {"clinician", "hospital", "compliance-officer", "admin"}
    # consent 6, access log 7, scoring 3, break-glass 7 and FHIR 3 (issue 15), health and reflection 4
    assert RULES["/ciphercare.v1.BreakGlassService/Declare"].roles == {"clinician"}
    assert RULES["/ciphercare.v1.BreakGlassService/Review"].roles == {"compliance-officer"}
    with pytest.raises(ValueError):
        AccessRule(roles=frozenset({"root"}))
    with pytest.raises(ValueError):
        AccessRule()
