"""Telemetry: Prometheus metrics (:mod:`.metrics`) and OpenTelemetry tracing (this module).

Tracing is off by default (``CIPHERCARE_TRACING_ENABLED=false``).

When enabled, :class:`Tracing` owns a tracer provider of its own (never the process-global one, so
several servers in one process keep their spans apart) and gives

* :class:`TracingInterceptor` -- one SERVER span per RPC, continuing the caller's trace from the W3C
  ``traceparent`` gRPC metadata;
* ledger spans around every ``evaluate`` / ``submit`` of a contract handle
  (:mod:`ciphercare.services.platform.gateway`; the ledger room itself never imports OpenTelemetry);
* store spans around every SQL statement of the off-chain store (SQLAlchemy engine events);
* :meth:`Tracing.client_interceptors` for the web app's backend, which injects the current trace context
  into the metadata of its gRPC calls, and :class:`TracingMiddleware` for its HTTP requests.

Attributes are method names, status codes, contract and function names, transaction ids and SQL verbs
only: never a pid, a token, a document or a feature value (tests/privacy scans exported spans for the
canary PHI). Exporters: OTLP over gRPC to ``tracing_endpoint``, or JSON lines to a file
(:mod:`ciphercare.services.platform.telemetry.export`). OpenTelemetry is imported only when tracing is on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from ciphercare.services.platform.handlers import around, final_code

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from ciphercare.services.platform.settings import Settings

#: The instrumentation scope of every ciphercare span.
SCOPE = "ciphercare"


class Tracing:
    """A tracer provider with its exporter, made from settings; ``None`` from :meth:`from_settings` when off."""

    def __init__(self, provider: Any, tracer: Tracer) -> None:
        self.provider = provider
        self.tracer = tracer

    @classmethod
    def from_settings(cls, settings: Settings, service_suffix: str = "") -> Tracing | None:
        """The configured tracing, or ``None`` when off; ``service_suffix`` names a component (``-web``)."""
        if not settings.tracing_enabled:
            return None
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create({"service.name": settings.tracing_service_name + service_suffix})
        sampler = ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))
        provider = TracerProvider(resource=resource, sampler=sampler)
        if settings.tracing_exporter == "jsonl":
            path = settings.tracing_jsonl_path or settings.data_dir / "traces.jsonl"
            from ciphercare.services.platform.telemetry.export import JsonLinesSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint,
                                        insecure=settings.tracing_otlp_insecure)
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, provider.get_tracer(SCOPE))

    # -- spans ---------------------------------------------------------------------------------------

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None, kind: str = "INTERNAL") -> Iterator[Span]:
        """A child span of the current one; an exception marks it as an error (type name only, no message)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self.tracer.start_as_current_span(name, kind=SpanKind[kind], attributes=attributes,
                                               record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise

    def instrument_engine(self, engine: Any) -> None:
        """A span per SQL statement of ``engine``: the verb and the dialect, never the statement or values."""
        from opentelemetry.trace import SpanKind
        from sqlalchemy import event

        tracer = self.tracer
        dialect = engine.dialect.name

        def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
            span = tracer.start_span(f"store {verb}", kind=SpanKind.CLIENT,
                                     attributes={"db.system": dialect, "db.operation.name": verb})
            conn.info.setdefault("ciphercare.spans", []).append(span)

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            spans = conn.info.get("ciphercare.spans")
            if spans:
                spans.pop().end()

        def failed(exception_context: Any) -> None:
            from opentelemetry.trace import Status, StatusCode

            conn = exception_context.connection
            spans = conn.info.get("ciphercare.spans") if conn is not None else None
            if spans:
                span = spans.pop()
                span.set_status(Status(StatusCode.ERROR, type(exception_context.original_exception).__name__))
                span.end()

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "handle_error", failed)

    # -- propagation ---------------------------------------------------------------------------------

    def client_interceptors(self) -> list[grpc.UnaryUnaryClientInterceptor | grpc.UnaryStreamClientInterceptor]:
        """Client interceptors that put the current trace context in each call's metadata (W3C traceparent)."""
        return [_InjectingInterceptor()]

    def server_interceptor(self) -> TracingInterceptor:
        return TracingInterceptor(self)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        self.provider.shutdown()


def inject_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str | bytes]]:
    """``metadata`` plus the current trace context (``traceparent``, ``tracestate``) if a span is active."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return [*(metadata or ()), *carrier.items()]


class _ClientCallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str | bytes]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _InjectingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(details, inject_metadata(details.metadata))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)


class TracingInterceptor(aio.ServerInterceptor):
    """A SERVER span per call, child of the caller's ``traceparent``; attributes: method, status code."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        tracing = self.tracing

        def start(context: aio.ServicerContext) -> tuple[Any, Any]:
            from opentelemetry import context as otel_context
            from opentelemetry.trace import SpanKind, set_span_in_context
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            carrier = {k: v for k, v in (context.invocation_metadata() or ())
                       if k in ("traceparent", "tracestate") and isinstance(v, str)}
            parent = TraceContextTextMapPropagator().extract(carrier)
            span = tracing.tracer.start_span(f"rpc {method}", context=parent, kind=SpanKind.SERVER, attributes={
                "rpc.system": "grpc", "rpc.service": service, "rpc.method": name})
            token = otel_context.attach(set_span_in_context(span, parent))
            return span, token

        def finish(started: tuple[Any, Any], context: aio.ServicerContext, error: BaseException | None) -> None:
            from opentelemetry import context as otel_context
            from opentelemetry.trace import Status, StatusCode

            span, token = started
            name = final_code(context, error)
            span.set_attribute("rpc.grpc.status_code", name)
            if name != "OK":
                span.set_status(Status(StatusCode.ERROR, name))
            span.end()
            try:
                otel_context.detach(token)
            except ValueError:  # finished in another context (a generator closed elsewhere)
                pass

        return around(handler, start, finish)


class TracingMiddleware:
    """ASGI middleware: a SERVER span per HTTP request of the web app (method and route template only)."""

    def __init__(self, app: Any, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def sending(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 0))
            await send(message)

        # The first path segment only: later segments may carry identifiers (consent or event ids).
        section = "/" + str(scope.get("path", "/")).lstrip("/").split("/", 1)[0]
        with self.tracing.span(f"HTTP {scope.get('method', '')} {section}", {"http.request.method":
                               str(scope.get("method", "")), "url.path.section": section}, kind="SERVER") as span:
            await self.app(scope, receive, sending)
            if "code" in status:
                span.set_attribute("http.response.status_code", status["code"])


def read_spans(path: Path, wait_s: float = 0.0) -> list[dict[str, Any]]:
    """The spans a JSON-lines exporter wrote (tests, operators)."""
    deadline = time.monotonic() + wait_s
    while True:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if text or time.monotonic() >= deadline:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        time.sleep(0.05)
