"""``ciphercare audit …``: the compliance officer's command line, against a remote ciphercare with a token.

No server files are needed: everything goes through the SDK (``ciphercare.sdk.audit``) over gRPC, TLS
unless the target is loopback. The token comes from ``--token`` or the ``CIPHERCARE_TOKEN`` environment
variable; ``--ca``, ``--cert``/``--key`` (mutual TLS) and ``--server-name`` set up the channel.

- ``search``: events matching filters, newest first (``--oldest-first``), with the number that match;
- ``export``: every matching event as CSV, a FHIR AuditEvent bundle or JSON lines, streamed to a file or
  stdout, with a progress bar on stderr when it is a terminal;
- ``verify``: the latest checkpoint against a pinned verifier key (and a witness policy's quorum), consistency
  with the checkpoint this client verified last (remembered on disk by ``ciphercare.sdk.checkpoints``), and
  the inclusion of events by id;
- ``flags``: unusual-access flags for a window, with their reasons;
- ``breakglass list|show|ack|escalate``: break-glass review (``BreakGlassService``): the declarations to review,
  high priority first, one declaration with its justification, and the officer's acknowledgement or escalation
  with a note, its write receipt verified (``ciphercare.sdk.breakglass``).

Errors are one line on stderr. Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 not allowed
(unauthenticated or permission denied), 4 a proof or checkpoint did not verify, 5 the service is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

EXIT_FAILED, EXIT_USAGE, EXIT_DENIED, EXIT_UNVERIFIED, EXIT_UNREACHABLE = 1, 2, 3, 4, 5
TOKEN_ENV = "CIPHERCARE_TOKEN"
OUTCOMES = ("success", "denied", "error")


class AuditCliError(Exception):
    """One line for stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# Arguments -------------------------------------------------------------------------------------


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 date or date-time (naive means UTC)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AuditCliError(f"{what} must be an ISO 8601 date or date-time, not {text!r}", EXIT_USAGE) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _token(args: argparse.Namespace) -> str:
    # The CLI's credential: a flag, or the environment variable the officer's shell exports (never a file of
    # the server's). This is the one place the compliance CLI reads the environment.
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise AuditCliError(f"no token: pass --token or set {TOKEN_ENV}", EXIT_USAGE)
    return token


def connect(args: argparse.Namespace) -> Any:
    from ciphercare.sdk.audit import AuditClient

    return AuditClient(_client(args))


def _client(args: argparse.Namespace) -> Any:
    from ciphercare.sdk.channels import ChannelConfigError, ChannelSecurity
    from ciphercare.sdk.client import CiphercareClient

    security = ChannelSecurity(
        tls=True if (args.ca or args.cert or args.tls) else None,
        ca_path=Path(args.ca) if args.ca else None,
        cert_path=Path(args.cert) if args.cert else None,
        key_path=Path(args.key) if args.key else None,
        server_name=args.server_name or "",
    )
    try:
        return CiphercareClient.connect(args.target, _token(args), deadline_s=args.timeout, security=security,
                                        max_message_bytes=16 * 1024 * 1024, vkey=getattr(args, "vkey", None) or None)
    except ChannelConfigError as exc:
        raise AuditCliError(str(exc), EXIT_USAGE) from exc


def access_filter(args: argparse.Namespace) -> Any:
    from ciphercare.v1 import access_log_pb2, compliance_pb2

    flt = compliance_pb2.AccessFilter(pid=args.pid or "", requester_subject=args.requester or "",
                                      organization=args.org or "", purpose_of_use=args.purpose or "")
    if args.outcome:
        flt.outcome = {"success": access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                       "denied": access_log_pb2.ACCESS_OUTCOME_DENIED,
                       "error": access_log_pb2.ACCESS_OUTCOME_ERROR}[args.outcome]
    if args.since:
        flt.recorded_from.FromDatetime(parse_time(args.since, "--from"))
    if args.until:
        flt.recorded_to.FromDatetime(parse_time(args.until, "--to"))
    return flt


def _iso(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


# Commands --------------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from ciphercare.v1 import compliance_pb2

    if args.limit < 1:
        raise AuditCliError("--limit must be at least 1", EXIT_USAGE)
    audit = connect(args)
    flt = access_filter(args)
    order = compliance_pb2.SEARCH_ORDER_OLDEST_FIRST if args.oldest_first else compliance_pb2.SEARCH_ORDER_NEWEST_FIRST
    request = compliance_pb2.ComplianceSearchRequest(filter=flt, order=order, page_size=min(args.limit, 1000))
    events = list(audit.search_all(request, limit=args.limit))
    if args.json:
        for event in events:
            print(json.dumps(json_format.MessageToDict(event, preserving_proto_field_name=True), sort_keys=True))
        return 0
    total = audit.aggregate(flt).total
    outcome_name = {1: "success", 2: "denied", 3: "error"}
    print(f"{'recorded (UTC)':20}  {'outcome':7}  {'requester':24}  {'organisation':14}  {'patient':14}  "
          f"{'purpose':8}  {'type/subtype':18}  event")
    for e in events:
        print(f"{_iso(e.recorded):20}  {outcome_name.get(e.outcome, '?'):7}  {e.agent.subject[:24]:24}  "
              f"{e.agent.organization[:14]:14}  {e.pid[:14]:14}  {e.purpose_of_use:8}  "
              f"{(e.type + '/' + e.subtype)[:18]:18}  {e.id}")
    order_text = "oldest first" if args.oldest_first else "newest first"
    print(f"{len(events):,} of {total:,} matching events shown ({order_text})", file=sys.stderr)
    return 0


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled

    def update(self, rows: int, total: int) -> None:
        if not self.enabled:
            return
        share = rows / total if total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(f"\rexporting [{bar:30}] {rows:,} of {total:,} events ({share:.0%})")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def cmd_export(args: argparse.Namespace) -> int:
    audit = connect(args)
    flt = access_filter(args)
    progress = Progress(sys.stderr, sys.stderr.isatty() and not args.quiet)
    out_path = Path(args.output) if args.output and args.output != "-" else None
    partial = out_path.with_name(out_path.name + ".partial") if out_path else None
    sink: IO[bytes] = open(partial, "wb") if partial else sys.stdout.buffer  # noqa: SIM115 - closed below
    rows = total = 0
    try:
        for chunk in audit.export(flt, args.format):
            sink.write(chunk.data)
            rows, total = chunk.rows, chunk.total_rows
            progress.update(rows, total)
        sink.flush()
    except BaseException:
        if partial:
            sink.close()
            partial.unlink(missing_ok=True)  # never leave a truncated export that looks complete
        raise
    finally:
        progress.done()
    if partial and out_path:
        sink.close()
        partial.replace(out_path)
    if rows != total:
        raise AuditCliError(f"the export ended after {rows:,} of {total:,} events")
    where = str(out_path) if out_path else "stdout"
    print(f"exported {rows:,} events as {args.format} to {where}", file=sys.stderr)
    return 0


def _event_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.event or [])
    if args.events_file:
        try:
            text = Path(args.events_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuditCliError(f"cannot read {args.events_file}: {exc.strerror}") from exc
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):  # a JSON-lines export: take each event's id
                try:
                    ids.append(str(json.loads(line)["id"]))
                except (ValueError, KeyError):
                    raise AuditCliError(f"{args.events_file}:{number}: not an exported event", EXIT_USAGE) from None
            else:
                ids.append(line)
    return ids


def cmd_verify(args: argparse.Namespace) -> int:
    from ciphercare.sdk.audit import default_state_dir
    from ciphercare.sdk.client import ProofError

    policy = None
    if args.policy:
        from ciphercare.ledger.witness.policy import Policy, PolicyError

        try:
            policy = Policy.load(args.policy)
        except PolicyError as exc:
            raise AuditCliError(str(exc), EXIT_USAGE) from exc
    audit = connect(args)
    state = None if args.no_remember else (Path(args.state) if args.state else default_state_dir())
    ids = _event_ids(args)
    try:
        report = audit.verify(args.vkey, state, ids, policy)
    except ProofError as exc:
        evidence = getattr(getattr(exc, "report", None), "evidence", None)
        if evidence and args.evidence:
            Path(args.evidence).write_text(json.dumps(evidence, indent=1) + "\n", encoding="utf-8")
        raise AuditCliError(f"NOT verified: {exc}", EXIT_UNVERIFIED) from exc
    except (OSError, ValueError) as exc:  # an unreadable or damaged checkpoint memory
        raise AuditCliError(f"the remembered checkpoints in {state} cannot be used: {exc}") from exc
    for line in report.checks:
        print(f"  ok  {line}")
    print(f"verified: checkpoint at size {report.checkpoint_size}" +
          (f", {len(ids)} event(s) included" if ids else "") +
          ("" if state is None else f"; remembered in {state}"))
    return 0


def cmd_flags(args: argparse.Namespace) -> int:
    from ciphercare.v1 import compliance_pb2

    audit = connect(args)
    end = parse_time(args.until, "--to") if args.until else datetime.now(UTC)
    start = parse_time(args.since, "--from") if args.since else end - timedelta(days=1)
    request = compliance_pb2.ListFlagsRequest(requester_subject=args.requester or "", organization=args.org or "",
                                              page_size=500)
    request.window_start.FromDatetime(start)
    request.window_end.FromDatetime(end)
    pages = list(audit.flags(request))
    flags = [flag for page in pages for flag in page.flags]
    first = pages[0]
    if args.json:
        from google.protobuf import json_format

        for flag in flags:
            print(json.dumps(json_format.MessageToDict(flag, preserving_proto_field_name=True), sort_keys=True))
        return 0
    print(f"{len(flags)} flag(s) from {_iso(request.window_start)} to {_iso(request.window_end)}: "
          f"{first.events_examined:,} events examined; the detector learnt from {first.history_events:,} events "
          f"({_iso(first.history_start)} to {_iso(first.history_end)})")
    if first.notice:
        print(f"note: {first.notice}")
    for flag in flags:
        print(f"\n[{flag.kind}] {flag.requester_subject} at {flag.organization}, "
              f"{_iso(flag.window_start)} to {_iso(flag.window_end)} (score {flag.score:.2f}; "
              f"{', '.join(flag.detectors)})")
        for reason in flag.reasons:
            print(f"  - {reason}")
        if flag.patients:
            print(f"  patients to review: {', '.join(flag.patients)}")
    return 0


# Break-glass review ----------------------------------------------------------------------------


def _breakglass(args: argparse.Namespace) -> Any:
    from ciphercare.sdk.breakglass import BreakGlassReviewClient

    return BreakGlassReviewClient(_client(args))


def _declaration_line(d: Any) -> str:
    from ciphercare.sdk.breakglass import high_priority

    return (f"{'HIGH' if high_priority(d) else '-':8}  {d.review_status:12}  {_iso(d.declared_at):20}  "
            f"{_iso(d.expires_at):20}  {'yes' if d.active else 'no':4}  {d.declared_by.subject[:20]:20}  "
            f"{d.declared_by.organization[:14]:14}  {d.pid[:16]:16}  {d.purpose:7}  {d.reason_code[:27]:27}  {d.id}")


def cmd_breakglass_list(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from ciphercare.sdk.breakglass import review_order

    review = _breakglass(args)
    status = "" if args.all else (args.status or "pending")
    response = review.list_for_review(status)
    declarations = review_order(response.declarations)
    if args.json:
        for d in declarations:
            print(json.dumps(json_format.MessageToDict(d, preserving_proto_field_name=True), sort_keys=True))
    else:
        print(f"{'priority':8}  {'review':12}  {'declared (UTC)':20}  {'expires (UTC)':20}  {'open':4}  "
              f"{'clinician':20}  {'organisation':14}  {'patient':16}  {'purpose':7}  {'reason':27}  declaration")
        for d in declarations:
            print(_declaration_line(d))
    c = response.counts
    print(f"{len(declarations):,} declaration(s) shown ({status or 'all'}, high priority first); in all {c.total:,}: "
          f"{c.pending:,} pending, {c.escalated:,} escalated, {c.acknowledged:,} acknowledged, {c.active:,} still open",
          file=sys.stderr)
    return 0


def cmd_breakglass_show(args: argparse.Namespace) -> int:
    response = _breakglass(args).get(args.declaration_id)
    d = response.declaration
    print(f"{d.id}  {'HIGH priority, ' if d.review_status != 'acknowledged' else ''}{d.review_status}")
    print(f"  patient {d.pid}, purpose {d.purpose}, reason {d.reason_code}")
    print(f"  declared by {d.declared_by.subject} ({d.declared_by.organization}) at {_iso(d.declared_at)}; "
          f"{'open until' if d.active else 'access window ended'} {_iso(d.expires_at)}")
    print(f"  justification: {response.justification or '(erased)'}")
    notes = list(response.review_notes)
    for i, review in enumerate(d.reviews):
        note = notes[i] if i < len(notes) else ""
        print(f"  {review.outcome} by {review.reviewed_by.subject} at {_iso(review.reviewed_at)}"
              + (f": {note}" if note else ""))
    return 0


def _note(args: argparse.Namespace) -> str:
    if args.note is not None and args.note_file:
        raise AuditCliError("give --note or --note-file, not both", EXIT_USAGE)
    if args.note_file:
        try:
            return Path(args.note_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditCliError(f"cannot read note file {args.note_file}: {getattr(exc, 'strerror', None) or exc}",
                                EXIT_USAGE) from None
    return str(args.note or "").strip()


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    from ciphercare.sdk.client import ProofError

    outcome = {"ack": "acknowledged", "escalate": "escalated"}[args.breakglass_command]
    note = _note(args)
    review = _breakglass(args)
    pinned = bool(review.client.vkey)
    if not pinned:
        # The receipt is still checked, against the key the service serves (said so below, not logged).
        review.client.vkey = review.client.verifier()[1].verifier_key
    try:
        response = review.review(args.declaration_id, outcome, note)
    except ValueError as exc:
        raise AuditCliError(str(exc), EXIT_USAGE) from None
    except ProofError as exc:
        raise AuditCliError(f"NOT verified: the review was submitted but its receipt does not prove it: {exc}",
                            EXIT_UNVERIFIED) from exc
    d, receipt = response.declaration, response.receipt
    print(f"{outcome} {d.id} (patient {d.pid}, declared by {d.declared_by.subject} of {d.declared_by.organization}"
          f"{', with a note' if note else ''})")
    key = "the pinned key" if pinned else "the key the service serves (pin one with --vkey)"
    print(f"recorded on the ledger at sequence {receipt.sequence}, tx {receipt.tx_id}; receipt verified against {key}")
    return 0


# Wiring ----------------------------------------------------------------------------------------


def _command(args: argparse.Namespace) -> str:
    """The command as typed, for the one line: ``search``, ``breakglass ack`` ..."""
    sub = getattr(args, "breakglass_command", None)
    return f"{args.audit_command} {sub}" if sub else str(args.audit_command)


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map every failure to one line on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        # gRPC's core library logs failed TLS handshakes on stderr itself (read when it loads); the CLI reports
        # them in its one line instead.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        try:
            return func(args)
        except AuditCliError as exc:
            print(f"ciphercare audit {_command(args)}: {exc}", file=sys.stderr)
            return exc.code
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
            details = (exc.details() if callable(getattr(exc, "details", None)) else "") or ""
            first_line = details.splitlines()[0] if details else code.name.lower().replace("_", " ")
            print(f"ciphercare audit {_command(args)}: {code.name}: {first_line}", file=sys.stderr)
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return EXIT_DENIED
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return EXIT_UNREACHABLE
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return EXIT_USAGE
            return EXIT_FAILED
        except BrokenPipeError:
            return EXIT_FAILED
        except OSError as exc:
            print(f"ciphercare audit {_command(args)}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--target", default="127.0.0.1:50051", help="ciphercare gRPC address host:port")
    group.add_argument("--token", default="", help=f"bearer token (default: ${TOKEN_ENV})")
    group.add_argument("--ca", default="", help="PEM CA certificate(s) to trust for the server (TLS)")
    group.add_argument("--cert", default="", help="client certificate for mutual TLS (with --key)")
    group.add_argument("--key", default="", help="client private key for mutual TLS (with --cert)")
    group.add_argument("--server-name", default="", help="name to check in the server's certificate")
    group.add_argument("--tls", action="store_true", help="use TLS even to a loopback address")
    group.add_argument("--timeout", type=float, default=30.0, help="deadline per call in seconds (default 30)")


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--pid", help="patient pseudonym")
    group.add_argument("--requester", help="requester subject")
    group.add_argument("--org", help="requester's organisation")
    group.add_argument("--purpose", help="purpose of use code, e.g. TREAT")
    group.add_argument("--outcome", choices=OUTCOMES)
    group.add_argument("--from", dest="since", help="recorded at or after (ISO 8601; UTC if no offset)")
    group.add_argument("--to", dest="until", help="recorded before (ISO 8601; UTC if no offset)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``audit search|export|verify|flags|breakglass`` to the top-level parser."""
    audit = sub.add_parser("audit", help="compliance officer's tools against a remote ciphercare (token; no "
                                         "server files)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    search = audit_sub.add_parser("search", help="access events matching filters, newest first")
    _filters(search)
    search.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
    search.add_argument("--oldest-first", action="store_true")
    search.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    _connection_options(search)
    search.set_defaults(func=_run(cmd_search))

    export = audit_sub.add_parser("export", help="every matching event, streamed (no cap)")
    _filters(export)
    export.add_argument("--format", choices=("csv", "fhir", "jsonl"), default="csv",
                        help="csv, fhir (a FHIR R4 Bundle of AuditEvents) or jsonl (default csv)")
    export.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    _connection_options(export)
    export.set_defaults(func=_run(cmd_export))

    verify = audit_sub.add_parser("verify", help="checkpoint signature, consistency with the last verified "
                                                 "checkpoint, inclusion of events")
    verify.add_argument("--vkey", required=True, help="the log's verifier key you trust (pinned)")
    verify.add_argument("--event", action="append", help="an event id whose inclusion to verify (repeatable)")
    verify.add_argument("--events-file", help="event ids, one a line, or a JSON-lines export")
    verify.add_argument("--state", help="directory remembering the last verified checkpoint per log "
                                        "(default: ~/.ciphercare/checkpoints, shared with `ledger check`)")
    verify.add_argument("--no-remember", action="store_true", help="neither read nor write the remembered checkpoint")
    verify.add_argument("--policy", help="witness policy file: also demand its quorum of cosignatures")
    verify.add_argument("--evidence", help="on a rollback or fork, write both signed notes to this file")
    _connection_options(verify)
    verify.set_defaults(func=_run(cmd_verify))

    flags = audit_sub.add_parser("flags", help="unusual-access flags with their reasons")
    flags.add_argument("--from", dest="since", help="window start (default: a day before --to)")
    flags.add_argument("--to", dest="until", help="window end (default: now)")
    flags.add_argument("--requester", help="only this requester")
    flags.add_argument("--org", help="only this organisation")
    flags.add_argument("--json", action="store_true", help="JSON lines instead of text")
    _connection_options(flags)
    flags.set_defaults(func=_run(cmd_flags))

    breakglass = audit_sub.add_parser("breakglass", help="break-glass review: list declarations, show one, "
                                                         "acknowledge or escalate")
    bg_sub = breakglass.add_subparsers(dest="breakglass_command", required=True)
    bg_list = bg_sub.add_parser("list", help="declarations to review, high priority first (default: pending)")
    which = bg_list.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every declaration, high priority first")
    which.add_argument("--status", choices=("pending", "escalated", "acknowledged"),
                       help="only declarations in this review state (default pending)")
    bg_list.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    _connection_options(bg_list)
    bg_list.set_defaults(func=_run(cmd_breakglass_list))
    show = bg_sub.add_parser("show", help="one declaration with its justification and the reviews")
    show.add_argument("declaration_id", help="bg-<32 hex>")
    _connection_options(show)
    show.set_defaults(func=_run(cmd_breakglass_show))
    for name, words in (("ack", "acknowledge (justified; final)"),
                        ("escalate", "escalate (refer for investigation)")):
        verb = bg_sub.add_parser(name, help=f"{words} a declaration; recorded on the ledger")
        verb.add_argument("declaration_id", help="bg-<32 hex>")
        verb.add_argument("--note", help="the review note (kept off-chain, its hash on the ledger; at most 2,000 "
                                         "characters)")
        verb.add_argument("--note-file", help="read the note from this file")
        verb.add_argument("--vkey", default="", help="the log's verifier key you trust, to check the receipt")
        _connection_options(verb)
        verb.set_defaults(func=_run(cmd_breakglass_review))
