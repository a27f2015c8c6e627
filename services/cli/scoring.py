"""`ciphercare` subcommands of the scoring room (registered by services/cli/main.py).

* ``ciphercare model train``: train on WHAS500 (default) or a CSV with a schema, report held-out
  AUC / accuracy / Brier score / calibration, export the package (default: the local server's
  ``<data_dir>/scoring/model.json``, deployed on the ledger at the server's first scoring call).
* ``ciphercare model info``: the public facts and SHA-256 of a package.
* ``ciphercare model template``: the CSV header (and an example row) ``ciphercare score`` expects.
* ``ciphercare score --input patients.csv --output risks.csv``: the hospital side end to end (keys
  generated or loaded locally, encrypt, call, decrypt, write probabilities).
* ``ciphercare bench scoring``: added to ``ciphercare bench``'s choices (see services/bench/scoring.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any


def _cli_error(message: str) -> Exception:
    from ciphercare.services.cli.main import CliError

    return CliError(message)


# model train / info ------------------------------------------------------------------------------


def cmd_model_train(args: argparse.Namespace) -> int:
    from ciphercare.analytics.model.datasets import SchemaError, load_dataset
    from ciphercare.analytics.model.training import TrainingConfig, train_model
    from ciphercare.services.cli.main import _settings
    from ciphercare.services.scoring.servicer import model_path

    try:
        dataset = load_dataset(args.dataset, csv_path=Path(args.csv) if args.csv else None,
                               schema_path=Path(args.schema) if args.schema else None, label=args.label or "",
                               id_column=args.id_column)
        config = TrainingConfig(n_trees=args.trees, max_depth=args.depth, learning_rate=args.learning_rate,
                                bins=args.bins, seed=args.seed)
        result = train_model(dataset, config)
    except (SchemaError, ValueError) as exc:  # ModelError is a ValueError: e.g. margins beyond the HE bound
        raise _cli_error(str(exc)) from exc
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.output) if args.output else model_path(_settings(args))
    sha = result.package.save(out)
    test = result.metrics["test"]
    print(f"trained {config.n_trees} trees of depth <= {config.max_depth} on {dataset.name} "
          f"({len(result.train)} train / {len(result.test)} held out, {result.package.grid.n_edges} public grid edges)")
    print(f"held-out AUC {test['auc']:.3f}   accuracy {test['accuracy']:.3f}   Brier {test['brier']:.4f}   "
          f"ECE {test['expected_calibration_error']:.4f}")
    print("calibration (equal-count bins):  n   mean predicted   observed")
    for row in test["calibration"]:
        print(f"{'':32}{row['n']:>3}   {row['mean_predicted']:>14.3f}   {row['observed_rate']:>8.3f}")
    print(f"model package {out}\nsha256 {sha}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sha256": sha, "path": str(out), "metrics": result.metrics}, indent=2))
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from ciphercare.analytics.model.package import ModelError, ModelPackage
    from ciphercare.services.cli.main import _settings
    from ciphercare.services.scoring.servicer import model_path

    path = Path(args.path) if args.path else model_path(_settings(args))
    try:
        package = ModelPackage.load(path)
    except (ModelError, FileNotFoundError) as exc:
        raise _cli_error(f"{path}: {exc}") from exc
    print(json.dumps(package.public_info(), indent=2))
    return 0


def cmd_model_template(args: argparse.Namespace) -> int:
    """The CSV header ``ciphercare score`` expects for a model (and one example row), from its package."""
    from ciphercare.analytics.model.package import ModelError, ModelPackage
    from ciphercare.services.cli.main import _settings
    from ciphercare.services.scoring.servicer import model_path

    path = Path(args.path) if args.path else model_path(_settings(args))
    try:
        package = ModelPackage.load(path)
    except (ModelError, FileNotFoundError) as exc:
        raise _cli_error(f"{path}: {exc}") from exc
    writer = csv.writer(sys.stdout, lineterminator="\n")
    names = [args.id_column, *package.schema.names] + ([package.schema.label] if args.training else [])
    writer.writerow(names)
    if not args.header_only:
        row: list[str] = ["pt-0001"]
        for spec, edges in zip(package.schema.features, package.grid.edges, strict=True):
            if spec.type == "categorical":
                row.append(spec.categories[0] if spec.categories else "")
            elif spec.type == "binary":
                row.append("0")
            else:
                value = edges[len(edges) // 2]
                row.append(f"{round(value):d}" if spec.type == "integer" else f"{value:g}")
        writer.writerow(row + (["0"] if args.training else []))
    return 0


# score ---------------------------------------------------------------------------------------------


def _token(args: argparse.Namespace, settings: Any) -> str:
    if args.token:
        return str(args.token)
    if not settings.dev_issuer_enabled:
        raise _cli_error("pass --token (a hospital token); the development issuer is disabled")
    from ciphercare.services.identity.devissuer import DevIssuer

    return DevIssuer.from_settings(settings).issue(subject=f"svc-{args.org}-scoring", roles=["hospital"],
                                                  org=args.org, client_id=args.org)


class _Progress:
    """A progress bar on stderr (tqdm) for batches of more than one ciphertext batch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            unit = "ciphertexts" if stage == "encrypted" else "batches"
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_score(args: argparse.Namespace) -> int:
    import grpc

    from ciphercare.analytics.client.keys import KeyOwner
    from ciphercare.analytics.he.ckks import HEError
    from ciphercare.analytics.model.datasets import SchemaError, load_csv
    from ciphercare.sdk.scoring import ScoringClient, ScoringError
    from ciphercare.services.cli.main import _settings

    settings = _settings(args)
    target = args.target or settings.grpc_target
    default_keys = Path.home() / ".ciphercare" / "keys" / f"{args.org}.tenseal"
    keys_path = Path(args.keys).expanduser() if args.keys else default_keys
    client = ScoringClient.connect(target, _token(args, settings), deadline_s=args.deadline)
    try:
        try:
            info = client.model_info()
        except grpc.RpcError as exc:
            raise _cli_error(f"GetModelInfo failed: {exc.code().name}: {exc.details()}") from exc
        try:
            data = load_csv(Path(args.input), info.schema(), require_label=False, id_column=args.id_column)
        except SchemaError as exc:
            raise _cli_error(f"{args.input} does not match the model's schema: {exc}") from exc
        try:
            keys = KeyOwner.load_or_generate(keys_path)
        except HEError as exc:
            raise _cli_error(str(exc)) from exc
        progress = _Progress(enabled=not args.quiet and len(data) > info.slots)
        try:
            run = client.score(keys, data.ids, data.x, purpose=args.purpose, data_class=args.data_class, info=info,
                               progress=progress)
        except ScoringError as exc:
            raise _cli_error(f"scoring failed: {exc}") from exc
        finally:
            progress.close()
    finally:
        client.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([args.id_column, "status", "probability", "margin", "reason_code", "consent_id",
                         "access_event_id", "tx_id", "ledger_sequence"])
        for r in run.results:
            writer.writerow([r.pid, r.status, "" if r.probability is None else f"{r.probability:.6f}",
                             "" if r.margin is None else f"{r.margin:.6f}", r.reason_code, r.consent_id,
                             r.access_event_id, r.tx_id, "" if r.sequence is None else r.sequence])
    counts: dict[str, int] = {}
    for r in run.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"scored with model {info.sha256[:16]}… under context {keys.context_id[:16]}…: {summary}; wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``model train|info`` and ``score``; add ``scoring`` to ``bench``'s choices."""
    model = sub.add_parser("model", help="scoring models: train and inspect")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    train = model_sub.add_parser("train", help="train XGBoost on the public grid; report held-out metrics; export")
    train.add_argument("--dataset", default="whas500", help="shipped dataset (default whas500)")
    train.add_argument("--csv", help="train on this CSV instead (needs --schema)")
    train.add_argument("--schema", help="JSON schema of the CSV: features (name, type, range, categories) and label")
    train.add_argument("--label", help="label column of the CSV (the schema is then inferred; review the warnings)")
    train.add_argument("--id-column", default=None, help="patient id column of the CSV, not a feature")
    train.add_argument("--output", help="package path (default <data_dir>/scoring/model.json)")
    train.add_argument("--trees", type=int, default=100)
    train.add_argument("--depth", type=int, default=3, help="tree depth, 1..3 (the encrypted evaluator's limit)")
    train.add_argument("--learning-rate", type=float, default=0.05)
    train.add_argument("--bins", type=int, default=10, help="grid bins per continuous feature")
    train.add_argument("--seed", type=int, default=20240611)
    train.add_argument("--json", help="also write the metrics as JSON here")
    train.set_defaults(func=cmd_model_train)
    info = model_sub.add_parser("info", help="public facts and SHA-256 of a model package")
    info.add_argument("--path", help="package (default <data_dir>/scoring/model.json)")
    info.set_defaults(func=cmd_model_info)
    template = model_sub.add_parser("template", help="the CSV header `ciphercare score` expects, with an example row")
    template.add_argument("--path", help="package (default <data_dir>/scoring/model.json)")
    template.add_argument("--id-column", default="pid", help="patient id column name (default pid)")
    template.add_argument("--training", action="store_true", help="add the label column (a training CSV)")
    template.add_argument("--header-only", action="store_true", help="print the header line only")
    template.set_defaults(func=cmd_model_template)

    score = sub.add_parser("score", help="encrypted risk scoring of a CSV of patients (hospital side)")
    score.add_argument("--input", required=True, help="CSV with a patient id column and the model's feature columns")
    score.add_argument("--output", required=True, help="CSV to write: pid, status, probability, ...")
    score.add_argument("--target", help="gRPC host:port (default from settings)")
    score.add_argument("--token", help="hospital bearer token (default: a development token for --org)")
    score.add_argument("--org", default="hospital-a", help="organisation for the development token and key file")
    score.add_argument("--keys", help="CKKS key file (created with mode 0600 if missing; "
                                      "default ~/.ciphercare/keys/<org>.tenseal)")
    score.add_argument("--id-column", default="pid", help="column with patient pseudonyms (default pid)")
    score.add_argument("--purpose", default="TREAT", help="purpose of use checked against consent (default TREAT)")
    score.add_argument("--data-class", default="Observation", help="data class checked against consent")
    score.add_argument("--deadline", type=float, default=600.0, help="deadline per call in seconds")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)
