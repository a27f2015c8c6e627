"""Typed settings: the one place configuration is read.

Values come from ``CIPHERCARE_*`` environment variables, then an optional TOML
file named by ``CIPHERCARE_CONFIG``, then the defaults below, which serve one
machine with nothing installed (SQLite, embedded ledger, development issuer).
Nothing else in ciphercare reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of a ciphercare deployment, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="CIPHERCARE_", extra="forbid", frozen=True)

    data_dir: Path = Field(default=Path(".ciphercare"), description="Where the embedded defaults keep state.")

    # Off-chain store (SQLAlchemy URL). Empty means SQLite in data_dir.
    database_url: str = ""
    database_pool_size: int = Field(default=5, ge=1)
    database_pool_timeout_s: float = Field(default=10.0, gt=0)
    database_connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    database_statement_timeout_ms: int = Field(default=30_000, ge=100)
    database_lock_timeout_ms: int = Field(default=10_000, ge=10)
    # Envelope encryption of off-chain PHI: the key-encryption key (32 bytes, file mode 0600,
    # generated on first start). Empty: data_dir/kek.key. Unreferenced documents older than
    # orphan_grace_s are deleted at start-up (must exceed the ledger submit timeout).
    kek_path: Path | None = None
    orphan_grace_s: float = Field(default=600.0, ge=0)

    # Ledger
    ledger_backend: Literal["embedded", "fabric"] = "embedded"
    ledger_path: Path | None = None
    ledger_origin: str = "ciphercare.local/ledger"
    ledger_signing_key_path: Path | None = None
    ledger_group_commit_max_batch: int = Field(default=512, ge=1, le=100_000)
    ledger_group_commit_max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    ledger_submit_timeout_s: float = Field(default=10.0, gt=0)
    # --- ledger integrity (issue 11; docs/TRANSPARENCY.md) ---------------------------------------
    # The checkpoint signing key, apart from the data (mode 0600, owned by the server's user; refused otherwise).
    # Empty: ledger_signing_key_path, else data_dir/ledger-ed25519.pem (a warning says to move it).
    checkpoint_key_path: Path | None = None
    # Pinned checkpoint verifier key(s) (note vkeys, comma-separated, oldest first) that `ledger verify` and the
    # CLI trust instead of a key file in the data directory.
    ledger_vkey: str = ""
    # Keys this log was signed with before a rotation (comma-separated vkeys, oldest first).
    ledger_retired_vkeys: str = ""
    # Append-only file of every published checkpoint, outside SQLite. Empty: <ledger path>.checkpoints.
    ledger_published_path: Path | None = None
    # Witness policy file (log keys, witness keys + URLs, quorum). Empty: no witnesses.
    witness_policy: Path | None = None
    witness_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # How long a commit waits for the witness quorum before its receipt returns (0: fully asynchronous).
    witness_wait_ms: float = Field(default=0.0, ge=0, le=60_000)
    # `ciphercare up` starts a local witness process and uses it when no witness policy is configured.
    demo_witness: bool = False
    # Where the CLI remembers the last verified checkpoint per log. Empty: ~/.ciphercare/checkpoints.
    client_state_dir: Path | None = None
    # --- end ledger integrity ---------------------------------------------------------------------
    # fabricgw: the Fabric Gateway backend (ledger_backend="fabric") and the node (`ciphercare ledger serve`).
    # Client side: the gateway endpoint (a Fabric peer or a ciphercare ledger node), TLS, and the org CA
    # material under ledger_msp_dir/<MSPID>/{ca-cert,ca-key}.pem with which this node enrols its users
    # (short-lived per-user certificates; docs/FABRIC.md). ledger_org: this node's organisation (e.g. hospital-a):
    # it enrols only that org's users, under <Org>MSP, and reads the log as that org; empty: every org (development).
    ledger_endpoint: str = ""
    ledger_channel: str = "ciphercare"
    ledger_chaincode: str = "ciphercare"
    ledger_tls_ca_path: Path | None = None
    ledger_tls_client_cert_path: Path | None = None
    ledger_tls_client_key_path: Path | None = None
    ledger_tls_server_name: str = ""
    ledger_msp_dir: Path | None = None
    ledger_org: str = ""
    ledger_user_cert_validity_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    ledger_evaluate_timeout_s: float = Field(default=5.0, gt=0)
    ledger_node_vkey: str = ""  # pin the node's checkpoint verifier key; empty: learnt on first use
    # Node side: where `ciphercare ledger serve` listens, its TLS (client CA set: mutual TLS required).
    ledger_node_host: str = "127.0.0.1"
    ledger_node_port: int = Field(default=7051, ge=0, le=65535)
    ledger_node_tls_cert_path: Path | None = None
    ledger_node_tls_key_path: Path | None = None
    ledger_node_tls_client_ca_path: Path | None = None

    # gRPC
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_max_message_bytes: int = Field(default=4 * MiB, ge=64 * 1024)
    grpc_workers: int = Field(default=16, ge=1)
    client_deadline_s: float = Field(default=10.0, gt=0)
    # perf (issue 16 item 2): server processes sharing the gRPC port (SO_REUSEPORT). 1: one process. N > 1:
    # the writer (owns the ledger) plus N - 1 read replicas that answer Check and forward everything else to
    # the writer (services/platform/replicas.py). Embedded ledger only.
    grpc_processes: int = Field(default=1, ge=1, le=64)

    # TLS on every gRPC listener (and the web app when web_tls is true). Files, reloaded when they change
    # (a renewed certificate needs no restart). With a client CA, clients must present a certificate it
    # signed (mutual TLS); tls_client_allowed_names further limits which certificate names may call.
    # When TLS is configured no plaintext port is opened. tls_ca_path: the roots clients of ours (the web
    # app's backend, the CLI) trust for the server; empty: the server certificate itself (self-signed).
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_client_ca_path: Path | None = None
    tls_client_allowed_names: tuple[str, ...] = ()
    tls_ca_path: Path | None = None
    tls_server_name: str = ""  # the name clients check in the server certificate (default: the target host)
    web_tls: bool = False  # serve the web app over TLS with tls_cert_path/tls_key_path (else: terminate at ingress)

    # Compliance (ComplianceService, issue 15): the unusual-access detector behind ListFlags learns what is usual
    # from the consortium's access events in the days before the window it flags.
    compliance_flag_history_days: int = Field(default=28, ge=8, le=366)

    # Prometheus metrics (/metrics over HTTP). Port 0: any free port (tests); the address is printed by `up`.
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)

    # OpenTelemetry tracing (off by default; docs/OPERATIONS.md). Exporter "otlp": OTLP over gRPC to
    # tracing_endpoint; "jsonl": JSON lines appended to tracing_jsonl_path (empty: data_dir/traces.jsonl).
    # Spans carry method names, status codes, contract/function names, tx ids and SQL verbs: never PHI.
    tracing_enabled: bool = False
    tracing_exporter: Literal["otlp", "jsonl"] = "otlp"
    tracing_endpoint: str = "http://127.0.0.1:4317"
    tracing_otlp_insecure: bool = True
    tracing_jsonl_path: Path | None = None
    tracing_service_name: str = "ciphercare"
    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    # Identity (OIDC). The defaults point at the built-in development issuer.
    oidc_issuer: str = ""  # empty: the development issuer at dev_issuer_host:dev_issuer_port
    oidc_audience: str = "ciphercare-api"
    oidc_jwks_url: str = ""  # empty: <issuer>/protocol/openid-connect/certs (Keycloak's layout)
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256")
    oidc_jwks_cache_s: float = Field(default=300.0, gt=0)
    # How long one JWKS fetch may take, and the least time between two fetches for an unknown key id
    # (the identity provider down: requests fail fast with UNAVAILABLE in between; docs/OPERATIONS.md).
    oidc_jwks_timeout_s: float = Field(default=3.0, gt=0, le=60)
    oidc_jwks_min_refetch_s: float = Field(default=10.0, ge=0, le=3600)
    oidc_leeway_s: float = Field(default=30.0, ge=0, le=300)
    oidc_org_claim: str = "org"
    oidc_pid_claim: str = "pid"

    dev_issuer_enabled: bool = True
    dev_issuer_host: str = "127.0.0.1"
    dev_issuer_port: int = Field(default=8089, ge=0, le=65535)
    dev_issuer_key_path: Path | None = None
    dev_token_ttl_s: int = Field(default=3600, ge=60)
    # The longest access-token lifetime (exp - iat, or exp - now without iat) accepted; longer-lived tokens
    # are refused (UNAUTHENTICATED). Keycloak's default access token lives 5 minutes.
    oidc_max_token_lifetime_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)

    # Refusals (services/audit/refusals.py): authenticated refusals are aggregated per caller and patient
    # per window; unauthenticated ones go to the rate-limited security log, never to the ledger.
    refusal_window_s: float = Field(default=60.0, gt=0, le=86_400)
    security_log_rate_per_s: float = Field(default=20.0, gt=0)
    security_log_burst: int = Field(default=50, ge=1)
    # AccessLogService.Record: the systems each organisation registered as observers, e.g.
    # {"hospital-a": ["hospital-a/ehr", "hospital-a/lab"]}. An org without an entry may name any
    # "<org>/<system>". "ciphercare/..." names are reserved for ciphercare's own services.
    record_observers: dict[str, list[str]] = Field(default_factory=dict)
    # Consent policy written to the ledger at start-up when it differs: "confirm" (default: a staff-recorded
    # PERMIT is proposed until the patient or proxy confirms it) or "immediate" (docs/THREATS.md).
    consent_staff_permit: Literal["confirm", "immediate"] = "confirm"

    # Web (patient portal, compliance console; started by `ciphercare up`). OIDC authorization code + PKCE.
    web_enabled: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=3000, ge=0, le=65535)
    web_public_url: str = ""  # empty: http://<web_host>:<web_port>; redirect URI is <this>/auth/callback
    web_oidc_client_id: str = "ciphercare-portal"
    web_session_idle_s: int = Field(default=1800, ge=60)
    web_session_max_s: int = Field(default=8 * 3600, ge=300)

    # Encrypted scoring (issue 12). Quota: patients scored (success events) per organisation and purpose
    # of use per rolling window; 0 disables it. Contexts: registered public contexts kept per organisation;
    # a registration beyond the limit first removes contexts unused for scoring_context_idle_s.
    # Output noise: optional Gaussian noise (margin units) on every released score, a coarsening that
    # raises the cost of black-box extraction and costs accuracy (see docs/SCORING.md); 0 = off.
    scoring_quota_patients: int = Field(default=10_000, ge=0)
    scoring_quota_window_s: float = Field(default=86_400.0, gt=0)
    scoring_max_contexts_per_org: int = Field(default=8, ge=1, le=10_000)
    scoring_context_idle_s: float = Field(default=30 * 86_400.0, ge=0)
    scoring_output_noise: float = Field(default=0.0, ge=0.0, le=4.0)
    web_ledger_vkey: str = ""  # pin the checkpoint verifier key; empty: the one the service serves (pinned per session)

    # Break-glass (issue 15): how long a clinician's declaration permits emergency access (ETREAT/BTG).
    breakglass_duration_s: int = Field(default=4 * 3600, ge=60, le=24 * 3600)

    # The organisations ciphercare knows (id -> display name): the portal offers only these as consent
    # recipients and the FHIR import accepts only these as actors; anything else is refused server-side.
    organizations: dict[str, str] = Field(
        default_factory=lambda: {
            "hospital-a": "Hospital A",
            "hospital-b": "Hospital B",
            "clinic-c": "Clinic C",
            "lab-d": "Laboratory D",
            "research-e": "Research Institute E",
            "public-health": "Regional Public Health Agency",
        }
    )

    @field_validator("organizations")
    @classmethod
    def _org_ids(cls, orgs: dict[str, str]) -> dict[str, str]:
        import re

        bad = [o for o in orgs if not re.match(r"^(?=.{1,63}$)[a-z0-9]+(?:[-_][a-z0-9]+)*$", o)]
        if bad or not orgs:
            raise ValueError(f"organizations must map lower-case org ids to display names; bad ids: {bad}")
        return orgs

    @field_validator("oidc_algorithms")
    @classmethod
    def _only_asymmetric(cls, algs: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}
        bad = [a for a in algs if a not in allowed]
        if bad or not algs:
            raise ValueError(f"oidc_algorithms must be a non-empty subset of {sorted(allowed)}; got {list(algs)}")
        return algs

    # Derived locations -------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'offchain.db').resolve()}"

    @property
    def resolved_kek_path(self) -> Path:
        return self.kek_path or self.data_dir / "kek.key"

    @property
    def resolved_ledger_path(self) -> Path:
        return self.ledger_path or self.data_dir / "ledger.db"

    @property
    def resolved_ledger_key_path(self) -> Path:
        return self.checkpoint_key_path or self.ledger_signing_key_path or self.data_dir / "ledger-ed25519.pem"

    @property
    def resolved_ledger_published_path(self) -> Path:
        ledger = self.resolved_ledger_path
        return self.ledger_published_path or ledger.with_name(ledger.name + ".checkpoints")

    @property
    def resolved_client_state_dir(self) -> Path:
        return self.client_state_dir or Path.home() / ".ciphercare" / "checkpoints"

    @property
    def resolved_ledger_msp_dir(self) -> Path:
        return self.ledger_msp_dir or self.resolved_ledger_path.parent / "msp"

    @property
    def resolved_dev_issuer_key_path(self) -> Path:
        return self.dev_issuer_key_path or self.data_dir / "dev-issuer-rsa.pem"

    @property
    def resolved_oidc_issuer(self) -> str:
        return self.oidc_issuer or f"http://{self.dev_issuer_host}:{self.dev_issuer_port}/realms/ciphercare"

    @property
    def resolved_jwks_url(self) -> str:
        return self.oidc_jwks_url or f"{self.resolved_oidc_issuer.rstrip('/')}/protocol/openid-connect/certs"

    @property
    def resolved_web_url(self) -> str:
        scheme = "https" if self.web_tls and self.tls_cert_path is not None else "http"
        return (self.web_public_url or f"{scheme}://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def grpc_target(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_path is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CIPHERCARE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; ``overrides`` win over the environment (used by tests and the CLI)."""
    return Settings(**overrides)
