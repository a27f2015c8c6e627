"""Wiring: build every part from :class:`Settings` and serve them over gRPC.

``Application`` owns the ledger, the off-chain store, the token verifier and,
in the embedded default, the development identity provider. ``serve`` adds
health checking and reflection so ``grpcurl`` works out of the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import EndorseError, LedgerError, Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.transport import EmbeddedTransport
from ciphercare.ledger.gateway import GatewayOptions, Transport
from ciphercare.services.audit.servicer import AccessLogServicer, AccessProjection
from ciphercare.services.consent.breakglass import BreakGlassServicer
from ciphercare.services.consent.fhir_service import FhirServicer
from ciphercare.services.consent.servicer import ConsentServicer
from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.devlogin import DevLogin
from ciphercare.services.identity.interceptor import AuthInterceptor, RejectedCall
from ciphercare.services.identity.jwks import JwksError
from ciphercare.services.identity.rules import RULES
from ciphercare.services.identity.token_cache import CachingVerifier
from ciphercare.services.identity.tokens import TokenVerifier
from ciphercare.services.platform.errors import ErrorMappingInterceptor
from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.platform.metrics import Metrics, MetricsInterceptor
from ciphercare.services.platform.projections import ProjectionRunner
from ciphercare.services.platform.settings import Settings
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
    consent_pb2,
    consent_pb2_grpc,
    fhir_pb2,
    fhir_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)

log = logging.getLogger("ciphercare.server")

SERVICE_NAMES = (
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    access_log_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name,
    breakglass_pb2.DESCRIPTOR.services_by_name["BreakGlassService"].full_name,
    fhir_pb2.DESCRIPTOR.services_by_name["FhirService"].full_name,
)

# The identity under which the server itself logs refusals of callers it could not authenticate.
GATEWAY_PRINCIPAL = Principal(subject="service:ciphercare-gateway", org="ciphercare", roles=frozenset(),
                              client_id="ciphercare-server")


def open_ledger(settings: Settings) -> EmbeddedLedger:
    """The configured ledger backend."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.ledger_backend == "fabric":  # fabricgw: a Fabric peer or `ciphercare ledger serve`
        from ciphercare.ledger.fabric.ledger import open_fabric_ledger

        # Duck-typed like EmbeddedLedger for what the wiring uses (size, stats, close, the old Ledger protocol).
        return open_fabric_ledger(settings, GATEWAY_PRINCIPAL)  # type: ignore[return-value]
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
        return cls(settings=settings, ledger=ledger, store=store, verifier=verifier, dev_issuer_server=dev_server,
                   owner_lock=owner_lock)

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
            self._handles = ContractHandles(transport, options)
        return self._handles

    @property
    def projections(self) -> ProjectionRunner:
        """One runner feeding every off-chain projection (access-event index, privacy)."""
        if self._projections is None:
            self._projections = ProjectionRunner(
                self.handles, [AccessProjection(self.store), PrivacyProjection(self.handles, self.store)]
            )
        return self._projections

    async def log_rejection(self, call: RejectedCall) -> None:
        """Every refused call that named a patient leaves a ``denied`` access event (fail closed)."""
        self.metrics.auth_refusals.labels(call.code).inc()
        if not call.pid:
            return
        principal = call.principal or GATEWAY_PRINCIPAL
        event = {
            "type": "110110",
            "subtype": "read",
            "action": "E",
            "outcome": "denied",
            "outcome_desc": call.code.lower().replace("_", "-"),
            "purpose_of_use": "TREAT",
            "source": {"observer": "ciphercare/" + call.method.rsplit("/", 2)[-2].split(".")[-1]},
            "entity": {"pid": call.pid, "data_classes": []},
        }
        try:
            await self.handles.accesslog(principal).submit("Record", canonical.dumps(event).decode())
        except EndorseError as exc:
            # A pid that fails validation cannot be logged under that pid; the refusal still stands.
            log.warning("denied access event not recorded: %s", exc.code)
        except LedgerError:
            log.exception("denied access event not recorded")

    def build_server(self) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self.settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", self.settings.grpc_max_message_bytes),
        ]
        server = grpc.aio.server(
            interceptors=[
                MetricsInterceptor(self.metrics),  # outermost: every call counted with its final status
                ClientCertificateInterceptor(frozenset(self.settings.tls_client_allowed_names)),
                PseudonymGuardInterceptor(),  # a name- or MRN-shaped pid reaches nothing else
                AuthInterceptor(self.verifier, RULES, on_rejection=self.log_rejection),
                ErrorMappingInterceptor(),
            ],
            options=options,
        )
        handles = self.handles
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(handles, self.store), server)
        access_log_pb2_grpc.add_AccessLogServiceServicer_to_server(
            AccessLogServicer(handles, self.store, self.projections), server
        )
        # The scoring servicer is kept: its usage counters (scoring volume per organisation) are read by
        # the metrics and the unusual-access detector (issue 12).
        self.scoring = ScoringServicer(handles, self.settings, self.metrics)
        scoring_pb2_grpc.add_ScoringServiceServicer_to_server(self.scoring, server)
        breakglass_pb2_grpc.add_BreakGlassServiceServicer_to_server(
            BreakGlassServicer(handles, self.store, self.settings), server
        )
        fhir_pb2_grpc.add_FhirServiceServicer_to_server(
            FhirServicer(handles, self.store, self.settings, self.projections), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
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
        await server.start()
        for name in ("", *SERVICE_NAMES[:2]):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        follow = asyncio.create_task(projections.follow())
        if self.settings.metrics_enabled:
            self.metrics.observe_ledger(self.ledger.stats, self.ledger.size,
                                        lambda: {p.cursor_name: p.cursor() for p in projections.projections})
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
        for name in ("", *SERVICE_NAMES[:2]):
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
