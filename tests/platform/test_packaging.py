"""The hospital's install: a plain ``pip install`` gives the SDK and the CLI without the server's dependencies."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("sqlalchemy", "xgboost", "sklearn", "sksurv", "scipy", "pandas", "starlette", "uvicorn", "alembic",
               "psycopg", "jwt", "hfc", "playwright")

SDK_SCRIPT = """
import importlib.util, json, sys
from ciphercare.ledger.transparency.merkle import MerkleTree, leaf_hash, verify_inclusion
from ciphercare.sdk import client, receipts, scoring  # the SDK imports without the server
leaves = [json.dumps({"seq": i}).encode() for i in range(7)]
tree = MerkleTree()
for leaf in leaves:
    tree.append_leaf(leaf)
proof = tree.inclusion_proof(3, 7)
if not verify_inclusion(leaf_hash(leaves[3]), 3, 7, proof, tree.root(7)):
    sys.exit("a genuine leaf did not verify")
if verify_inclusion(leaf_hash(b"forged"), 3, 7, proof, tree.root(7)):
    sys.exit("a forged leaf verified")
print("forged leaf refused")
print("absent:", ",".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
"""


def _dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.mark.slow
def test_sdk_only_install_runs_the_cli_and_verifies_proofs(tmp_path: Path) -> None:
    env_dir = tmp_path / "sdk-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    assert "warning" not in install.stderr.lower(), install.stderr[-2000:]

    cli = env_dir / "bin" / "ciphercare"
    version = subprocess.run([str(cli), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("ciphercare "), version.stderr
    helped = subprocess.run([str(cli), "score", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--input" in helped.stdout, helped.stderr

    checked = subprocess.run([str(python), "-c", SDK_SCRIPT, *SERVER_ONLY], env=env, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "forged leaf refused" in checked.stdout
    absent = checked.stdout.split("absent:", 1)[1].strip().split(",")
    assert sorted(absent) == sorted(SERVER_ONLY), f"server-only packages installed: {set(SERVER_ONLY) - set(absent)}"
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    tools = ("pip", "setuptools", "_distutils_hack")
    tooling = sum(_dir_mib(p) for p in site.iterdir() if p.name.split("-")[0] in tools)
    # recorded in docs/ARCHITECTURE.md (packaging): the whole venv, and what installing ciphercare added to it
    print(f"SDK-only virtual environment: {_dir_mib(env_dir):.0f} MiB; ciphercare and its dependencies: "
          f"{_dir_mib(site) - tooling:.0f} MiB")
    sys.stdout.flush()
