"""Deployment test kit: the chart, the tools that check it (helm, checkov) and the container recipe's rules.

Tools come from scripts/setup (HELM_BIN from 40-helm.sh, CHECKOV_BIN from 41-checkov.sh) or PATH. Under
CI=true a missing tool fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "ciphercare"
CONTAINERFILE = REPO / "deploy" / "containers" / "Containerfile"
HEALTHCHECK = REPO / "deploy" / "containers" / "healthcheck.py"
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
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


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


# Container recipe ---------------------------------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_recipe(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Containerfile (continuations joined, comments dropped)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    if buffer:
        logical.append((start, buffer))
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            stages.append(Stage(name=name, base=parts[0]))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            if default.strip().strip('"'):
                args[key.strip()] = default.strip().strip('"')
        elif stages:
            stages[-1].instructions.append(Instruction(number, keyword, rest))
        else:
            stages.append(Stage(name="(before FROM)", base=""))
            stages[-1].instructions.append(Instruction(number, keyword, rest))
    return args, stages


_PINNED_TAG = re.compile(r":(\d+\.\d+\.\d+)[\w.-]*$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SECRETISH = re.compile(r"(\.pem|\.key|\.p12|\.jks|\.env|id_rsa|secret|password|token|kek)", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL|_KEY\b|PRIVATE)", re.IGNORECASE)


def _resolve(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)


def _exec_form(arg: str) -> list[str] | None:
    arg = arg.strip()
    if not arg.startswith("["):
        return None
    value = yaml.safe_load(arg)
    return [str(v) for v in value] if isinstance(value, list) else None


def recipe_violations(text: str, targets: tuple[str, ...]) -> list[str]:
    """Every broken rule of the recipe, one readable line each (empty: the recipe passes)."""
    problems: list[str] = []
    args, stages = parse_recipe(text)
    names = {s.name for s in stages}
    for stage in stages:
        if not stage.base:
            problems.append(f"{stage.name}: instructions before the first FROM")
            continue
        if stage.base in names:  # FROM an earlier stage: pinned through it
            continue
        base = _resolve(stage.base, args)
        if "$" in base:
            problems.append(f"{stage.name}: base {stage.base} has no default")
        elif base.endswith(":latest") or not (_DIGEST.search(base) or _PINNED_TAG.search(base)):
            problems.append(f"{stage.name}: base {base} is not pinned (exact x.y.z tag or @sha256 digest)")
        for ins in stage.instructions:
            if ins.keyword == "ADD":
                problems.append(f"line {ins.line}: ADD (use COPY: ADD fetches URLs and unpacks archives)")
            if ins.keyword == "COPY" and _SECRETISH.search(ins.args):
                problems.append(f"line {ins.line}: COPY of secret-looking material: {ins.args}")
            if ins.keyword in ("ENV", "ARG"):
                for name, value in re.findall(r"(\w+)=(\S*)", ins.args):
                    if _SECRET_ENV.search(name) and value:
                        problems.append(f"line {ins.line}: {ins.keyword} {name} bakes a secret-looking value")
    by_name = {s.name: s for s in stages}
    for target in targets:
        if target not in by_name:
            problems.append(f"target {target}: missing")
            continue
        chain = _stage_chain(by_name, target)
        users = [i for s in chain for i in s.all("USER")]
        if not users:
            problems.append(f"target {target}: no USER (runs as root)")
        else:
            user = users[-1].args.split(":")[0]
            if user in ("root", "0") or not user.isdigit() or int(user) < 10000:
                problems.append(f"target {target}: USER {users[-1].args} is not a numeric non-root uid >= 10000")
        health = [i for s in chain for i in s.all("HEALTHCHECK")]
        if not health or health[-1].args.upper().startswith("NONE"):
            problems.append(f"target {target}: no HEALTHCHECK")
        if not [i for s in chain for i in s.all("EXPOSE")]:
            problems.append(f"target {target}: no EXPOSE")
        entry = [i for s in chain for i in s.all("ENTRYPOINT")]
        if not entry or _exec_form(entry[-1].args) is None:
            problems.append(f"target {target}: ENTRYPOINT missing or not in exec form")
        cmd = [i for s in chain for i in s.all("CMD")]
        if not cmd or _exec_form(cmd[-1].args) is None:
            problems.append(f"target {target}: CMD missing or not in exec form")
    return problems


def _stage_chain(by_name: dict[str, Stage], target: str) -> list[Stage]:
    """The target and the stages it is built FROM, base first."""
    chain: list[Stage] = []
    stage: Stage | None = by_name[target]
    while stage is not None:
        chain.insert(0, stage)
        stage = by_name.get(stage.base)
    return chain


def target_command(text: str, target: str) -> list[str]:
    """ENTRYPOINT + CMD of a target, as the container runs it."""
    _, stages = parse_recipe(text)
    chain = _stage_chain({s.name: s for s in stages}, target)
    entry = [i for s in chain for i in s.all("ENTRYPOINT")]
    cmd = [i for s in chain for i in s.all("CMD")]
    return (_exec_form(entry[-1].args) or []) + (_exec_form(cmd[-1].args) or [])


def target_env(text: str, target: str) -> dict[str, str]:
    _, stages = parse_recipe(text)
    env: dict[str, str] = {}
    for stage in _stage_chain({s.name: s for s in stages}, target):
        for ins in stage.all("ENV"):
            env.update(dict(re.findall(r"(\w+)=(\S*)", ins.args)))
    return env
