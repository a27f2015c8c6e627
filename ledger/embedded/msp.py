"""Embedded MSP: turns a verified :class:`Principal` into a Fabric-style X.509 creator identity.

Contracts read the actor from the transaction creator (``stub.get_creator()``:
``{'mspid': ..., 'idBytes': <PEM certificate>}``), exactly as on a Fabric
peer, so they never trust an actor passed as an argument.  Each org gets an
ECDSA P-256 CA (persisted under ``data_dir`` when given, else generated per
process); each principal gets a certificate with ``CN=subject, O=org,
OU=client`` and the Fabric CA attribute extension (OID 1.2.3.4.5.6.7.8.1,
non-critical) whose value is the JSON ``{"attrs": {...}}``.

The constants and :func:`msp_id_for_org` below are mirrored chaincode-side by
the contracts (which cannot import ``ledger/``); keep both copies identical.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2

from ciphercare.consent import canonical
from ciphercare.ledger.api import Principal

#: OID of the Fabric CA attribute extension (``attrmgr.AttrOID`` in fabric-ca).
ATTR_OID = "1.2.3.4.5.6.7.8.1"
ATTR_ENROLLMENT_ID = "hf.EnrollmentID"
ATTR_ORG = "ciphercare.org"
ATTR_ROLES = "ciphercare.roles"
ATTR_CLIENT = "ciphercare.client"
ATTR_PID = "ciphercare.pid"

_CERT_VALIDITY = _dt.timedelta(days=365)
_CLOCK_SKEW = _dt.timedelta(minutes=5)


def msp_id_for_org(org: str) -> str:
    """``"hospital-a"`` -> ``"HospitalAMSP"``: CamelCase of the parts split on '-' and '_', plus "MSP"."""
    parts = [p for p in org.replace("_", "-").split("-") if p]
    if not parts:
        raise ValueError(f"org {org!r} has no name characters")
    return "".join(p[0].upper() + p[1:] for p in parts) + "MSP"


def identity_attrs(principal: Principal) -> dict[str, str]:
    """The Fabric CA attributes a principal's certificate carries."""
    attrs = {
        ATTR_ENROLLMENT_ID: principal.subject,
        ATTR_ORG: principal.org,
        ATTR_ROLES: ",".join(sorted(principal.roles)),
        ATTR_CLIENT: principal.client_id,
    }
    if principal.pid is not None:
        attrs[ATTR_PID] = principal.pid
    return attrs


@dataclass(frozen=True)
class Identity:
    """A creator identity as the shim presents it, plus its serialized and hashed forms."""

    mspid: str
    cert_pem: bytes
    cert_sha256: str  # hex SHA-256 of the DER certificate
    serialized: bytes  # msp.SerializedIdentity bytes, as in a Fabric SignatureHeader.creator

    def creator(self) -> dict[str, object]:
        """The ``stub.get_creator()`` value: ``{'mspid': ..., 'idBytes': PEM bytes}``."""
        return {"mspid": self.mspid, "idBytes": self.cert_pem}


def _validate_principal(principal: Principal) -> None:
    if not principal.subject:
        raise ValueError("principal subject must not be empty")
    if not principal.org:
        raise ValueError("principal org must not be empty")
    for role in principal.roles:
        if not role or "," in role:
            raise ValueError(f"role {role!r} must be non-empty and contain no comma")


class _OrgCA:
    """One org's certificate authority."""

    def __init__(self, org: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.org = org
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, org: str) -> _OrgCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                x509.NameAttribute(NameOID.COMMON_NAME, f"ca.{org}"),
            ]
        )
        now = _dt.datetime.now(_dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + 10 * _CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(org, key, cert)

    @classmethod
    def load_or_create(cls, org: str, directory: Path) -> _OrgCA:
        """Load the CA from ``directory`` or create and persist it (key file 0600)."""
        key_path = directory / "ca-key.pem"
        cert_path = directory / "ca-cert.pem"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC private key")
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            return cls(org, key, cert)
        ca = cls.create(org)
        directory.mkdir(parents=True, exist_ok=True)
        key_pem = ca.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(str(key_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key_pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        cert_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        return ca


class EmbeddedMSP:
    """Issues (and caches) X.509 creator certificates for verified principals."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        cache_size: int = 4096,
        *,
        create_missing: bool = True,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        if not create_missing and data_dir is None:
            raise ValueError("create_missing=False needs a data_dir holding the org CAs")
        # fabricgw: an org node enrolling its users on Fabric only has its own org's CA; it never invents one.
        self._create_missing = create_missing
        self._dir = Path(data_dir) if data_dir is not None else None
        self._cache_size = cache_size
        self._cas: dict[str, _OrgCA] = {}
        self._cache: OrderedDict[Principal, Identity] = OrderedDict()
        self._lock = threading.Lock()

    def ca_certificate(self, org: str) -> bytes:
        """PEM of the CA certificate that signs ``org``'s identities."""
        with self._lock:
            return self._ca(org).cert.public_bytes(serialization.Encoding.PEM)

    def _ca(self, org: str) -> _OrgCA:
        ca = self._cas.get(org)
        if ca is None:
            if self._dir is None:
                ca = _OrgCA.create(org)
            elif not self._create_missing:
                directory = self._dir / msp_id_for_org(org)
                if not (directory / "ca-key.pem").exists() or not (directory / "ca-cert.pem").exists():
                    raise LookupError(f"no CA for organisation {org!r} ({msp_id_for_org(org)}) in {self._dir}")
                ca = _OrgCA.load_or_create(org, directory)
            else:
                ca = _OrgCA.load_or_create(org, self._dir / msp_id_for_org(org))
            self._cas[org] = ca
        return ca

    def identity(self, principal: Principal) -> Identity:
        """The creator identity for ``principal`` (cached per principal)."""
        with self._lock:
            ident = self._cache.get(principal)
            if ident is not None:
                self._cache.move_to_end(principal)
                return ident
        _validate_principal(principal)
        mspid = msp_id_for_org(principal.org)
        with self._lock:
            ca = self._ca(principal.org)
        ident = self._issue(principal, mspid, ca)
        with self._lock:
            existing = self._cache.get(principal)
            if existing is not None:
                return existing
            self._cache[principal] = ident
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ident

    def enrol(
        self, principal: Principal, validity: _dt.timedelta = _dt.timedelta(hours=1)
    ) -> tuple[Identity, ec.EllipticCurvePrivateKey]:
        """A fresh short-lived certificate for ``principal`` AND its private key (fabricgw).

        The org's ciphercare node signs Fabric proposals as the user with this key, so the peer
        validates the creator natively against the org's MSP and the contract reads the actor
        from the certificate's attributes (docs/FABRIC.md, identity). Not cached here.
        """
        _validate_principal(principal)
        if validity <= _dt.timedelta(0):
            raise ValueError("validity must be positive")
        mspid = msp_id_for_org(principal.org)
        with self._lock:
            ca = self._ca(principal.org)
        return self._issue_with_key(principal, mspid, ca, validity)

    @staticmethod
    def _issue(principal: Principal, mspid: str, ca: _OrgCA) -> Identity:
        return EmbeddedMSP._issue_with_key(principal, mspid, ca, _CERT_VALIDITY)[0]

    @staticmethod
    def _issue_with_key(
        principal: Principal, mspid: str, ca: _OrgCA, validity: _dt.timedelta
    ) -> tuple[Identity, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, principal.org),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "client"),
                x509.NameAttribute(NameOID.COMMON_NAME, principal.subject),
            ]
        )
        attrs_json = canonical.dumps({"attrs": identity_attrs(principal)})
        now = _dt.datetime.now(_dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(ATTR_OID), attrs_json), critical=False)
            .sign(ca.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        der = cert.public_bytes(serialization.Encoding.DER)
        serialized = identities_pb2.SerializedIdentity(  # type: ignore[attr-defined]
            mspid=mspid, id_bytes=pem).SerializeToString()
        return (
            Identity(
                mspid=mspid,
                cert_pem=pem,
                cert_sha256=hashlib.sha256(der).hexdigest(),
                serialized=serialized,
            ),
            key,
        )
