"""Helpers for the Fabric Gateway tests: a ledger node (in-process or `ledger serve`), identities, plans."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.gateway_server import GatewayServicer, MspRegistry, NodeTLS, start_node
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.fabric import ConnectOptions, EndorseError, Gateway, X509Identity, connect
from ciphercare.ledger.fabric.errors import CommitError, GatewayError
from ciphercare.ledger.fabric.signer import new_private_key_signer
from testkit import component_missing

NODE_DIR = Path(__file__).resolve().parents[2] / "fabric" / "node"
CHANNEL = "ciphercare"
CHAINCODE = "ciphercare"


def require_node() -> str:
    """The ``node`` binary with ``@hyperledger/fabric-gateway`` installed; fail under CI, skip elsewhere."""
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "@hyperledger" / "fabric-gateway").is_dir()
    if node is None or not installed:
        msg = "node and tests/fabric/node/node_modules are needed (scripts/setup/50-node-fabric.sh)"
        component_missing(msg)
    return node


GO_DIR = NODE_DIR.parent / "go"


def require_go_client() -> str:
    """The Go conformance binary built from the official Go client (scripts/setup/55-go-fabric.sh)."""
    path = os.environ.get("CIPHERCARE_TEST_FABRIC_GO") or str(GO_DIR / "bin" / "conformance")
    if not os.access(path, os.X_OK):
        msg = "the Go Fabric Gateway conformance client is needed (scripts/setup/55-go-fabric.sh)"
        component_missing(msg)
    return path


def run_plan_go(plan: dict[str, Any], target: str, tmp: Path) -> dict[str, Any]:
    """The plan through the official Go client (tests/fabric/go/main.go)."""
    binary = require_go_client()
    plan_path = tmp / "plan-go.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.run([binary, str(plan_path), target], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"go client failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    for o in report["outcomes"]:  # Go omits empty fields
        o.setdefault("details", []) if not o["ok"] else None
    return report


@dataclass
class Enrolled:
    principal: Principal
    msp_id: str
    cert_pem: bytes
    key_pem: bytes

    def gateway(self, target: str, options: ConnectOptions | None = None) -> Gateway:
        key = serialization.load_pem_private_key(self.key_pem, None)
        return connect(
            X509Identity(self.msp_id, self.cert_pem),
            new_private_key_signer(key),  # type: ignore[arg-type]
            target=target,
            options=options,
        )


def enrol(msp_dir: Path, principal: Principal) -> Enrolled:
    """What an org's ciphercare node does for a verified user: a short-lived cert from the org CA, and its key."""
    ident, key = EmbeddedMSP(msp_dir).enrol(principal)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Enrolled(principal, ident.mspid, ident.cert_pem, key_pem)


@dataclass
class InProcessNode:
    """A gateway node on loopback in a background thread with its own event loop; requests are captured."""

    ledger: EmbeddedLedger
    port: int = 0
    captured: list[tuple[str, Message]] = field(default_factory=list)
    servicer: GatewayServicer | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def in_process_node(tmp: Path, *, max_wait_ms: float = 2.0, tls: NodeTLS | None = None) -> Iterator[InProcessNode]:
    ledger = EmbeddedLedger(
        tmp / "ledger.db",
        tmp / "ckpt.pem",
        "ciphercare.test/ledger",
        new_chaincode,
        msp_dir=tmp / "msp",
        max_wait_ms=max_wait_ms,
    )
    node = InProcessNode(ledger)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server, port, servicer = await start_node(
            ledger, MspRegistry(tmp / "msp"), tls=tls, on_request=lambda m, r: node.captured.append((m, r))
        )
        node.port, node.servicer = port, servicer
        started.set()
        await stop.wait()
        servicer.stop()
        await server.stop(grace=None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield node
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        ledger.close()


@contextmanager
def serve_process(data_dir: Path, extra_env: dict[str, str] | None = None,
                  first_line: list[str] | None = None) -> Iterator[str]:
    """``ciphercare ledger serve --port 0`` as a real process; yields its ``host:port``.

    ``extra_env``: settings for the node; ``first_line``: receives the line the node printed when it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
    env["CIPHERCARE_DATA_DIR"] = str(data_dir)
    env["CIPHERCARE_METRICS_PORT"] = "0"  # any free port: several nodes may run at once
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciphercare.services.cli.main", "ledger", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if first_line is not None:
            first_line.append(line)
        if "gateway.Gateway on " not in line:
            proc.kill()
            raise RuntimeError(f"ledger serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        yield line.split("gateway.Gateway on ", 1)[1].split(" ", 1)[0]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_plan(msp_dir: Path, steps: list[dict[str, Any]], principals: dict[str, Principal]) -> dict[str, Any]:
    people = {}
    for name, principal in principals.items():
        e = enrol(msp_dir, principal)
        people[name] = {"msp_id": e.msp_id, "cert_pem": e.cert_pem.decode(), "key_pem": e.key_pem.decode()}
    return {"channel": CHANNEL, "chaincode": CHAINCODE, "principals": people, "steps": steps}


def _resolve(args: list[Any], outcomes: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in args:
        if isinstance(a, dict) and "$ref" in a:
            index, fld = a["$ref"]
            out.append(str(json.loads(outcomes[index]["result"])[fld]))
        else:
            out.append(str(a))
    return out


async def run_plan_python(plan: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """The plan through ciphercare's Python Gateway client."""
    gateways: dict[str, Gateway] = {}
    for name, p in plan["principals"].items():
        key = serialization.load_pem_private_key(p["key_pem"].encode(), None)
        gateways[name] = connect(
            X509Identity(p["msp_id"], p["cert_pem"].encode()),
            new_private_key_signer(key),  # type: ignore[arg-type]
            target=target,
        )
    outcomes: list[dict[str, Any]] = []
    try:
        for step in plan["steps"]:
            contract = gateways[step["who"]].network(plan["channel"]).contract(plan["chaincode"], step["contract"])
            args = _resolve(step["args"], outcomes)
            try:
                if step["op"] == "submit":
                    result = await contract.submit(step["fn"], args)
                else:
                    result = await contract.evaluate(step["fn"], args)
                outcomes.append({"ok": True, "result": result.decode("utf-8")})
            except GatewayError as err:
                outcomes.append({"ok": False, "code": err.code.value[0], "details": [d.message for d in err.details]})
            except CommitError as err:  # pragma: no cover - a plan never conflicts with itself
                outcomes.append({"ok": False, "code": -err.code, "details": [str(err)]})
    finally:
        for g in gateways.values():
            await g.close()
    return outcomes


def run_plan_node(plan: dict[str, Any], target: str, tmp: Path) -> dict[str, Any]:
    """The plan through the official Node client (tests/fabric/node/conformance.js)."""
    node = require_node()
    plan_path = tmp / "plan.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.run(
        [node, str(NODE_DIR / "conformance.js"), str(plan_path), target],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=NODE_DIR,
    )
    if proc.returncode != 0:
        raise AssertionError(f"node client failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


__all__ = [
    "EndorseError",
    "Enrolled",
    "GatewayError",
    "InProcessNode",
    "enrol",
    "grpc",
    "in_process_node",
    "make_plan",
    "require_go_client",
    "require_node",
    "run_plan_go",
    "run_plan_node",
    "run_plan_python",
    "serve_process",
]
