"""Zama Concrete ML's encrypted XGBoost (TFHE) for the side-by-side benchmark, in its own virtualenv.

Concrete ML 1.9 pins numpy 1.26, torch 2.3, scikit-learn 1.5 and xgboost 1.6, which cannot share an
environment with ciphercare; :func:`ensure_venv` installs it once under
``~/.cache/ciphercare/concrete-venv`` with pip (PyPI only) and :func:`run` drives :data:`SCRIPT` there
with the same training split, tree count and depth as ciphercare's model. Nothing here is imported by
the service.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

VENV = Path.home() / ".cache" / "ciphercare" / "concrete-venv"
REQUIREMENT = "concrete-ml==1.9.0"

SCRIPT = r'''
import json, sys, time, tempfile
import numpy as np
from concrete.ml.sklearn import XGBClassifier
from concrete.ml.deployment import FHEModelDev, FHEModelClient, FHEModelServer

args = json.loads(sys.argv[1])
data = np.load(args["data"])
xtr, ytr, xte = data["x_train"], data["y_train"], data["x_test"]
model = XGBClassifier(n_bits=args["n_bits"], n_estimators=args["n_trees"], max_depth=args["max_depth"],
                      learning_rate=args["learning_rate"], n_jobs=1)
t = time.perf_counter(); model.fit(xtr, ytr); fit_s = time.perf_counter() - t
t = time.perf_counter(); model.compile(xtr); compile_s = time.perf_counter() - t
p_sim = model.predict_proba(xte, fhe="simulate")[:, 1]
p_clear = model.predict_proba(xte, fhe="disable")[:, 1]
work = tempfile.mkdtemp()
FHEModelDev(work + "/model", model).save()
client = FHEModelClient(work + "/model", key_dir=work + "/keys")
t = time.perf_counter(); client.generate_private_and_evaluation_keys(); keygen_s = time.perf_counter() - t
evk = client.get_serialized_evaluation_keys()
server = FHEModelServer(work + "/model"); server.load()
runs = []
for i in range(args["patients"]):
    t0 = time.perf_counter(); enc = client.quantize_encrypt_serialize(xte[i:i + 1]); t1 = time.perf_counter()
    res = server.run(enc, evk); t2 = time.perf_counter()
    proba = client.deserialize_decrypt_dequantize(res)[0]; t3 = time.perf_counter()
    runs.append({"encrypt_s": t1 - t0, "server_s": t2 - t1, "decrypt_s": t3 - t2, "upload_bytes": len(enc),
                 "download_bytes": len(res), "p_fhe": float(np.ravel(proba)[-1]), "p_sim": float(p_sim[i])})
print(json.dumps({"fit_s": fit_s, "compile_s": compile_s, "keygen_s": keygen_s, "evaluation_key_bytes": len(evk),
                  "p_sim": p_sim.tolist(), "p_clear": p_clear.tolist(), "runs": runs}))
'''


def ensure_venv(log: Any = print) -> Path | None:
    """The venv's python, installing Concrete ML on first use; ``None`` (with a logged reason) if it cannot."""
    python = VENV / "bin" / "python"
    if python.exists():
        probe = subprocess.run([str(python), "-c", "import concrete.ml"], capture_output=True)
        if probe.returncode == 0:
            return python
    log(f"installing {REQUIREMENT} into {VENV} (first run only; torch and friends, a few GB)")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
             [str(python), "-m", "pip", "install", "--quiet", REQUIREMENT]]
    for cmd in steps:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            log(f"Concrete ML could not be installed ({' '.join(cmd[-2:])}): {result.stderr.strip()[-400:]}")
            return None
    return python


def run(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, n_trees: int, max_depth: int,
        learning_rate: float, patients: int, n_bits: int = 6, timeout_s: float = 3600) -> dict[str, Any] | None:
    """Train, compile and execute Concrete ML's XGBoost on ``patients`` test rows; ``None`` if unavailable."""
    python = ensure_venv()
    if python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ciphercare-concrete-") as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test)
        args = {"data": str(data), "n_trees": n_trees, "max_depth": max_depth, "learning_rate": learning_rate,
                "patients": patients, "n_bits": n_bits}
        result = subprocess.run([str(python), "-c", SCRIPT, json.dumps(args)], capture_output=True, text=True,
                                timeout=timeout_s)
    if result.returncode != 0:
        print(f"Concrete ML run failed: {result.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
