"""``ciphercare fhir import|export|audit``: FHIR interchange against the remote FhirService.

Works with a token only (``--token`` or ``CIPHERCARE_TOKEN`` is read by the caller's shell, never here);
without one, a development-issuer token for ``--as`` is minted when the development issuer is enabled.
Errors are one line on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: --as personas for development-issuer tokens (subject, roles, org).
_DEV_PERSONAS = {
    "hospital": ("svc-{org}-fhir", ["hospital"]),
    "clinician": ("clinician-{org}-fhir", ["clinician"]),
    "officer": ("officer-fhir", ["compliance-officer"]),
}


def _error(message: str) -> Exception:
    from ciphercare.services.cli.main import CliError

    return CliError(f"fhir: {message}")


def _token(args: argparse.Namespace, settings: Any) -> str:
    if args.token:
        return str(args.token)
    if not settings.dev_issuer_enabled:
        raise _error("pass --token; the development issuer is disabled")
    from ciphercare.services.identity.devissuer import DevIssuer

    subject, roles = _DEV_PERSONAS[args.as_]
    org = "regulator" if args.as_ == "officer" else args.org
    return DevIssuer.from_settings(settings).issue(subject=subject.format(org=org), roles=roles, org=org,
                                                  client_id="ciphercare-cli")


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    import grpc

    from ciphercare.sdk.channels import ChannelConfigError, ChannelSecurity, open_channel
    from ciphercare.services.cli.main import _settings
    from ciphercare.v1 import fhir_pb2_grpc

    settings = _settings(args)
    target = args.target or settings.grpc_target
    token = _token(args, settings)
    # TLS unless loopback; the CA the server's certificate is checked against comes from the settings.
    security = ChannelSecurity(ca_path=settings.tls_ca_path, server_name=settings.tls_server_name)
    try:
        channel = open_channel(target, security)
    except ChannelConfigError as exc:
        raise _error(str(exc)) from None
    try:
        stub = fhir_pb2_grpc.FhirServiceStub(channel)
        return getattr(stub, method)(request, metadata=(("authorization", f"Bearer {token}"),),
                                     timeout=settings.client_deadline_s)
    except grpc.RpcError as exc:
        raise _error(f"{exc.code().name}: {exc.details()}") from None  # type: ignore[attr-defined]
    finally:
        channel.close()


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")


def cmd_import(args: argparse.Namespace) -> int:
    from ciphercare.v1 import fhir_pb2

    try:
        text = Path(args.file).read_text(encoding="utf-8") if args.file != "-" else sys.stdin.read()
    except OSError as exc:
        raise _error(f"cannot read {args.file}: {exc.strerror}") from None
    response = _call(args, "ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=text,
                                                                         fhir_version=args.fhir_version))
    state = ("proposed: in force once the patient confirms it" if response.status == "proposed"
             else response.status or "active")
    print(f"imported {response.consent_id} ({state}; ledger seq {response.receipt.sequence}, "
          f"tx {response.receipt.tx_id})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from ciphercare.v1 import fhir_pb2

    response = _call(args, "ExportConsent", fhir_pb2.ExportConsentRequest(consent_id=args.consent_id,
                                                                         fhir_version=args.fhir_version))
    _write(json.dumps(json.loads(response.resource_json), indent=2, sort_keys=True), args.output)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from ciphercare.v1 import fhir_pb2

    response = _call(args, "ExportAuditEvents", fhir_pb2.ExportAuditEventsRequest(pid=args.pid, limit=args.limit))
    _write(json.dumps(json.loads(response.bundle_json), indent=2, sort_keys=True), args.output)
    print(f"{response.count} AuditEvents (IHE BALP) exported", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``fhir import|export|audit`` to the top-level parser."""
    fhir = sub.add_parser("fhir", help="FHIR interchange: Consent import/export, BALP AuditEvent bundles")
    fhir_sub = fhir.add_subparsers(dest="fhir_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default="", help="gRPC target host:port (default: the configured one)")
        p.add_argument("--token", default="", help="bearer token (default: a development-issuer token)")
        p.add_argument("--as", dest="as_", choices=sorted(_DEV_PERSONAS), default="hospital",
                       help="persona of the development token (default hospital)")
        p.add_argument("--org", default="hospital-a", help="organisation of the development token")
        p.add_argument("--data-dir", default=None)

    imp = fhir_sub.add_parser("import", help="import a FHIR Consent (JSON file, - for stdin) as a consent")
    imp.add_argument("file")
    imp.add_argument("--fhir-version", default="R4B", choices=["R4B", "R5"])
    common(imp)
    imp.set_defaults(func=cmd_import)

    exp = fhir_sub.add_parser("export", help="export a consent as a FHIR Consent")
    exp.add_argument("consent_id")
    exp.add_argument("--fhir-version", default="R4B", choices=["R4B", "R5"])
    exp.add_argument("--output", "-o", default=None)
    common(exp)
    exp.set_defaults(func=cmd_export)

    audit = fhir_sub.add_parser("audit", help="export a patient's access events as a BALP AuditEvent bundle")
    audit.add_argument("pid")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--output", "-o", default=None)
    common(audit)
    audit.set_defaults(func=cmd_audit)
