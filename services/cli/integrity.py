"""`ciphercare` subcommands of the ledger-integrity room (registered by services/cli.py).

* ``ledger verify`` -- recompute every hash and signature offline; a signed checkpoint must cover the whole
  log, the log must extend every checkpoint it published, and (with a policy) the witness quorum must hold;
* ``ledger check`` -- a client's view: fetch the served checkpoint, verify it (log key, witness quorum),
  demand a consistency proof from the last checkpoint this client verified, and remember the new one;
* ``witness serve`` / ``witness vkey`` -- run a C2SP tlog-witness for other organisations' logs.

Exit codes of ``ledger verify`` (also in docs/TRANSPARENCY.md)::

    0  the log verifies
    1  verify could not run (no ledger file, no or bad key, unreadable policy)
    2  bad usage
    3  tampered: an entry, table row or checkpoint does not match its hashes, signature or replay
    4  unsigned tail or rolled back: no signed checkpoint covers the whole log, or the log is shorter than /
       different from a checkpoint the node published
    5  damaged: SQLite reports a damaged page or index, or a value cannot be read (the page/entry is named)
    6  witness policy not met: no quorum-cosigned checkpoint covers the log
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERIFY_EPILOG = """exit codes:
  0  the log verifies
  1  verify could not run (no ledger file, no or bad key, unreadable policy)
  3  tampered: an entry, row or checkpoint does not match its hashes, signature or replay
  4  unsigned tail or rolled back: no signed checkpoint covers the whole log, or the log is
     shorter than / differs from a checkpoint the node published (<ledger>.checkpoints)
  5  damaged: SQLite reports a damaged page or index, or a value cannot be read
  6  witness policy not met: no quorum-cosigned checkpoint covers the log
The verifier key is taken from --vkey, else CIPHERCARE_LEDGER_VKEY; falling back to the
key file in the data directory is loudly warned about (whoever can rewrite the ledger can
replace that file)."""

LOUD = "WARNING" + "!" * 3


class IntegrityCliError(Exception):
    """A failure worth one line on stderr and exit code 1."""


def _one_line_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except IntegrityCliError as exc:
            print(f"ciphercare: {exc}", file=sys.stderr)
            return 1

    return run


def _settings(args: argparse.Namespace) -> Any:
    from ciphercare.services.cli.main import _settings as cli_settings

    try:
        return cli_settings(args)
    except Exception as exc:
        if type(exc).__name__ == "CliError":
            raise IntegrityCliError(str(exc)) from exc
        raise


def trusted_vkeys(args_vkeys: list[str] | None, settings: Any, *, what: str = "verify") -> tuple[list[str], str]:
    """The pinned log keys (oldest first) and where they came from; warns loudly for the local key file."""
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

    if args_vkeys:
        keys = [k.strip() for v in args_vkeys for k in v.split(",") if k.strip()]
        return keys, "--vkey"
    if settings.ledger_vkey:
        keys = [k.strip() for k in settings.ledger_vkey.split(",") if k.strip()]
        return keys, "CIPHERCARE_LEDGER_VKEY"
    key_path = settings.resolved_ledger_key_path
    if not key_path.exists():
        raise IntegrityCliError(f"no verifier key: pass --vkey or set CIPHERCARE_LEDGER_VKEY (no key at {key_path})")
    print(
        f"{LOUD} {what}: no pinned verifier key (--vkey / CIPHERCARE_LEDGER_VKEY); trusting the signing key "
        f"file {key_path}. Whoever can rewrite the ledger can replace that file: this run proves nothing "
        "against the operator.",
        file=sys.stderr,
    )
    retired = [k.strip() for k in settings.ledger_retired_vkeys.split(",") if k.strip()]
    return [*retired, CheckpointSigner.load(key_path, settings.ledger_origin).vkey], "local key file"


def _load_policy(path: str | Path | None) -> Any:
    if not path:
        return None
    from ciphercare.ledger.witness.policy import Policy, PolicyError

    try:
        return Policy.load(path)
    except PolicyError as exc:
        raise IntegrityCliError(str(exc)) from exc


@_one_line_errors
def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from ciphercare.ledger.embedded.verify import verify_ledger
    from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring

    settings = _settings(args)
    path = Path(args.path) if args.path else settings.resolved_ledger_path
    if not path.exists():
        raise IntegrityCliError(f"no ledger at {path}")
    policy = _load_policy(args.policy or settings.witness_policy)
    if policy is not None and not args.vkey and not settings.ledger_vkey:
        vkeys, source = policy.log_keys.vkeys, "policy"
    else:
        vkeys, source = trusted_vkeys(args.vkey, settings)
    try:
        keyring = CheckpointKeyring.from_vkeys(vkeys)
    except ValueError as exc:
        raise IntegrityCliError(f"bad verifier key ({source}): {exc}") from exc
    published = args.checkpoints or (settings.resolved_ledger_published_path if not args.path else None)
    report = verify_ledger(path, keyring, published_path=published, policy=policy,
                           cosigned_path=args.cosigned, max_unwitnessed=args.max_unwitnessed)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if report.ok:
        witnessed = "" if report.witnessed_size is None else f", witnessed up to {report.witnessed_size}"
        print(f"ledger OK: {report.entries_checked} entries, {report.checkpoints_checked} signed checkpoints, "
              f"{report.published_checked} published checkpoints verified{witnessed} ({path}; key from {source})")
        return 0
    error = report.first_error
    assert error is not None
    print(f"ledger BAD ({error.kind}): {error}", file=sys.stderr)
    return error.exit_code


CHECK_EPILOG = """exit codes:
  0  the served checkpoint verifies and extends the one this client verified before
  1  the check could not run (server unreachable, no key)
  3  the served checkpoint does not verify (log signature, or witness quorum with a policy)
  4  rollback or fork: the log does not extend the remembered checkpoint; both signed
     checkpoints are printed as JSON evidence on stdout
The remembered checkpoint per log lives in --state-dir (default CIPHERCARE_CLIENT_STATE_DIR,
else ~/.ciphercare/checkpoints)."""


@_one_line_errors
def cmd_ledger_check(args: argparse.Namespace) -> int:
    import json

    import grpc

    from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring
    from ciphercare.sdk.checkpoints import CheckpointCheckError, CheckpointMemory, CheckpointStore, RollbackError
    from ciphercare.sdk.client import CiphercareClient

    settings = _settings(args)
    policy = _load_policy(args.policy or settings.witness_policy)
    if policy is not None and not args.vkey and not settings.ledger_vkey:
        vkeys, source = policy.log_keys.vkeys, "policy"
    else:
        vkeys, source = trusted_vkeys(args.vkey, settings, what="ledger check")
    try:
        keyring = CheckpointKeyring.from_vkeys(vkeys)
    except ValueError as exc:
        raise IntegrityCliError(f"bad verifier key ({source}): {exc}") from exc
    token = args.token
    if not token:
        if not settings.dev_issuer_enabled:
            raise IntegrityCliError("pass --token (a bearer token allowed to read checkpoints)")
        from ciphercare.services.identity.devissuer import DevIssuer

        token = DevIssuer.from_settings(settings).issue(subject="ledger-check", roles=["compliance-officer"],
                                                        org="regulator")
    state_dir = Path(args.state_dir) if args.state_dir else settings.resolved_client_state_dir
    memory = CheckpointMemory(keyring, policy=policy, store=CheckpointStore(state_dir))
    client = CiphercareClient.connect(args.target or settings.grpc_target, token,
                                      deadline_s=settings.client_deadline_s)
    try:
        result = memory.check(client)
    except RollbackError as exc:
        print(json.dumps(exc.evidence(), indent=1))
        print(f"ciphercare: LOG ROLLED BACK OR FORKED: {exc}", file=sys.stderr)
        return 4
    except CheckpointCheckError as exc:
        print(f"ciphercare: the served checkpoint does not verify: {exc}", file=sys.stderr)
        return 3
    except grpc.RpcError as exc:
        raise IntegrityCliError(f"server refused: {exc.code().name}: {exc.details()}") from exc  # type: ignore[attr-defined]
    finally:
        client.close()
    cp = result.checkpoint
    witnessed = f", cosigned by {', '.join(result.witnesses)}" if result.witnesses else ""
    before = "" if result.previous is None else f" (remembered: {result.previous.size})"
    print(f"checkpoint OK: {cp.origin} size {cp.size}{witnessed}; {result.status}{before}; key from {source}")
    return 0


def register_ledger(ledger_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``ledger verify`` (and ``ledger check``) to the ``ledger`` group of services/cli.py."""
    verify = ledger_sub.add_parser(
        "verify", help="recompute every hash and signature offline", epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("--path", help="ledger file (default from settings)")
    verify.add_argument("--vkey", action="append",
                        help="trusted verifier key of the log; repeat (oldest first) to accept rotated keys "
                             "(default: CIPHERCARE_LEDGER_VKEY)")
    verify.add_argument("--checkpoints", help="published-checkpoint file (default: <ledger>.checkpoints)")
    verify.add_argument("--policy", help="witness policy file (default: CIPHERCARE_WITNESS_POLICY)")
    verify.add_argument("--cosigned", help="witness-cosigned checkpoints (default: <ledger>.cosigned)")
    verify.add_argument("--max-unwitnessed", type=int, default=0,
                        help="entries allowed beyond the newest quorum-cosigned checkpoint (default 0)")
    verify.set_defaults(func=cmd_ledger_verify)

    check = ledger_sub.add_parser(
        "check", help="as a client: verify the served checkpoint and that it extends the last one seen",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--target", help="gRPC host:port (default from settings)")
    check.add_argument("--token", help="bearer token (default: a development-issuer token when enabled)")
    check.add_argument("--vkey", action="append", help="trusted log verifier key (repeat for rotated keys)")
    check.add_argument("--policy", help="witness policy file: also require the witness quorum")
    check.add_argument("--state-dir", help="where the last verified checkpoint per log is kept")
    check.set_defaults(func=cmd_ledger_check)


@_one_line_errors
def cmd_witness_serve(args: argparse.Namespace) -> int:
    import signal

    from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring
    from ciphercare.ledger.witness.server import Witness, WitnessHTTPServer

    logs: dict[str, list[str]] = {}
    for vkey in args.log or []:
        origin = vkey.split("+", 1)[0]
        logs.setdefault(origin, []).append(vkey)
    if args.policy:
        policy = _load_policy(args.policy)
        for vkey in policy.log_keys.vkeys:
            logs.setdefault(vkey.split("+", 1)[0], []).append(vkey)
    if not logs:
        raise IntegrityCliError("name at least one log to witness: --log <log vkey> (or --policy)")
    try:
        rings = {origin: CheckpointKeyring.from_vkeys(keys) for origin, keys in logs.items()}
        witness = Witness(Path(args.dir), args.name, rings, args.alg)
        server = WitnessHTTPServer((args.host, args.port), witness, args.prefix)
    except (ValueError, OSError) as exc:
        raise IntegrityCliError(f"witness not started: {exc}") from exc
    host, port = args.host, int(server.server_address[1])
    print(f"witness {witness.vkey}", flush=True)
    print(f"listening on http://{host}:{port}{args.prefix} for {', '.join(sorted(rings))}", flush=True)

    def stop(*_: object) -> None:
        import threading

        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@_one_line_errors
def cmd_witness_vkey(args: argparse.Namespace) -> int:
    from ciphercare.ledger.witness.cosignature import WitnessSigner

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    try:
        print(WitnessSigner(Path(args.dir) / f"witness-{args.alg}.pem", args.name, args.alg).vkey)
    except (ValueError, OSError) as exc:
        raise IntegrityCliError(str(exc)) from exc
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Top-level commands of this room (``witness``)."""
    witness = sub.add_parser("witness", help="run a C2SP tlog-witness for another organisation's ledger")
    wsub = witness.add_subparsers(dest="witness_command", required=True)
    serve = wsub.add_parser("serve", help="serve POST <prefix>/add-checkpoint (tlog-witness), cosign with Ed25519")
    serve.add_argument("--dir", required=True, help="state directory (key witness-<alg>.pem, state.json)")
    serve.add_argument("--name", required=True, help="witness name, e.g. witness.hospital-b.example")
    serve.add_argument("--log", action="append", help="verifier key of a log to witness (repeat; oldest first)")
    serve.add_argument("--policy", help="take the log keys from this policy file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7380, help="0 = any free port (printed)")
    serve.add_argument("--prefix", default="", help="URL prefix of the endpoints")
    serve.add_argument("--alg", default="ed25519", choices=["ed25519", "ml-dsa-44"],
                       help="cosignature algorithm (tlog-cosignature; ML-DSA-44 is post-quantum)")
    serve.set_defaults(func=cmd_witness_serve)
    vkey = wsub.add_parser("vkey", help="print the witness's verifier key (creates the key if missing)")
    vkey.add_argument("--dir", required=True)
    vkey.add_argument("--name", required=True)
    vkey.add_argument("--alg", default="ed25519", choices=["ed25519", "ml-dsa-44"])
    vkey.set_defaults(func=cmd_witness_vkey)


# --- `ciphercare up` with a local demo witness, and the demo's transparency steps -------------------------

DEMO_WITNESS_NAME = "demo-witness.ciphercare.local"


def demo_policy_path(settings: Any) -> Path:
    return Path(settings.data_dir) / "demo-witness-policy.txt"


def start_demo_witness(settings: Any) -> tuple[Any, Any]:
    """With CIPHERCARE_DEMO_WITNESS=true and no witness policy: start ``ciphercare witness serve`` as its own
    process on loopback (state in data_dir/demo-witness), write a policy naming it (quorum 1) and return
    settings that use it, plus the process (the caller stops it). Otherwise ``(settings, None)``."""
    import subprocess

    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

    if not settings.demo_witness or settings.witness_policy is not None:
        return settings, None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_vkey = CheckpointSigner(settings.resolved_ledger_key_path, settings.ledger_origin).vkey
    state = Path(settings.data_dir) / "demo-witness"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciphercare.services.cli.main", "witness", "serve", "--dir", str(state),
         "--name", DEMO_WITNESS_NAME, "--log", log_vkey, "--port", "0"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    if not first.startswith("witness ") or "listening on " not in second:
        proc.kill()
        raise IntegrityCliError(f"the demo witness did not start: {first.strip()} {second.strip()}")
    witness_vkey, url = first.split(" ", 1)[1].strip(), second.split(" ")[2]
    policy = demo_policy_path(settings)
    policy.write_text(f"# written by `ciphercare up` (CIPHERCARE_DEMO_WITNESS=true)\nlog {log_vkey}\n"
                      f"witness {witness_vkey} {url}\nquorum 1\n", encoding="utf-8")
    return settings.model_copy(update={"witness_policy": policy}), proc


def demo_transparency(settings: Any, officer: Any, step: Callable[[str, str], None]) -> bool:
    """Demo steps: a checkpoint cosigned by a witness in its own process; a client rejecting a rolled-back log."""
    import time

    from ciphercare.sdk.checkpoints import CheckpointMemory, RollbackError, served_note
    from ciphercare.v1 import access_log_pb2

    path = settings.witness_policy or (demo_policy_path(settings) if demo_policy_path(settings).exists() else None)
    if path is None:
        step("witness cosignature", "skipped: no witness (start `up` with CIPHERCARE_DEMO_WITNESS=true)")
        return True
    policy = _load_policy(path)
    latest = officer.call(officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
    deadline = time.monotonic() + 10
    while True:
        try:
            cosigned = officer.call(officer.access_log.GetCheckpoint,
                                    access_log_pb2.GetCheckpointRequest(cosigned=True))
            if cosigned.checkpoint.tree_size >= latest.checkpoint.tree_size:
                break
        except Exception:  # noqa: BLE001 - FAILED_PRECONDITION until the first cosignature arrives
            cosigned = None
        if time.monotonic() > deadline:
            step("witness cosigns the latest checkpoint", "NOT cosigned within 10 s")
            return False
        time.sleep(0.2)
    memory = CheckpointMemory(policy.log_keys, policy=policy)
    result = memory.check_note(served_note(cosigned), lambda a, b: [])
    step("a witness in its own process cosigned the checkpoint",
         f"size {result.checkpoint.size}, {', '.join(result.witnesses)} (quorum {policy.quorum})")
    older_size = max(1, result.checkpoint.size // 2)
    older = None
    while older is None and older_size > 0:
        try:
            older = officer.call(officer.access_log.GetCheckpoint,
                                 access_log_pb2.GetCheckpointRequest(tree_size=older_size))
        except Exception:  # noqa: BLE001 - no checkpoint ends exactly there; try a smaller size
            older_size -= 1
    if older is None:
        return True
    rolled_back = CheckpointMemory(policy.log_keys)  # the older note is genuine: as a rolled-back node serves it
    rolled_back.seed(memory.remembered(result.checkpoint.origin))  # type: ignore[arg-type]
    try:
        rolled_back.check_note(served_note(older), lambda a, b: [])
    except RollbackError as exc:
        step("the client that remembers rejects a rolled-back log", f"refused: {str(exc)[:48]}…")
        return True
    step("the client that remembers rejects a rolled-back log", "ACCEPTED (unexpected)")
    return False
