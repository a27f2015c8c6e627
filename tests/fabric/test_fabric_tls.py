"""TLS on the gateway node: server-authenticated and mutual TLS; plaintext and unknown clients are refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testkit.fabric.gateway import enrol, in_process_node
from testkit.process import CLI

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.gateway_server import NodeTLS
from ciphercare.ledger.fabric import EndorseError
from ciphercare.ledger.fabric.gateway import secure_channel_credentials

CLIN = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
ARGS = ["pat-0001", "hospital-a", "TREAT", "Observation", "2025-06-01T00:00:00Z"]


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


async def _evaluate(target: str, tmp: Path, credentials: grpc.ChannelCredentials | None) -> bytes:
    e = enrol(tmp / "msp", CLIN)
    from ciphercare.ledger.fabric import X509Identity, connect, new_private_key_signer

    key = serialization.load_pem_private_key(e.key_pem, None)
    gw = connect(
        X509Identity(e.msp_id, e.cert_pem),
        new_private_key_signer(key),  # type: ignore[arg-type]
        target=target,
        credentials=credentials,
    )
    try:
        return await gw.network("ciphercare").contract("ciphercare", "consent").evaluate("Check", ARGS, timeout=5)
    finally:
        await gw.close()


def test_server_tls_serves_tls_clients_and_refuses_plaintext(tmp_path: Path) -> None:
    ca, ca_key = _ca("tls-ca")
    cert, key = _leaf(ca, ca_key, "ledger-node")
    with in_process_node(tmp_path, tls=NodeTLS(cert, key)) as node:
        root = ca.public_bytes(serialization.Encoding.PEM)
        assert b"deny" in asyncio.run(_evaluate(node.target, tmp_path, secure_channel_credentials(root)))
        with pytest.raises(EndorseError) as err:
            asyncio.run(_evaluate(node.target, tmp_path, None))
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        other, _ = _ca("other-ca")
        with pytest.raises(EndorseError) as err:  # a node certificate from a CA the client does not trust
            asyncio.run(
                _evaluate(
                    node.target, tmp_path, secure_channel_credentials(other.public_bytes(serialization.Encoding.PEM))
                )
            )
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(tmp_path: Path) -> None:
    ca, ca_key = _ca("tls-ca")
    client_ca, client_ca_key = _ca("client-ca")
    cert, key = _leaf(ca, ca_key, "ledger-node")
    root = ca.public_bytes(serialization.Encoding.PEM)
    with in_process_node(tmp_path, tls=NodeTLS(cert, key, client_ca.public_bytes(serialization.Encoding.PEM))) as node:
        ccert, ckey = _leaf(client_ca, client_ca_key, "hospital-a-node")
        ok = asyncio.run(_evaluate(node.target, tmp_path, secure_channel_credentials(root, ccert, ckey)))
        assert b"deny" in ok
        with pytest.raises(EndorseError):
            asyncio.run(_evaluate(node.target, tmp_path, secure_channel_credentials(root)))
        stranger, stranger_key = _ca("stranger")
        scert, skey = _leaf(stranger, stranger_key, "stranger")
        with pytest.raises(EndorseError):
            asyncio.run(_evaluate(node.target, tmp_path, secure_channel_credentials(root, scert, skey)))


def test_ledger_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    ca, ca_key = _ca("tls-ca")
    cert, _ = _leaf(ca, ca_key, "ledger-node")
    (tmp_path / "cert.pem").write_bytes(cert)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
    env.update(CIPHERCARE_DATA_DIR=str(tmp_path / "d"), CIPHERCARE_LEDGER_NODE_TLS_CERT_PATH=str(tmp_path / "cert.pem"))
    proc = subprocess.run([*CLI, "ledger", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ciphercare: TLS needs both"), proc.stderr[-500:]
    assert not (tmp_path / "d" / "ledger.db").exists()


def test_ledger_serve_refuses_plaintext_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
    env.update(CIPHERCARE_DATA_DIR=str(tmp_path / "d"), CIPHERCARE_LEDGER_NODE_HOST="0.0.0.0")
    proc = subprocess.run([*CLI, "ledger", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("ciphercare: listening on 0.0.0.0 needs TLS")
    assert not (tmp_path / "d" / "ledger.db").exists()


def test_services_refuse_a_plaintext_gateway_endpoint_beyond_loopback(tmp_path: Path) -> None:
    from ciphercare.ledger.api import LedgerError
    from ciphercare.ledger.fabric.gateway import is_loopback
    from ciphercare.ledger.fabric.ledger import open_fabric_ledger
    from ciphercare.services.platform.settings import load_settings

    assert is_loopback("127.0.0.1:7051") and is_loopback("localhost:7051") and is_loopback("[::1]:7051")
    assert not is_loopback("peer0.hospital-a.example:7051") and not is_loopback("10.0.0.5:7051")
    settings = load_settings(data_dir=tmp_path, ledger_backend="fabric", ledger_endpoint="10.0.0.5:7051")
    with pytest.raises(LedgerError, match="CIPHERCARE_LEDGER_TLS_CA_PATH"):
        open_fabric_ledger(settings, CLIN)
