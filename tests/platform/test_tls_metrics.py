"""TLS on the gRPC listener with real certificates made here, mutual TLS, reload without restart, /metrics."""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testkit.server import ServerThread, make_settings

from ciphercare.sdk.channels import ChannelConfigError, ChannelSecurity, open_channel
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import consent_pb2, consent_pb2_grpc

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    cert: Path
    key: Path


class CA:
    """A certificate authority made for one test (ECDSA P-256)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - datetime.timedelta(minutes=5))
                     .not_valid_after(NOW + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool, file_stem: str | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - datetime.timedelta(minutes=5))
                   .not_valid_after(NOW + datetime.timedelta(days=1)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = file_stem or name
        cert_path, key_path = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Issued(cert_path, key_path)


def _health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = CA(tmp_path, "ciphercare-test-ca")
    return {"ca": ca, "server": ca.issue("ciphercare-api", server=True, file_stem="server"),
            "web": ca.issue("ciphercare-web", server=False), "other": ca.issue("intruder", server=False),
            "rogue_ca": CA(tmp_path, "rogue-ca")}


def test_tls_refuses_plaintext_and_wrong_ca_and_serves_metrics(tmp_path: Path, pki: dict) -> None:  # type: ignore[type-arg]
    ca, server_cert, rogue = pki["ca"], pki["server"], pki["rogue_ca"]
    settings = make_settings(tmp_path / "data", tls_cert_path=server_cert.cert, tls_key_path=server_cert.key,
                             web_enabled=False)
    server = ServerThread(settings).start()
    try:
        target = server.target
        with grpc.insecure_channel(target) as plain:  # no plaintext port exists
            with pytest.raises(grpc.RpcError) as refused:
                _health(plain)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with open_channel(target, ChannelSecurity(tls=True, ca_path=rogue.path)) as wrong:
            with pytest.raises(grpc.RpcError) as untrusted:
                _health(wrong)
            assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
        with open_channel(target, ChannelSecurity(tls=True, ca_path=ca.path)) as good:
            assert _health(good) == health_pb2.HealthCheckResponse.SERVING

        issuer = DevIssuer.from_settings(settings)
        token = issuer.issue(subject="svc-hospital-a", roles=["hospital"], org="hospital-a")
        client = CiphercareClient.connect(target, token, security=ChannelSecurity(tls=True, ca_path=ca.path))
        try:
            answer = client.consent.Check(
                consent_pb2.CheckRequest(pid="pt-tls-1", recipient_organization="hospital-a", purpose="TREAT",
                                         data_class="Observation"),
                metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            assert answer.decision == consent_pb2.CONSENT_DECISION_DENY  # default deny, over TLS
        finally:
            client.close()
        with open_channel(target, ChannelSecurity(tls=True, ca_path=ca.path)) as anonymous:
            with pytest.raises(grpc.RpcError) as unauth:
                consent_pb2_grpc.ConsentServiceStub(anonymous).Check(
                    consent_pb2.CheckRequest(pid="pt-tls-2", recipient_organization="hospital-a", purpose="TREAT",
                                             data_class="Observation"), timeout=10)
            assert unauth.value.code() == grpc.StatusCode.UNAUTHENTICATED

        assert server.app is not None and server.app.metrics_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=10).read().decode()
        assert 'ciphercare_rpc_total{code="OK",method="/ciphercare.v1.ConsentService/Check"}' in text
        assert 'ciphercare_rpc_total{code="UNAUTHENTICATED",method="/ciphercare.v1.ConsentService/Check"}' in text
        assert 'ciphercare_auth_refusals_total{code="UNAUTHENTICATED"}' in text
        assert "ciphercare_ledger_tree_size" in text and "ciphercare_projection_lag_entries" in text
        assert "ciphercare_witness_lag_entries" not in text  # no witnesses configured: no lag to show
        assert "pt-tls-1" not in text and "pt-tls-2" not in text and token not in text  # no pid, no token
    finally:
        server.stop()


def test_mutual_tls_checks_the_client_identity(tmp_path: Path, pki: dict) -> None:  # type: ignore[type-arg]
    ca, server_cert, web, other, rogue = pki["ca"], pki["server"], pki["web"], pki["other"], pki["rogue_ca"]
    rogue_client = rogue.issue("ciphercare-web", server=False, file_stem="rogue-web")
    settings = make_settings(tmp_path / "data", tls_cert_path=server_cert.cert, tls_key_path=server_cert.key,
                             tls_client_ca_path=ca.path, tls_client_allowed_names=("ciphercare-web",),
                             web_enabled=False)
    server = ServerThread(settings).start()
    try:
        target = server.target
        with open_channel(target, ChannelSecurity(tls=True, ca_path=ca.path)) as no_cert:
            with pytest.raises(grpc.RpcError) as refused:
                _health(no_cert)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # handshake refused: no client cert
        rogue_security = ChannelSecurity(tls=True, ca_path=ca.path, cert_path=rogue_client.cert,
                                         key_path=rogue_client.key)
        with open_channel(target, rogue_security) as forged:
            with pytest.raises(grpc.RpcError) as untrusted:
                _health(forged)
            assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE  # same name, wrong CA
        with open_channel(target, ChannelSecurity(tls=True, ca_path=ca.path, cert_path=other.cert,
                                                  key_path=other.key)) as intruder:
            with pytest.raises(grpc.RpcError) as denied:
                _health(intruder)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED  # our CA, a name not allowed
        with open_channel(target, ChannelSecurity(tls=True, ca_path=ca.path, cert_path=web.cert,
                                                  key_path=web.key)) as allowed:
            assert _health(allowed) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, pki: dict) -> None:  # type: ignore[type-arg]
    ca, server_cert = pki["ca"], pki["server"]
    settings = make_settings(tmp_path / "data", tls_cert_path=server_cert.cert, tls_key_path=server_cert.key,
                             web_enabled=False)
    server = ServerThread(settings).start()
    try:
        new_ca = CA(tmp_path, "renewed-ca")
        with open_channel(server.target, ChannelSecurity(tls=True, ca_path=new_ca.path)) as early:
            with pytest.raises(grpc.RpcError):
                _health(early)  # the old certificate is not from the new CA
        renewed = new_ca.issue("ciphercare-api", server=True, file_stem="renewed")
        time.sleep(0.01)
        os.replace(renewed.key, server_cert.key)
        os.replace(renewed.cert, server_cert.cert)
        with open_channel(server.target, ChannelSecurity(tls=True, ca_path=new_ca.path)) as late:
            assert _health(late) == health_pb2.HealthCheckResponse.SERVING
        with open_channel(server.target, ChannelSecurity(tls=True, ca_path=ca.path)) as old:
            with pytest.raises(grpc.RpcError):
                _health(old)  # the old chain is gone for new connections
    finally:
        server.stop()


def test_clients_refuse_plaintext_beyond_loopback() -> None:
    with pytest.raises(ChannelConfigError, match="bearer tokens would travel in clear"):
        open_channel("ciphercare.hospital-a.example:443", ChannelSecurity(tls=False))
    assert open_channel("localhost:1", ChannelSecurity()) is not None  # loopback may be plaintext
