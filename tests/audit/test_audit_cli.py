"""``ciphercare audit …`` as an officer runs it: a subprocess with a token, against a real server on loopback
that serves mutual TLS with certificates made here, and no server files (a fresh working directory, no
data dir). Errors are one line on stderr with the documented exit code.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import ipaddress
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testkit.process import CLI
from testkit.server import Env, ServerThread, make_settings

from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.sdk.channels import ChannelSecurity
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.cli.audit import Progress
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, breakglass_pb2, breakglass_pb2_grpc

NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(directory: Path) -> None:
    """ca.crt; server.crt/.key (localhost, 127.0.0.1); officer.crt/.key (client); rogue.crt (another CA)."""
    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
                    ca: bool = False, server: bool = False) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - datetime.timedelta(minutes=5))
                   .not_valid_after(NOW + datetime.timedelta(days=1)))
        if ca:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _write(directory / "ca", certificate("audit-test-ca", ca_key, "audit-test-ca", ca_key, ca=True))
    _write(directory / "rogue", certificate("rogue-ca", rogue_key, "rogue-ca", rogue_key, ca=True))
    for name, server in (("server", True), ("officer", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(directory / name, certificate(f"ciphercare-{name}", key, "audit-test-ca", ca_key, server=server), key)


@dataclass
class Officer:
    env: Env
    pki: Path
    workdir: Path
    token: str
    vkey: str

    def run(self, *args: str, token: str | None = None, tls: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``ciphercare audit ARGS`` in a directory with no server files, the token in CIPHERCARE_TOKEN."""
        environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir),
                       "CIPHERCARE_TOKEN": self.token if token is None else token, **(extra_env or {})}
        connection = ["--target", self.env.server.target]
        if tls:
            connection += ["--ca", str(self.pki / "ca.crt"), "--cert", str(self.pki / "officer.crt"),
                           "--key", str(self.pki / "officer.key")]
        return subprocess.run([*CLI, "audit", *args, *connection], cwd=self.workdir, env=environment,
                              capture_output=True, text=True, timeout=120)

    def client(self, token: str) -> CiphercareClient:
        security = ChannelSecurity(tls=True, ca_path=self.pki / "ca.crt", cert_path=self.pki / "officer.crt",
                                   key_path=self.pki / "officer.key")
        return CiphercareClient.connect(self.env.server.target, token, security=security)


@pytest.fixture(scope="module")
def officer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Officer]:
    pki = tmp_path_factory.mktemp("pki")
    make_pki(pki)
    settings = make_settings(tmp_path_factory.mktemp("server"), tls_cert_path=pki / "server.crt",
                             tls_key_path=pki / "server.key", tls_client_ca_path=pki / "ca.crt", web_enabled=False)
    server = ServerThread(settings).start()
    try:
        env = Env(server=server, issuer=DevIssuer.from_settings(settings))
        vkey = CheckpointSigner.load(settings.resolved_ledger_key_path, settings.ledger_origin).vkey
        token = env.token("compliance-officer", org="regulator", subject="officer-cli")
        yield Officer(env, pki, tmp_path_factory.mktemp("officer-home"), token, vkey)
    finally:
        server.stop()


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ciphercare audit "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def record_events(officer: Officer, pid: str, n: int) -> list[access_log_pb2.AccessEvent]:
    hospital = officer.client(officer.env.token("hospital", org="hospital-a", subject="svc-hospital-a"))
    events = []
    for i in range(n):
        outcome = access_log_pb2.ACCESS_OUTCOME_DENIED if i == 1 else access_log_pb2.ACCESS_OUTCOME_SUCCESS
        events.append(hospital.record(access_log_pb2.RecordRequest(
            type="110110", subtype="read", action="R", outcome=outcome, purpose_of_use="TREAT", pid=pid,
            data_classes=["Observation"], source_observer="hospital-a/ehr",
            outcome_description="" if i != 1 else "no-consent")).event)
    return events


def test_search_is_newest_first_with_the_count(officer: Officer) -> None:
    pid = f"pcli-{uuid.uuid4().hex[:8]}"
    events = record_events(officer, pid, 3)
    result = officer.run("search", "--pid", pid)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:]] == [e.id for e in reversed(events)]
    assert "denied" in lines[2] and "hospital-a" in lines[1]
    assert result.stderr.strip() == "3 of 3 matching events shown (newest first)"

    limited = officer.run("search", "--pid", pid, "--limit", "1", "--json")
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == [events[-1].id]
    denied = officer.run("search", "--pid", pid, "--outcome", "denied", "--oldest-first", "--json")
    assert [json.loads(line)["id"] for line in denied.stdout.splitlines()] == [events[1].id]


def test_export_streams_every_event_to_a_file_or_stdout(officer: Officer) -> None:
    pid = f"pcli-{uuid.uuid4().hex[:8]}"
    events = record_events(officer, pid, 4)
    out = officer.workdir / "export.jsonl"
    result = officer.run("export", "--pid", pid, "--format", "jsonl", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert result.stderr.strip() == f"exported 4 events as jsonl to {out}"
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [e.id for e in reversed(events)]
    assert not list(officer.workdir.glob("*.partial"))

    stdout = officer.run("export", "--pid", pid, "--format", "csv")
    rows = list(csv.reader(io.StringIO(stdout.stdout)))
    assert rows[0][1] == "event_id" and [r[1] for r in rows[1:]] == [e.id for e in reversed(events)]
    fhir = officer.run("export", "--pid", pid, "--format", "fhir")
    bundle = json.loads(fhir.stdout)
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == [e.id for e in reversed(events)]


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    drawn = io.StringIO()
    bar = Progress(drawn, enabled=True)
    bar.update(500, 2000)
    bar.update(2000, 2000)
    bar.done()
    assert "500 of 2,000 events (25%)" in drawn.getvalue() and drawn.getvalue().endswith("(100%)\n")
    silent = io.StringIO()
    Progress(silent, enabled=False).update(1, 2)
    assert silent.getvalue() == ""


def test_verify_remembers_the_checkpoint_and_proves_inclusion(officer: Officer) -> None:
    pid = f"pcli-{uuid.uuid4().hex[:8]}"
    events = record_events(officer, pid, 2)
    state = officer.workdir / "checkpoints"
    first = officer.run("verify", "--vkey", officer.vkey, "--state", str(state), "--event", events[0].id)
    assert first.returncode == 0, first.stderr
    assert "signed by the pinned key" in first.stdout and f"event {events[0].id} included" in first.stdout
    assert list(state.glob("*.json")) and "consistent" not in first.stdout

    later = record_events(officer, pid, 1)
    ids = officer.workdir / "ids.txt"
    ids.write_text(f"{events[1].id}\n{later[0].id}\n")
    second = officer.run("verify", "--vkey", officer.vkey, "--state", str(state), "--events-file", str(ids))
    assert second.returncode == 0, second.stderr
    assert "consistent with the remembered checkpoint: size" in second.stdout
    assert "2 event(s) included" in second.stdout

    # A remembered checkpoint of the same size with another root: the served log is a fork of what this
    # client verified. Caught, with both signed notes written as evidence.
    remembered = next(state.glob("*.json"))
    memory = json.loads(remembered.read_text())
    memory["root_hash"] = base64.b64encode(b"\x00" * 32).decode()
    remembered.write_text(json.dumps(memory))
    evidence = officer.workdir / "evidence.json"
    one_line_error(officer.run("verify", "--vkey", officer.vkey, "--state", str(state), "--evidence", str(evidence)),
                   4, "NOT verified", "fork")
    assert set(json.loads(evidence.read_text())) == {"problem", "remembered_checkpoint", "served_checkpoint"}

    other_key = CheckpointSigner(officer.workdir / "other.key", "ciphercare.local/ledger").vkey
    one_line_error(officer.run("verify", "--vkey", other_key, "--no-remember"), 4, "NOT verified",
                   "not signed by the pinned key")
    one_line_error(officer.run("verify", "--vkey", "not-a-key", "--no-remember"), 4, "NOT verified")
    # A well-formed id the log does not hold: not found (failed). An ill-formed one: bad usage, refused before
    # anything is looked up.
    unknown = "ae-" + uuid.uuid4().hex
    one_line_error(officer.run("verify", "--vkey", officer.vkey, "--no-remember", "--event", unknown), 1,
                   "NOT_FOUND", unknown)
    one_line_error(officer.run("verify", "--vkey", officer.vkey, "--no-remember", "--event", "no-such-event"), 2,
                   "INVALID_ARGUMENT", "no-such-event")


def test_flags_and_refusals(officer: Officer) -> None:
    result = officer.run("flags")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 flag(s) from ")
    clinician = officer.env.token("clinician", org="hospital-a", subject="clin-cli")
    one_line_error(officer.run("flags", token=clinician), 3, "PERMISSION_DENIED")
    one_line_error(officer.run("search", token="not-a-jwt"), 3, "UNAUTHENTICATED")
    one_line_error(officer.run("search", token=""), 2, "no token")
    one_line_error(officer.run("search", "--from", "yesterday"), 2, "--from must be an ISO 8601")
    one_line_error(officer.run("verify", "--vkey", officer.vkey, "--policy", str(officer.workdir / "no-policy")), 2,
                   "cannot read policy file")
    one_line_error(officer.run("search", "--from", "2026-02-01", "--to", "2026-01-01"), 2, "INVALID_ARGUMENT")


def test_tls_options_are_wired(officer: Officer) -> None:
    # Without a client certificate the mutual-TLS server refuses the handshake: unreachable, one line.
    no_cert = subprocess.run([*CLI, "audit", "search", "--target", officer.env.server.target, "--ca",
                              str(officer.pki / "ca.crt"), "--timeout", "5"], cwd=officer.workdir,
                             env={"PATH": os.environ.get("PATH", ""), "CIPHERCARE_TOKEN": officer.token},
                             capture_output=True, text=True, timeout=120)
    one_line_error(no_cert, 5, "UNAVAILABLE")
    rogue = officer.run("search", "--ca", str(officer.pki / "rogue.crt"), "--cert", str(officer.pki / "officer.crt"),
                        "--key", str(officer.pki / "officer.key"), "--timeout", "5", tls=False)
    one_line_error(rogue, 5, "UNAVAILABLE")  # a CA that did not sign the server's certificate
    half = subprocess.run([*CLI, "audit", "search", "--target", officer.env.server.target, "--ca",
                           str(officer.pki / "ca.crt"), "--cert", str(officer.pki / "officer.crt")],
                          cwd=officer.workdir, env={"PATH": os.environ.get("PATH", ""),
                                                    "CIPHERCARE_TOKEN": officer.token},
                          capture_output=True, text=True, timeout=120)
    one_line_error(half, 2, "needs both its certificate and its key")
    plain = subprocess.run([*CLI, "audit", "search", "--target", "192.0.2.10:50051", "--timeout", "2"],
                           cwd=officer.workdir, env={"PATH": os.environ.get("PATH", ""),
                                                     "CIPHERCARE_TOKEN": officer.token},
                           capture_output=True, text=True, timeout=120)
    one_line_error(plain, 5, "search:")  # TLS by default to a remote host; nothing answers there in time


# --- Break-glass review ---------------------------------------------------------------------------------------


def declare(officer: Officer, pid: str, subject: str = "clin-bg-cli") -> breakglass_pb2.BreakGlassDeclaration:
    clinician = officer.client(officer.env.token("clinician", org="hospital-a", subject=subject))
    stub = breakglass_pb2_grpc.BreakGlassServiceStub(clinician.channel)
    response = clinician.call(stub.Declare, breakglass_pb2.DeclareBreakGlassRequest(
        pid=pid, reason_code="unconscious-patient", justification="Unconscious on arrival; checking allergies."))
    return response.declaration


def ledger_size(officer: Officer) -> int:
    return int(officer.client(officer.token).verifier()[1].checkpoint.tree_size)


def offchain_documents(officer: Officer) -> int:
    from sqlalchemy import func, select

    from ciphercare.services.store.models import Document

    with officer.env.app.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Document)) or 0)


def declaration(officer: Officer, declaration_id: str) -> breakglass_pb2.GetBreakGlassResponse:
    client = officer.client(officer.token)
    stub = breakglass_pb2_grpc.BreakGlassServiceStub(client.channel)
    return client.call(stub.Get, breakglass_pb2.GetBreakGlassRequest(declaration_id=declaration_id))


def test_breakglass_an_officer_lists_high_priority_first_and_acknowledges(officer: Officer) -> None:
    older = declare(officer, f"pt-bgcli-{uuid.uuid4().hex[:8]}")
    newer = declare(officer, f"pt-bgcli-{uuid.uuid4().hex[:8]}")

    pending = officer.run("breakglass", "list")
    assert pending.returncode == 0, pending.stderr
    rows = pending.stdout.strip().splitlines()[1:]
    ids = [row.rsplit(" ", 1)[-1] for row in rows]
    assert ids.index(newer.id) < ids.index(older.id)  # newest first among the pending
    assert all(row.startswith("HIGH") and " pending " in row for row in rows)
    assert "pending" in pending.stderr and "high priority first" in pending.stderr

    size, docs = ledger_size(officer), offchain_documents(officer)
    note = f"Checked with the ward: justified ({uuid.uuid4().hex[:6]})"
    acked = officer.run("breakglass", "ack", older.id, "--note", note, "--vkey", officer.vkey)
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.startswith(f"acknowledged {older.id}") and "receipt verified against the pinned key" in \
        acked.stdout
    assert ledger_size(officer) == size + 1 and offchain_documents(officer) == docs + 1  # the review; its note
    stored = declaration(officer, older.id)
    assert stored.declaration.review_status == "acknowledged" and list(stored.review_notes) == [note]
    assert stored.declaration.reviews[0].reviewed_by.subject == "officer-cli"

    everything = officer.run("breakglass", "list", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    listed = [json.loads(line) for line in everything.stdout.splitlines()]
    statuses = [d["review_status"] for d in listed]
    assert statuses == sorted(statuses, key=["pending", "escalated", "acknowledged"].index)  # high priority first
    assert {older.id, newer.id} <= {d["id"] for d in listed}
    shown = officer.run("breakglass", "show", older.id)
    assert shown.returncode == 0, shown.stderr
    assert "Unconscious on arrival" in shown.stdout and "acknowledged by officer-cli" in shown.stdout and \
        note in shown.stdout


def test_breakglass_review_refusals_write_nothing(officer: Officer) -> None:
    target = declare(officer, f"pt-bgcli-{uuid.uuid4().hex[:8]}")
    size, docs = ledger_size(officer), offchain_documents(officer)

    hospital = officer.env.token("hospital", org="hospital-a", subject="svc-hospital-a")
    one_line_error(officer.run("breakglass", "ack", target.id, "--note", "looks fine to us", token=hospital), 3,
                   "PERMISSION_DENIED")
    one_line_error(officer.run("breakglass", "list", token=hospital), 3, "PERMISSION_DENIED")
    clinician = officer.env.token("clinician", org="hospital-a", subject="clin-bg-cli")
    one_line_error(officer.run("breakglass", "escalate", target.id, token=clinician), 3, "PERMISSION_DENIED")
    unknown = "bg-" + uuid.uuid4().hex
    one_line_error(officer.run("breakglass", "ack", unknown), 1, "NOT_FOUND")
    one_line_error(officer.run("breakglass", "ack", "bg-nonsense"), 2, "INVALID_ARGUMENT")
    one_line_error(officer.run("breakglass", "ack", target.id, "--note", "x" * 2001), 2, "INVALID_ARGUMENT")
    one_line_error(officer.run("breakglass", "ack", target.id, "--note", "a", "--note-file", "n.txt"), 2,
                   "--note or --note-file")
    one_line_error(officer.run("breakglass", "ack", target.id, "--vkey", "not-a-key"), 2,
                   "not a signed-note verifier key")
    assert ledger_size(officer) == size and offchain_documents(officer) == docs  # nothing written, off-chain included
    assert declaration(officer, target.id).declaration.review_status == "pending"

    # The contract's transitions: pending -> escalated -> acknowledged; the same outcome twice and anything after
    # an acknowledgement are FAILED_PRECONDITION (one line, exit 1) and write nothing.
    assert officer.run("breakglass", "escalate", target.id, "--note", "refer to the board").returncode == 0
    one_line_error(officer.run("breakglass", "escalate", target.id), 1, "FAILED_PRECONDITION", "already escalated")
    # A receipt checked against a key that did not sign the log: the review is on the ledger, but the officer is
    # told it is NOT verified (exit 4).
    other_key = CheckpointSigner(officer.workdir / "bg-other.key", "ciphercare.local/ledger").vkey
    one_line_error(officer.run("breakglass", "ack", target.id, "--vkey", other_key), 4, "NOT verified",
                   "submitted")
    size, docs = ledger_size(officer), offchain_documents(officer)
    one_line_error(officer.run("breakglass", "ack", target.id, "--note", "again"), 1, "FAILED_PRECONDITION",
                   "already acknowledged")
    one_line_error(officer.run("breakglass", "escalate", target.id), 1, "FAILED_PRECONDITION",
                   "already acknowledged")
    assert ledger_size(officer) == size and offchain_documents(officer) == docs
    assert [r.outcome for r in declaration(officer, target.id).declaration.reviews] == ["escalated", "acknowledged"]


def test_breakglass_review_order_is_high_priority_then_newest() -> None:
    from ciphercare.sdk.breakglass import high_priority, review_order

    def made(name: str, status: str, seconds: int) -> breakglass_pb2.BreakGlassDeclaration:
        d = breakglass_pb2.BreakGlassDeclaration(id=name, review_status=status)
        d.declared_at.FromSeconds(seconds)
        return d

    mixed = [made("ack-new", "acknowledged", 50), made("pend-old", "pending", 10), made("esc", "escalated", 40),
             made("pend-new", "pending", 30), made("ack-old", "acknowledged", 5)]
    assert [d.id for d in review_order(mixed)] == ["pend-new", "pend-old", "esc", "ack-new", "ack-old"]
    assert [high_priority(d) for d in review_order(mixed)] == [True, True, True, False, False]
