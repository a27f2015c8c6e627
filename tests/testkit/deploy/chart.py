"""The chart and the tools that check it (helm, checkov): rendering, parsing, locating tools.

Tools come from scripts/setup (HELM_BIN from 40-helm.sh, CHECKOV_BIN from 41-checkov.sh) or PATH. Under
CI=true a missing tool fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from testkit import component_missing

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "ciphercare"
NAMESPACE = "ciphercare"
RELEASE = "cc"
OVERLAYS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "embedded": ("-f", str(CHART / "ci" / "embedded-values.yaml")),
    "production": ("-f", str(CHART / "ci" / "production-values.yaml")),
}


def require_tool(env_var: str, name: str, how: str) -> str:
    """The path of a tool named by ``env_var`` or found on PATH; fail under CI=true, skip otherwise."""
    path = os.environ.get(env_var) or shutil.which(name)
    if path and Path(path).is_file() and os.access(path, os.X_OK):
        return path
    message = f"{name} not found ({env_var} unset and not on PATH); {how}"
    component_missing(message)


def helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": os.environ.get("HELM_CACHE_HOME", "/tmp/ciphercare-helm-cache"),
           "HELM_CONFIG_HOME": os.environ.get("HELM_CONFIG_HOME", "/tmp/ciphercare-helm-config"),
           "HELM_DATA_HOME": os.environ.get("HELM_DATA_HOME", "/tmp/ciphercare-helm-data")}
    proc = subprocess.run([helm_bin, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {shlex.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def template(helm_bin: str, *values_args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm(helm_bin, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args, check=check)


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}
