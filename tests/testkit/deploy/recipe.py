"""Rules for the container recipe (deploy/containers/Containerfile): a small parser and the checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from testkit.deploy.chart import REPO

CONTAINERFILE = REPO / "deploy" / "containers" / "Containerfile"
HEALTHCHECK = REPO / "deploy" / "containers" / "healthcheck.py"


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
