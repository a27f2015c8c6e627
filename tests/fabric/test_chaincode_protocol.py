"""`ciphercare chaincode serve` driven over the real chaincode protocol by a test peer.

The server runs as its own process (the CLI), the peer dials it over gRPC on loopback exactly as a
Fabric peer dials a ``ccaas`` chaincode, and the whole consent decision table (``consent_table.play``)
runs through it. The same transactions (same creators, tx ids and timestamps) run through the
embedded runtime (``ciphercare.ledger.embedded.runtime.ChaincodeRuntime``); every status, payload, message,
write set and event must be byte-identical, and so must the final world states.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, ContractChaincode, TransactionContext
from fabric_protos.peer import chaincode_pb2 as cc_pb
from fabric_protos.peer import chaincode_shim_pb2 as shim_pb
from fabric_protos.peer import proposal_pb2
from testkit.fabric.chaincode_peer import (
    ChaincodePeer,
    LedgerState,
    ProposalRejected,
    Signer,
    SyncPeer,
    build_proposal,
    check_proposal,
    issue_signer,
    tx_id_for,
)
from testkit.fabric.consent_table import (
    CLINICIAN_A,
    OFFICER,
    PATIENT_1,
    PRINCIPALS,
    Outcome,
    Step,
    as_json,
    grant_input,
    play,
)

from ciphercare.consent.contracts import new_chaincode
from ciphercare.consent.server import ChaincodeServerConfig, build_server
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import ChaincodeRuntime

CLI = (sys.executable, "-m", "ciphercare.services.cli.main", "chaincode", "serve")
CCID = "ciphercare_1.0:" + "ab" * 32
CM = shim_pb.ChaincodeMessage


# --- the server process ---------------------------------------------------------------------------


def start_server(extra_env: dict[str, str], timeout_s: float = 60.0) -> tuple[subprocess.Popen[str], int]:
    """``ciphercare chaincode serve`` in its own process; returns it and its port once it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINCODE_")}
    env.update({"CHAINCODE_ID": CCID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0", **extra_env})
    proc = subprocess.Popen(CLI, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.stdout is None:
        raise RuntimeError("no stdout pipe")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"chaincode server exited {proc.returncode}: {err}")
            continue
        if " listening on " in line:
            return proc, int(line.split(" listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
    proc.kill()
    raise RuntimeError("chaincode server did not start")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    proc, port = start_server({"CHAINCODE_TLS_DISABLED": "true"})
    try:
        yield port
    finally:
        stop_server(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""  # SIGTERM stops it cleanly


@pytest.fixture(scope="module")
def signers() -> dict[Principal, Signer]:
    msp = EmbeddedMSP()
    return {p: issue_signer(msp, p) for p in PRINCIPALS}


def new_peer(port: int, **kwargs: Any) -> SyncPeer:
    kwargs.setdefault("expected_ccid", CCID)
    kwargs.setdefault("state", LedgerState())
    return SyncPeer(lambda: ChaincodePeer(f"127.0.0.1:{port}", **kwargs))


# --- the two backends ------------------------------------------------------------------------------


def embedded_backend(signers: dict[Principal, Signer], state: LedgerState) -> Any:
    runtime = ChaincodeRuntime(new_chaincode(), channel="ciphercare", chaincode_name="ciphercare")

    def run(step: Step) -> Outcome:
        signer = signers[step.who]
        tx_id = tx_id_for(step.nonce, signer.identity.serialized)
        r = runtime.execute(state, None, signer.identity, step.contract, step.function, step.args,
                            tx_id=tx_id, ts_ms=step.ts_ms, read_only=not step.submit)
        assert len(r.events) <= 1, "a contract set more than one event; Fabric would keep only the last"
        event = (r.events[0].name, r.events[0].payload) if r.events else None
        if r.ok and step.submit:
            state.commit(tx_id, step.ts_ms, r.writes)
        return Outcome(tx_id, r.status, r.payload, r.message, r.writes if r.ok else (), event)

    return run


def protocol_backend(peer: SyncPeer, signers: dict[Principal, Signer], seen: set[str]) -> Any:
    def run(step: Step) -> Outcome:
        proposal = build_proposal(signers[step.who], channel="ciphercare", chaincode="ciphercare",
                                  function=f"{step.contract}:{step.function}", args=step.args,
                                  ts_ms=step.ts_ms, nonce=step.nonce)
        sim = peer.run(peer.peer.simulate(proposal))
        seen.update(sim.requests)
        assert sim.error is None, f"chaincode answered ERROR: {sim.error}"
        if sim.event is not None:
            assert (sim.event.chaincode_id, sim.event.tx_id) == ("ciphercare", sim.tx_id)
        event = (sim.event.event_name, bytes(sim.event.payload)) if sim.event is not None else None
        if sim.ok and step.submit:
            peer.peer.state.commit(sim.tx_id, step.ts_ms, sim.writes)
        return Outcome(sim.tx_id, sim.status, sim.payload, sim.message, sim.writes, event)

    return run


# --- the decision table ---------------------------------------------------------------------------------


def test_decision_table_over_the_chaincode_protocol_equals_the_embedded_runtime(
    server: int, signers: dict[Principal, Signer]
) -> None:
    embedded_state = LedgerState()
    embedded = play(embedded_backend(signers, embedded_state))

    peer = new_peer(server, query_page_size=2)  # small pages: the shim must page with QUERY_STATE_NEXT
    seen: set[str] = set()
    try:
        wire = play(protocol_backend(peer, signers, seen))
    finally:
        peer.close()

    assert len(wire) == len(embedded) > 600
    for (step, over_wire), (_, in_process) in zip(wire, embedded, strict=True):
        assert over_wire == in_process, f"step {step.index}: {step.who.subject} {step.contract}:{step.function}"
    assert peer.peer.state.values == embedded_state.values
    assert peer.peer.state.height == embedded_state.height

    # The table is not trivial: every decision reason, refusals of every kind, events, paging and history.
    reasons = set()
    for step, out in embedded:
        if out.ok and step.function == "Check":
            reasons.add(json.loads(out.payload)["reason_code"])
    assert reasons == {"consent-permit", "consent-deny", "no-consent", "consent-expired", "consent-not-yet-valid",
                       "consent-revoked"}
    codes = {out.message.split(":", 1)[0] for _, out in embedded if not out.ok}
    assert {"INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION", "ALREADY_EXISTS"} <= codes
    events = {out.event[0] for _, out in embedded if out.event is not None}
    assert events == {"ConsentGranted", "ConsentRevoked", "ConsentConfirmed", "ConsentPolicySet", "AccessRecorded",
                      "ModelDeployed"}
    assert {"GET_STATE", "PUT_STATE", "GET_STATE_BY_RANGE", "QUERY_STATE_NEXT", "QUERY_STATE_CLOSE",
            "GET_HISTORY_FOR_KEY", "COMPLETED"} <= seen


# --- protocol behaviour ------------------------------------------------------------------------------------


def _check(signer: Signer, pid: str = "t-1", ts_ms: int = 1_750_000_000_000) -> Any:
    return build_proposal(signer, channel="ciphercare", chaincode="ciphercare", function="consent:Check",
                          args=[pid, "hospital-a", "TREAT", "Observation", ""], ts_ms=ts_ms)


def _grant(signer: Signer, pid: str = "pat-0001") -> Any:
    return build_proposal(signer, channel="ciphercare", chaincode="ciphercare", function="consent:Grant",
                          args=[as_json(grant_input(pid))], ts_ms=1_750_000_000_000)


def test_register_names_the_package_id_and_a_wrong_one_is_refused(server: int) -> None:
    peer = new_peer(server)
    try:
        assert peer.peer.registered_as == CCID
    finally:
        peer.close()
    with pytest.raises(ProposalRejected, match="registered as"):
        new_peer(server, expected_ccid="ciphercare_2.0:" + "cd" * 32)


def test_peer_error_answers_fail_the_transaction_closed(server: int, signers: dict[Principal, Signer]) -> None:
    """A peer that cannot serve a state request answers ERROR: the contract fails and nothing is written."""
    grant, check = _grant(signers[CLINICIAN_A]), _check(signers[OFFICER])
    for refused, proposal in ((CM.GET_STATE, grant), (CM.PUT_STATE, grant), (CM.GET_STATE_BY_RANGE, check)):
        peer = new_peer(server, refuse={refused})
        try:
            sim = peer.run(peer.peer.simulate(proposal))
            assert sim.error is None and sim.status == 500, sim
            assert sim.message == "injected fault for " + CM.Type.Name(refused)
            assert (sim.writes, sim.event, sim.payload) == ((), None, b"")
            assert CM.Type.Name(refused) in sim.requests
        finally:
            peer.close()
    peer = new_peer(server)  # the same proposals succeed when the peer answers
    try:
        assert peer.run(peer.peer.simulate(grant)).ok and peer.run(peer.peer.simulate(check)).ok
    finally:
        peer.close()


def test_undecodable_transactions_are_answered_with_error_not_silence(
    server: int, signers: dict[Principal, Signer]
) -> None:
    peer = new_peer(server, timeout_s=15)
    try:
        good = _check(signers[OFFICER])
        cases = {
            "garbage input": CM(type=CM.TRANSACTION, payload=b"\xff\x00garbage", txid="t1", channel_id="ciphercare",
                                proposal=good.signed),
            "garbage proposal": CM(type=CM.TRANSACTION, payload=good.input.SerializeToString(), txid="t2",
                                   channel_id="ciphercare",
                                   proposal={"proposal_bytes": b"\x0a\x03abc", "signature": b""}),
            "no function": CM(type=CM.TRANSACTION, payload=cc_pb.ChaincodeInput(args=[]).SerializeToString(),
                              txid="t3", channel_id="ciphercare", proposal=good.signed),
        }
        for name, message in cases.items():
            sim = peer.run(peer.peer.send_raw(message))
            assert not sim.ok, name
            assert sim.error or sim.status >= 400, (name, sim)
        # the stream is still usable afterwards
        assert peer.run(peer.peer.simulate(good)).ok
    finally:
        peer.close()


def test_concurrent_transactions_on_one_stream(server: int, signers: dict[Principal, Signer]) -> None:
    peer = new_peer(server)
    try:
        # The patient's own grant: in force at once (a staff PERMIT is proposed until confirmed, docs/THREATS.md).
        granted = peer.run(peer.peer.simulate(_grant(signers[PATIENT_1], "pat-0001")))
        assert granted.ok
        peer.peer.state.commit(granted.tx_id, 1_750_000_000_000, granted.writes)

        async def many() -> list[Any]:
            proposals = [_check(signers[OFFICER], pid, 1_750_000_000_000 + i) for i, pid in
                         enumerate(["pat-0001", "pat-0008"] * 8)]
            return list(await asyncio.gather(*(peer.peer.simulate(p) for p in proposals)))

        sims = peer.run(many())
        reasons = [json.loads(s.payload)["reason_code"] for s in sims]
        assert reasons == ["consent-permit", "no-consent"] * 8
    finally:
        peer.close()


def test_proposals_a_peer_would_refuse_never_reach_the_chaincode(signers: dict[Principal, Signer]) -> None:
    """The test peer checks what an endorser checks; a tampered proposal is refused before simulation."""
    good = _check(signers[OFFICER])
    assert check_proposal(good.signed, channel="ciphercare", chaincode="ciphercare") == good.tx_id
    with pytest.raises(ProposalRejected, match="channel"):
        check_proposal(good.signed, channel="other", chaincode="ciphercare")
    with pytest.raises(ProposalRejected, match="chaincode"):
        check_proposal(good.signed, channel="ciphercare", chaincode="other")
    flipped = bytearray(good.signed.proposal_bytes)
    flipped[-1] ^= 0x01
    tampered = proposal_pb2.SignedProposal(proposal_bytes=bytes(flipped), signature=good.signed.signature)
    with pytest.raises(ProposalRejected, match="signature does not verify"):
        check_proposal(tampered, channel="ciphercare", chaincode="ciphercare")


# --- an in-process server for stub behaviour no ciphercare contract exercises ------------------------------------


class Probe(Contract):
    Name = "probe"

    async def Run(self, ctx: TransactionContext) -> str:
        stub = ctx.get_stub()
        await stub.delete_state("a")
        await stub.put_state("b", b"")
        keys = [kv.key async for kv in await stub.get_state_by_range("", "")]
        try:
            await stub.get_state_by_range("\x00x\x00", "")
            composite = "accepted"
        except Exception as exc:
            composite = str(exc)
        return json.dumps({"keys": keys, "composite": composite,
                           "transient": {k: v.decode() for k, v in stub.get_transient().items()}})


def test_stub_corrections_delete_empty_start_key_and_transient(signers: dict[Principal, Signer]) -> None:
    """DEL_STATE, put of an empty value (a delete), an empty range start ("\\x01"), composite keys refused in
    simple range queries, and the proposal's transient map -- through the same server code, in process."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            try:
                server, port = build_server(ChaincodeServerConfig(CCID, "127.0.0.1:0"),
                                            ContractChaincode.new_chaincode(Probe()))
                await server.start()
                stop = asyncio.Event()
                holder["port"], holder["stop"], holder["loop"] = port, stop, asyncio.get_running_loop()
            except BaseException as exc:
                holder["error"] = exc
                raise
            finally:
                ready.set()
            await stop.wait()
            await server.stop(0)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30) and "error" not in holder, holder.get("error")
    state = LedgerState()
    state.commit("seed", 0, [("a", b"1"), ("b", b"2"), ("c", b"3"), ("\x00x\x00k\x00", b"4")])
    peer = new_peer(holder["port"], state=state)
    try:
        proposal = build_proposal(signers[OFFICER], channel="ciphercare", chaincode="ciphercare",
                                  function="probe:Run", args=[], ts_ms=1_750_000_000_000,
                                  transient={"oidc": b"token-bytes"})
        sim = peer.run(peer.peer.simulate(proposal))
    finally:
        peer.close()
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
    assert sim.ok, sim
    out = json.loads(sim.payload)
    assert out["keys"] == ["a", "b", "c"]  # from "\x01": no composite keys; committed state (no read-your-writes)
    assert "null character" in out["composite"]
    assert out["transient"] == {"oidc": "token-bytes"}
    assert sim.writes == (("a", None), ("b", None))
    assert {"DEL_STATE", "PUT_STATE"} <= set(sim.requests)


# --- TLS and configuration -----------------------------------------------------------------------------------


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("cc-tls")
    ca_key, other_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("ccaas-tls-ca", ca_key, None, ca=True)
    other_ca = _cert("some-other-ca", other_ca_key, None, ca=True)
    server_key, peer_key, rogue_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    files = {
        "server.key": _pem(server_key),
        "server.crt": _pem(_cert("chaincode.hospital-a", server_key, (ca, ca_key), server=True)),
        "peers-ca.crt": _pem(ca),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return {
        "dir": d,
        "ca": _pem(ca),
        "peer": (_pem(peer_key), _pem(_cert("peer0.hospital-a", peer_key, (ca, ca_key)))),
        "rogue": (_pem(rogue_key), _pem(_cert("peer0.intruder", rogue_key, (other_ca, other_ca_key)))),
    }


def test_mutual_tls(tls_material: dict[str, Any], signers: dict[Principal, Signer]) -> None:
    d: Path = tls_material["dir"]
    proc, port = start_server({"CHAINCODE_TLS_KEY": str(d / "server.key"), "CHAINCODE_TLS_CERT": str(d / "server.crt"),
                               "CHAINCODE_CLIENT_CA_CERT": str(d / "peers-ca.crt")})
    try:
        key, cert = tls_material["peer"]
        good = grpc.ssl_channel_credentials(tls_material["ca"], key, cert)
        peer = new_peer(port, credentials=good)
        try:
            sim = peer.run(peer.peer.simulate(_check(signers[OFFICER])))
            assert sim.ok and json.loads(sim.payload)["reason_code"] == "no-consent"
        finally:
            peer.close()
        rogue_key, rogue_cert = tls_material["rogue"]
        for refused in (grpc.ssl_channel_credentials(tls_material["ca"]),  # no client certificate
                        grpc.ssl_channel_credentials(tls_material["ca"], rogue_key, rogue_cert)):  # wrong CA
            with pytest.raises((grpc.aio.AioRpcError, asyncio.TimeoutError, TimeoutError)):
                new_peer(port, credentials=refused, timeout_s=5)
        with pytest.raises((grpc.aio.AioRpcError, asyncio.TimeoutError, TimeoutError)):
            new_peer(port, timeout_s=5)  # plaintext
    finally:
        stop_server(proc)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CHAINCODE_ID": ""}, "CHAINCODE_ID is not set"),
        ({"CHAINCODE_SERVER_ADDRESS": "nowhere"}, "CHAINCODE_SERVER_ADDRESS must be host:port"),
        ({}, "TLS is required: set CHAINCODE_TLS_KEY and CHAINCODE_TLS_CERT"),
        ({"CHAINCODE_TLS_DISABLED": "maybe"}, "CHAINCODE_TLS_DISABLED must be true or false"),
        ({"CHAINCODE_TLS_DISABLED": "true", "CHAINCODE_TLS_KEY": "/x"}, "CHAINCODE_TLS_KEY is set but"),
        ({"CHAINCODE_TLS_KEY": "/nonexistent/key.pem", "CHAINCODE_TLS_CERT": "/nonexistent/c.pem"},
         "CHAINCODE_TLS_KEY: cannot read /nonexistent/key.pem"),
        ({"CHAINCODE_TLS_KEY": __file__, "CHAINCODE_TLS_CERT": __file__}, "is not a PEM file"),
    ],
)
def test_incomplete_configuration_exits_2_with_one_line(env: dict[str, str], fragment: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAINCODE_")}
    base.update({"CHAINCODE_ID": CCID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0", **env})
    done = subprocess.run(CLI, env=base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ciphercare: ") and fragment in lines[0], done.stderr
    assert done.stdout == ""


def test_contracts_are_served_only_through_the_one_definition_named_after_no_contract(
    server: int, signers: dict[Principal, Signer]
) -> None:
    """One definition (``ciphercare``) serves every contract: they read each other's state, and a definition
    named after a contract would be a state namespace of its own (tests/fabric/test_state_namespaces.py)."""

    def call(peer: SyncPeer, chaincode: str, function: str, *args: str) -> Any:
        proposal = build_proposal(signers[OFFICER], channel="ciphercare", chaincode=chaincode, function=function,
                                  args=list(args), ts_ms=1_750_000_000_000)
        return peer.run(peer.peer.simulate(proposal))

    calls = {
        "consent": ("consent:ListForPatient", "pat-0001"),
        "accesslog": ("accesslog:ListForPatient", "pat-0001"),
        "model": ("model:Get", "ab" * 32),
        "accessbatch": ("accessbatch:Get", "ab-" + "0" * 32),
        "breakglass": ("breakglass:ListForPatient", "pat-0001"),
    }
    for chaincode in ("ciphercare", *calls):
        peer = new_peer(server, chaincode=chaincode)
        try:
            for contract, (function, arg) in calls.items():
                sim = call(peer, chaincode, function, arg)
                if chaincode == "ciphercare":
                    assert "is not served through" not in sim.message, (chaincode, function, sim)
                    assert sim.ok or sim.message.startswith("NOT_FOUND"), (chaincode, function, sim)
                else:
                    assert sim.status == 500 and sim.writes == () and sim.requests == ["COMPLETED"]
                    assert sim.message == (
                        f"PERMISSION_DENIED: contract {contract!r} is not served through the chaincode definition "
                        f"{chaincode!r}: the contracts read each other's state and are served only through one "
                        "definition named after no contract (ciphercare)")
            metadata = call(peer, chaincode, "org.hyperledger.fabric:get_metadata")
            assert metadata.ok and b"consent" in metadata.payload
        finally:
            peer.close()


def test_init_runs_the_named_function_or_the_default_initiator(server: int, signers: dict[Principal, Signer]) -> None:
    """INIT (a definition with --init-required) goes through the same dispatcher as TRANSACTION."""
    peer = new_peer(server)
    try:
        named = peer.run(peer.peer.simulate(_check(signers[OFFICER]), init=True))
        assert named.ok and json.loads(named.payload)["reason_code"] == "no-consent"
        empty = peer.run(peer.peer.send_raw(CM(type=CM.INIT, payload=cc_pb.ChaincodeInput(args=[]).SerializeToString(),
                                               txid="init-1", channel_id="ciphercare",
                                               proposal=_check(signers[OFFICER]).signed)))
        assert empty.ok and empty.payload == b"Default initiator successful." and empty.writes == ()
    finally:
        peer.close()
