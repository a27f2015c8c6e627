"""Wiring: build every part from :class:`Settings` and serve them over gRPC.

``Application`` owns the ledger, the off-chain store, the token verifier and,
in the embedded default, the development identity provider. ``serve`` adds
health checking and reflection so ``grpcurl`` works out of the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.transport import EmbeddedTransport
from ciphercare.ledger.gateway import GatewayOptions, Transport
from ciphercare.services.audit.compliance import ComplianceServicer  # compliance (issue 15)
from ciphercare.services.audit.refusals import Refusal, RefusalRecorder, SecurityLog
from ciphercare.services.audit.servicer import AccessLogServicer, AccessProjection
from ciphercare.services.consent.breakglass import BreakGlassServicer
from ciphercare.services.consent.fhir_service import FhirServicer
from ciphercare.services.consent.servicer import ConsentServicer
from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.devlogin import DevLogin
from ciphercare.services.identity.interceptor import AuthInterceptor, RejectedCall, principal_or_none
from ciphercare.services.identity.jwks import JwksError
from ciphercare.services.identity.rules import RULES
from ciphercare.services.identity.token_cache import CachingVerifier
from ciphercare.services.identity.tokens import TokenVerifier
from ciphercare.services.platform.errors import ErrorMappingInterceptor
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.handlers import DecodeGuardInterceptor
from ciphercare.services.platform.projections import ProjectionRunner
from ciphercare.services.platform.reflection_v1 import SERVICE_NAME_V1, enable_server_reflection
from ciphercare.services.platform.replicas import reuseport_options, writer_socket_path, writer_socket_usable
from ciphercare.services.platform.settings import Settings
from ciphercare.services.platform.telemetry import Tracing
from ciphercare.services.platform.telemetry.metrics import Metrics, MetricsInterceptor
from ciphercare.services.platform.tls import ClientCertificateInterceptor, server_credentials
from ciphercare.services.privacy.operations import PseudonymGuardInterceptor, ledger_owner_lock, open_offchain_store
from ciphercare.services.scoring.servicer import ScoringServicer
from ciphercare.services.store import OffchainStore
from ciphercare.services.store.consistency import PrivacyProjection, check_store
from ciphercare.v1 import (
    access_log_pb2,
    access_log_pb2_grpc,
    breakglass_pb2,
    breakglass_pb2_grpc,
    compliance_pb2,
    compliance_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    fhir_pb2,
    fhir_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)

log = logging.getLogger("ciphercare.server")

#: The application services: each has a health status of its own (and "" covers the server).
HEALTH_NAMES = (
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    access_log_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name,
    scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name,
    compliance_pb2.DESCRIPTOR.services_by_name["ComplianceService"].full_name,  # compliance (issue 15)
)
SERVICE_NAMES = (
    *HEALTH_NAMES,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    SERVICE_NAME_V1,
    breakglass_pb2.DESCRIPTOR.services_by_name["BreakGlassService"].full_name,
    fhir_pb2.DESCRIPTOR.services_by_name["FhirService"].full_name,
)

#: The server's own ledger identity (opening a Fabric connection); refusals are never recorded under it.
GATEWAY_PRINCIPAL = Principal(subject="service:ciphercare-gateway", org="ciphercare", roles=frozenset(),
                              client_id="ciphercare-server")

#: The service identity that writes the consent policy (consent:SetPolicy needs the admin role).
POLICY_ADMIN = Principal(subject="service:ciphercare-policy", org="ciphercare", roles=frozenset({"admin"}),
                         client_id="ciphercare-server")


def open_ledger(settings: Settings) -> EmbeddedLedger:
    """The configured ledger backend."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.ledger_backend == "fabric":  # fabricgw: a Fabric peer or `ciphercare ledger serve`
        from ciphercare.ledger.fabric.ledger import open_fabric_ledger

        # Duck-typed like EmbeddedLedger for what the wiring uses (size, stats, close, the old Ledger protocol).
        return open_fabric_ledger(settings, GATEWAY_PRINCIPAL)  # type: ignore[return-value]
    return open_embedded_ledger(settings)


def open_embedded_ledger(settings: Settings, **node: Any) -> EmbeddedLedger:
    """The embedded ledger with every integrity setting: the one constructor for ``up`` and ``ledger serve``.

    ``node``: what only the Fabric Gateway node adds (channel, chaincode name, MSP directory). Both get the
    published-checkpoint file (a node refuses to start on a rolled-back log), retired keys, the key-mode check
    and the witness policy (every checkpoint is submitted to the witnesses)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_path = settings.resolved_ledger_key_path
    if key_path.resolve().is_relative_to(settings.data_dir.resolve()):
        log.warning("the checkpoint signing key is kept with the data it signs; set CIPHERCARE_CHECKPOINT_KEY_PATH "
                    "to a place the data's administrators cannot read (docs/TRANSPARENCY.md)",
                    extra={"key_path": str(key_path)})
    return EmbeddedLedger(
        path=settings.resolved_ledger_path,
        signing_key_path=settings.resolved_ledger_key_path,
        origin=settings.ledger_origin,
        chaincode=new_chaincode(),
        max_batch=settings.ledger_group_commit_max_batch,
        max_wait_ms=settings.ledger_group_commit_max_wait_ms,
        # ledger integrity (issue 11): rotation, the published-checkpoint file, key file mode enforced
        retired_vkeys=[k.strip() for k in settings.ledger_retired_vkeys.split(",") if k.strip()],
        published_path=settings.resolved_ledger_published_path,
        strict_key_mode=True,
        witness_policy=_witness_policy(settings),
        witness_timeout_s=settings.witness_timeout_s,
        witness_wait_ms=settings.witness_wait_ms,
        **node,
    )


def _witness_policy(settings: Settings) -> Any:
    """The witness policy file named by CIPHERCARE_WITNESS_POLICY (ledger integrity, issue 11), or None."""
    if settings.witness_policy is None:
        return None
    from ciphercare.ledger.witness.policy import Policy

    return Policy.load(settings.witness_policy)


def open_store(settings: Settings) -> OffchainStore:
    return open_offchain_store(settings)  # pool, timeouts, key-encryption key, Alembic to head


@dataclass
class Application:
    """Every long-lived part of a ciphercare server, built from settings."""

    settings: Settings
    ledger: EmbeddedLedger
    store: OffchainStore
    verifier: CachingVerifier
    dev_issuer_server: DevIssuerServer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    owner_lock: Any = None  # the embedded ledger's single-owner lock (services/privacy/operations.py)
    _handles: ContractHandles | None = None
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing | None = None  # OpenTelemetry, off by default (services/platform/telemetry.py)
    metrics_port: int = 0
    _metrics_server: Any = None
    _projections: ProjectionRunner | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Application:
        dev_server = None
        if settings.dev_issuer_enabled:
            issuer = DevIssuer.from_settings(settings)
            dev_server = DevIssuerServer.for_issuer(issuer, settings)
            dev_server.login = DevLogin.from_settings(issuer, settings)  # browser login for the web app
            dev_server.start()
        owner_lock = ledger_owner_lock(settings)
        ledger = open_ledger(settings)
        store = open_store(settings)
        token_verifier = TokenVerifier.from_settings(settings)
        try:
            # Warm the key cache now, so the first burst of requests never races for the first fetch.
            token_verifier.jwks.refresh()
        except JwksError as exc:  # the IdP may be down at start; requests fetch the keys later
            log.warning("JWKS not fetched at start-up; will retry on first use", extra={"error": type(exc).__name__})
        verifier = CachingVerifier(token_verifier)
        tracing = Tracing.from_settings(settings)
        if tracing is not None:
            tracing.instrument_engine(store.engine)
        return cls(settings=settings, ledger=ledger, store=store, verifier=verifier, dev_issuer_server=dev_server,
                   owner_lock=owner_lock, tracing=tracing)

    @property
    def handles(self) -> ContractHandles:
        """Contract handles for the services (the only way they reach the ledger)."""
        if self._handles is None:
            options = GatewayOptions(commit_status_timeout_s=self.settings.ledger_submit_timeout_s)
            transport: Transport = EmbeddedTransport(self.ledger)  # type: ignore[arg-type]
            if self.settings.ledger_backend == "fabric":  # fabricgw: the Fabric Gateway client
                from ciphercare.ledger.fabric.ledger import FabricLedger
                from ciphercare.ledger.fabric.transport import FabricTransport

                assert isinstance(self.ledger, FabricLedger)
                transport = FabricTransport(self.ledger)
            self._handles = ContractHandles(transport, options, tracing=self.tracing)
        return self._handles

    @property
    def projections(self) -> ProjectionRunner:
        """One runner feeding every off-chain projection (access-event index, privacy)."""
        if self._projections is None:
            self._projections = ProjectionRunner(
                self.handles, [AccessProjection(self.store), PrivacyProjection(self.handles, self.store)]
            )
        return self._projections

    @property
    def refusals(self) -> RefusalRecorder:
        """Refusals: the security log for unauthenticated callers, aggregated denied events for the rest."""
        recorder = getattr(self, "_refusals", None)
        if recorder is None:
            handles = self.handles

            async def submit(principal: Principal, event_json: str) -> None:
                await handles.accesslog(principal).submit("Record", event_json)

            recorder = RefusalRecorder(
                submit,
                window_s=self.settings.refusal_window_s,
                security=SecurityLog(self.settings.security_log_rate_per_s, self.settings.security_log_burst),
            )
            self._refusals = recorder
        return recorder

    async def log_rejection(self, call: RejectedCall) -> None:
        """A refusal by the authentication interceptor (see services/audit/refusals.py)."""
        self.metrics.auth_refusals.labels(call.code).inc()
        await self.refusals.record(Refusal(call.method, call.code, call.principal, call.request, call.peer),
                                   call.message)

    async def log_service_refusal(self, method: str, code: grpc.StatusCode, message: str, request: Any,
                                  context: grpc.aio.ServicerContext) -> None:
        """A refusal decided inside a servicer or a contract, for the authenticated caller of this call."""
        try:
            peer = context.peer() or ""
        except Exception:  # noqa: BLE001
            peer = ""
        await self.refusals.record(Refusal(method, code.name, principal_or_none(), request, peer), message)

    async def apply_consent_policy(self) -> None:
        """Write the configured consent policy to the ledger when it differs from the one in force there.

        The contract reads the policy from world state (so it holds on a Fabric peer); the setting is how an
        operator changes it, and every change is a ledger entry by the service's admin identity.
        """
        wanted = {"staff_permit": self.settings.consent_staff_permit}
        current = await evaluate_json(self.handles.consent(POLICY_ADMIN), "GetPolicy")
        if current != wanted:
            await self.handles.consent(POLICY_ADMIN).submit("SetPolicy", canonical.dumps(wanted).decode())
            log.warning("consent policy changed on the ledger", extra={"from": current, "to": wanted})

    def build_server(self) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self.settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", self.settings.grpc_max_message_bytes),
            *reuseport_options(self.settings),  # perf (issue 16): read replicas share the port
        ]
        server = grpc.aio.server(
            interceptors=[
                # First: an undecodable request is INVALID_ARGUMENT, never UNKNOWN (it swaps the deserialiser,
                # which only the outermost handler's counts).
                DecodeGuardInterceptor(),
                # a span per call (tracing on), every call counted with its final status
                *([self.tracing.server_interceptor()] if self.tracing is not None else []),
                MetricsInterceptor(self.metrics),
                ClientCertificateInterceptor(frozenset(self.settings.tls_client_allowed_names)),
                PseudonymGuardInterceptor(),  # a name- or MRN-shaped pid reaches nothing else
                AuthInterceptor(self.verifier, RULES, on_rejection=self.log_rejection),
                ErrorMappingInterceptor(on_refusal=self.log_service_refusal),
            ],
            options=options,
        )
        handles = self.handles
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(
            ConsentServicer(handles, self.store, self.settings.organizations), server
        )
        access_log_pb2_grpc.add_AccessLogServiceServicer_to_server(
            AccessLogServicer(handles, self.store, self.projections, observers=self.settings.record_observers), server
        )
        # --- compliance (issue 15): flags, newest-first search both ways, aggregates, streamed exports ---
        compliance_pb2_grpc.add_ComplianceServiceServicer_to_server(
            ComplianceServicer(handles, self.store, self.projections, self.settings.compliance_flag_history_days),
            server,
        )
        # --- end compliance ---
        # The scoring servicer is kept: its usage counters (scoring volume per organisation) are read by
        # the metrics and the unusual-access detector (issue 12).
        # scoreperf (issue 16 item 3): with the store, a batch's access events are one accessbatch transaction.
        self.scoring = ScoringServicer(handles, self.settings, self.metrics, store=self.store)
        scoring_pb2_grpc.add_ScoringServiceServicer_to_server(self.scoring, server)
        breakglass_pb2_grpc.add_BreakGlassServiceServicer_to_server(
            BreakGlassServicer(handles, self.store, self.settings), server
        )
        fhir_pb2_grpc.add_FhirServiceServicer_to_server(
            FhirServicer(handles, self.store, self.settings, self.projections), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_server_reflection(SERVICE_NAMES, server)
        self._health = health_servicer
        return server

    async def serve(
        self,
        ready: asyncio.Event | None = None,
        port_holder: list[int] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve until ``stop`` is set (or the task is cancelled), then shut down gracefully.

        Catches the access-log projection up with the ledger first, then follows it.
        """
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.settings.grpc_workers * 4))
        projections = self.projections
        # Both projections catch up (repairing a crash's gap), orphans are reported: one "store check" log line.
        check_store(self.handles, self.store, full=False, orphan_grace_s=self.settings.orphan_grace_s)
        await self.apply_consent_policy()
        server = self.build_server()
        tls = server_credentials(self.settings)
        if tls is not None:  # TLS configured: no plaintext port at all
            port = server.add_secure_port(self.settings.grpc_target, tls[0])
        else:
            port = server.add_insecure_port(self.settings.grpc_target)
        if port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.grpc_target}")
        if port_holder is not None:
            port_holder.append(port)
        # perf (issue 16): the endpoint read replicas forward to (owner-only Unix socket; with TLS, only when
        # replicas are configured, so a single TLS process keeps no plaintext endpoint at all).
        internal = (self.settings.ledger_backend == "embedded" and writer_socket_usable(self.settings)
                    and (tls is None or self.settings.grpc_processes > 1))
        if internal:
            socket_path = writer_socket_path(self.settings)
            socket_path.unlink(missing_ok=True)
            if server.add_insecure_port("unix:" + str(socket_path)) == 0:
                raise RuntimeError(f"cannot listen on {socket_path}")
        await server.start()
        if internal:
            os.chmod(writer_socket_path(self.settings), 0o600)  # perf (issue 16): owner only
        for name in ("", *HEALTH_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        follow = asyncio.create_task(projections.follow())
        self._tasks.append(asyncio.create_task(self.refusals.run()))
        if self.settings.metrics_enabled:
            self.metrics.observe_ledger(self.ledger.stats, self.ledger.size,
                                        lambda: {p.cursor_name: p.cursor() for p in projections.projections})
            witnessing = getattr(self.ledger, "witnessing", None)  # the embedded ledger's witness submitter
            if witnessing is not None:
                self.metrics.observe_witnessing(witnessing)
            try:
                self._metrics_server, self.metrics_port = self.metrics.serve(self.settings.metrics_host,
                                                                             self.settings.metrics_port)
            except OSError as exc:  # the services stay up without /metrics; say so
                log.warning("metrics endpoint not started", extra={"error": exc.strerror or type(exc).__name__,
                                                                   "port": self.settings.metrics_port})
        if ready is not None:
            ready.set()
        stop = stop or asyncio.Event()
        try:
            await stop.wait()
        finally:
            await asyncio.shield(self._shutdown(server, projections, follow))

    async def _shutdown(self, server: grpc.aio.Server, projector: ProjectionRunner,
                        follow: asyncio.Task[None]) -> None:
        for name in ("", *HEALTH_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace=2.0)
        if self._metrics_server is not None:
            http_server, thread = self._metrics_server
            http_server.shutdown()
            http_server.server_close()
            thread.join(5)
            self._metrics_server = None
        projector.stop()
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follow
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def close(self) -> None:
        self.ledger.close()
        self.store.close()
        if self.owner_lock is not None:
            self.owner_lock.release()
        if self.dev_issuer_server is not None:
            self.dev_issuer_server.stop()
        if self.tracing is not None:
            self.tracing.shutdown()  # flushes the exporter
