"""OpenTelemetry tracing (issue 14 item 2): off by default, spans per RPC, ledger call and SQL statement,
the caller's trace continued from gRPC metadata, exported as JSON lines or over OTLP to a real receiver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.settings import load_settings
from ciphercare.services.platform.telemetry import Tracing, read_spans
from ciphercare.services.web.backend import Services
from ciphercare.v1 import common_pb2, consent_pb2

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def start(tmp_path: Path, **overrides: object) -> Env:
    settings = make_settings(tmp_path / "svc", tracing_enabled=True, **overrides)
    return Env(server=ServerThread(settings).start(), issuer=DevIssuer.from_settings(settings))


def grant(env: Env, pid: str, metadata: tuple[tuple[str, str], ...] = ()) -> consent_pb2.GrantResponse:
    client = env.patient(pid)
    request = consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a",
                                       decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT"],
                                       data_classes=["Observation"], period=common_pb2.Period())
    response: consent_pb2.GrantResponse = client.consent.Grant(
        request, metadata=[*client._meta(), *metadata], timeout=15)
    client.close()
    return response


def test_tracing_is_off_by_default_and_the_ledger_never_imports_opentelemetry() -> None:
    assert load_settings().tracing_enabled is False
    code = (
        "import sys\n"
        "import ciphercare.ledger.gateway, ciphercare.ledger.embedded.ledger, ciphercare.ledger.fabric.ledger\n"
        "import ciphercare.services.platform.wiring, ciphercare.services.web.app\n"
        "from ciphercare.services.platform.settings import load_settings\n"
        "from ciphercare.services.platform.telemetry import Tracing\n"
        "assert Tracing.from_settings(load_settings()) is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_spans_for_rpc_ledger_and_store_continue_the_callers_trace(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    env = start(tmp_path, tracing_exporter="jsonl", tracing_jsonl_path=path)
    try:
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        response = grant(env, "pt-trace-0001", (("traceparent", traceparent),))
        with pytest.raises(grpc.RpcError) as refused:
            grant(env, "", (("traceparent", traceparent),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        env.server.stop()  # closes the app: the exporter is flushed
    spans = [s for s in read_spans(path) if s["trace_id"] == TRACE_ID]
    rpcs = [s for s in spans if s["name"] == "rpc /ciphercare.v1.ConsentService/Grant"]
    assert [s["attributes"]["rpc.grpc.status_code"] for s in rpcs] == ["OK", "INVALID_ARGUMENT"]
    assert all(s["parent_span_id"] == PARENT_ID and s["kind"] == "SERVER" for s in rpcs)
    ok_rpc = rpcs[0]
    submits = [s for s in spans if s["name"] == "ledger submit consent.Grant"]
    assert len(submits) == 1 and submits[0]["parent_span_id"] == ok_rpc["span_id"]
    assert submits[0]["attributes"]["ledger.tx_id"] == response.receipt.tx_id
    store = [s for s in spans if s["name"].startswith("store ")]
    assert store and {s["attributes"]["db.operation.name"] for s in store} >= {"INSERT"}
    assert all(s["parent_span_id"] == ok_rpc["span_id"] for s in store)
    for span in spans:  # no pid, no token, no document in any attribute
        text = json.dumps(span["attributes"])
        assert "pt-trace-0001" not in text and "Bearer" not in text and "resourceType" not in text


def test_the_web_backend_carries_its_trace_into_grpc(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    env = start(tmp_path, tracing_exporter="jsonl", tracing_jsonl_path=path)
    web_settings = make_settings(tmp_path / "web", tracing_enabled=True, tracing_exporter="jsonl",
                                 tracing_jsonl_path=tmp_path / "web-traces.jsonl")
    web_tracing = Tracing.from_settings(web_settings, service_suffix="-web")
    assert web_tracing is not None
    services = Services(env.server.target, interceptors=web_tracing.client_interceptors())
    try:
        token = env.token("hospital", org="hospital-a")
        with web_tracing.span("HTTP GET /portal", kind="SERVER") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            services.client(token).check("pt-trace-0002", "hospital-a", "TREAT", "Observation")
    finally:
        services.close()
        web_tracing.shutdown()
        env.server.stop()
    web_spans = read_spans(tmp_path / "web-traces.jsonl")
    assert [s["service"] for s in web_spans] == ["ciphercare-web"]
    server_spans = [s for s in read_spans(path) if s["trace_id"] == trace_id]
    assert [s["name"] for s in server_spans if s["kind"] == "SERVER"] == ["rpc /ciphercare.v1.ConsentService/Check"]
    assert server_spans[0]["service"] == "ciphercare"


class _Receiver:
    """A real OTLP/gRPC trace receiver (the collector's TraceService) collecting what it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        received = self.received = []  # type: list[Any]
        self.arrived = threading.Event()

        class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the proto's name
                received.append(request)
                parent.arrived.set()
                return trace_service_pb2.ExportTraceServiceResponse()

        parent = self
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def span_names(self) -> list[str]:
        return [span.name for request in self.received for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    running = _Receiver()
    try:
        yield running
    finally:
        running.server.stop(None)


def test_spans_are_exported_over_otlp(tmp_path: Path, receiver: _Receiver) -> None:
    env = start(tmp_path, tracing_exporter="otlp", tracing_endpoint=f"http://127.0.0.1:{receiver.port}")
    try:
        grant(env, "pt-trace-0003")
    finally:
        env.server.stop()  # shutdown flushes the batch processor
    assert receiver.arrived.wait(10)
    names = receiver.span_names()
    assert "rpc /ciphercare.v1.ConsentService/Grant" in names and "ledger submit consent.Grant" in names


def test_web_requests_get_a_span_without_identifiers_from_the_path(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from ciphercare.services.platform.telemetry import TracingMiddleware

    path = tmp_path / "web.jsonl"
    settings = make_settings(tmp_path, tracing_enabled=True, tracing_exporter="jsonl", tracing_jsonl_path=path)
    tracing = Tracing.from_settings(settings, service_suffix="-web")
    assert tracing is not None

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = TracingMiddleware(Starlette(routes=[Route("/portal/consents/{consent_id}", page)]), tracing)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/portal/consents/cns-pt-secret-0001", "raw_path": b"/portal/consents/cns-pt-secret-0001",
             "query_string": b"", "headers": [(b"host", b"127.0.0.1")], "server": ("127.0.0.1", 3000),
             "client": ("127.0.0.1", 50000), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    tracing.shutdown()
    [span] = read_spans(path)
    assert span["name"] == "HTTP GET /portal" and span["kind"] == "SERVER"
    assert span["attributes"]["http.response.status_code"] == 200
    assert "secret" not in json.dumps(span)
