"""The transaction's actor, read from the creator's X.509 certificate.

Contracts never take the actor from an argument. The creator identity is
``{mspid, idBytes}``; the certificate carries the Fabric CA attribute extension
(OID 1.2.3.4.5.6.7.8.1, JSON ``{"attrs": {...}}``) with the subject, org, roles,
client id and optional patient pseudonym. The certificate's signature chain is
the MSP's business (the peer / embedded ledger validates the creator); here we
refuse a certificate whose org does not belong to the creator's MSP.

This module keeps its own copies of the constants and ``msp_id_for_org``: the
chaincode package cannot import ``ciphercare.ledger``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from . import codes, model
from .cache import LRU
from .errors import ContractError, permission_denied

ATTRIBUTE_EXTENSION_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")
ATTR_ENROLLMENT_ID = "hf.EnrollmentID"
ATTR_ORG = "ciphercare.org"
ATTR_ROLES = "ciphercare.roles"
ATTR_CLIENT = "ciphercare.client"
ATTR_PID = "ciphercare.pid"
#: Comma-separated pseudonyms of the patients this person is an authorised proxy for (guardian, legal
#: representative). The identity provider asserts it exactly as it asserts ``ciphercare.pid``.
ATTR_PROXY_FOR = "ciphercare.proxy_for"
MAX_PROXY_FOR = 32

CACHE_SIZE = 1024
_MAX_CERT_BYTES = 16 * 1024


def msp_id_for_org(org: str) -> str:
    """The MSP id of an org: CamelCase of its '-'/'_' parts + ``MSP`` (``hospital-a`` -> ``HospitalAMSP``)."""
    parts = [p for p in re.split(r"[-_]", org) if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) + "MSP"


@dataclass(frozen=True)
class Caller:
    """An authenticated transaction creator."""

    subject: str
    org: str
    roles: frozenset[str]
    client_id: str
    pid: str | None
    msp_id: str
    proxy_for: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def has_any(self, roles: frozenset[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def is_provider(self) -> bool:
        """Acts for a care provider org (hospital or clinician)."""
        return self.has_any(codes.PROVIDER_ROLES)

    @property
    def is_oversight(self) -> bool:
        """Compliance officer or admin: reads everything."""
        return self.has_any(codes.OVERSIGHT_ROLES)

    @property
    def is_patient(self) -> bool:
        """A patient with a pseudonym bound to their login."""
        return self.has_role(codes.ROLE_PATIENT) and self.pid is not None

    def speaks_for(self, pid: str) -> str | None:
        """``"patient"`` when this is patient ``pid`` themselves, ``"proxy"`` for their proxy, else None.

        Only a caller with the patient role speaks for a patient (staff acting as a proxy must use a
        patient-role login without staff roles, so their two capacities never mix in one transaction).
        """
        if not self.has_role(codes.ROLE_PATIENT):
            return None
        if self.pid == pid:
            return codes.AUTHORITY_PATIENT
        if pid in self.proxy_for and not self.is_provider:
            return codes.AUTHORITY_PROXY
        return None

    def actor_ref(self) -> model.ActorRef:
        return model.ActorRef(subject=self.subject, org=self.org, roles=tuple(sorted(self.roles)))

    def audit_agent(self) -> model.AuditAgent:
        return model.AuditAgent(
            subject=self.subject, org=self.org, roles=tuple(sorted(self.roles)), client=self.client_id
        )


@dataclass(frozen=True)
class _CertIdentity:
    subject: str
    org: str
    roles: frozenset[str]
    client_id: str
    pid: str | None
    proxy_for: frozenset[str] = frozenset()


_cache: LRU[bytes, _CertIdentity | ContractError] = LRU(CACHE_SIZE)


def clear_cache() -> None:
    """Forget parsed certificates (tests)."""
    _cache.clear()


def _name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def _extension_json(raw: bytes) -> Any:
    """The attribute extension's JSON; Fabric CA stores raw JSON bytes, tolerate a DER OCTET STRING wrap."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    if len(raw) >= 2 and raw[0] == 0x04 and raw[1] < 0x80 and len(raw) == raw[1] + 2:
        return json.loads(raw[2:])
    raise ValueError("not JSON")


def _parse_cert(pem: bytes) -> _CertIdentity:
    """Parse and validate the identity attributes of one certificate (no MSP check)."""
    if len(pem) > _MAX_CERT_BYTES:
        raise permission_denied("creator certificate is too large")
    try:
        if pem.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(pem)
        else:
            cert = x509.load_der_x509_certificate(pem)
    except ValueError:
        raise permission_denied("creator identity is not an X.509 certificate") from None
    try:
        ext = cert.extensions.get_extension_for_oid(ATTRIBUTE_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise permission_denied("creator certificate has no ciphercare attribute extension") from None
    except ValueError:
        raise permission_denied("creator certificate extensions are malformed") from None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else None
    if raw is None:
        raise permission_denied("creator certificate attribute extension is malformed")
    try:
        doc = _extension_json(raw)
    except ValueError:
        raise permission_denied("creator certificate attribute extension is not JSON") from None
    attrs = doc.get("attrs") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        raise permission_denied("creator certificate attribute extension has no string 'attrs' object")

    subject = attrs.get(ATTR_ENROLLMENT_ID)
    if subject is None or not model.SUBJECT_RE.match(subject):
        raise permission_denied(f"creator certificate attribute {ATTR_ENROLLMENT_ID} is missing or malformed")
    cn = _name_attr(cert.subject, NameOID.COMMON_NAME)
    if cn is not None and cn != subject:
        raise permission_denied(f"creator certificate CN does not match {ATTR_ENROLLMENT_ID}")

    org = attrs.get(ATTR_ORG)
    if org is None or not model.ORG_RE.match(org):
        raise permission_denied(f"creator certificate attribute {ATTR_ORG} is missing or malformed")
    o = _name_attr(cert.subject, NameOID.ORGANIZATION_NAME)
    if o is not None and o != org:
        raise permission_denied(f"creator certificate O does not match {ATTR_ORG}")

    roles_text = attrs.get(ATTR_ROLES, "")
    # Tokens may carry IdP housekeeping roles (offline_access, ...): keep only ciphercare roles.
    roles = frozenset(r.strip() for r in roles_text.split(",") if r.strip()) & codes.ROLES

    client_id = attrs.get(ATTR_CLIENT, "")
    if not model.CLIENT_ID_RE.match(client_id):
        raise permission_denied(f"creator certificate attribute {ATTR_CLIENT} is malformed")

    pid = attrs.get(ATTR_PID)
    if pid is not None and not model.PID_RE.match(pid):
        raise permission_denied(f"creator certificate attribute {ATTR_PID} is malformed")

    proxy_text = attrs.get(ATTR_PROXY_FOR, "")
    proxy_for = frozenset(p.strip() for p in proxy_text.split(",") if p.strip())
    if len(proxy_for) > MAX_PROXY_FOR or not all(model.PID_RE.match(p) for p in proxy_for):
        raise permission_denied(f"creator certificate attribute {ATTR_PROXY_FOR} is malformed")

    return _CertIdentity(
        subject=subject, org=org, roles=roles, client_id=client_id, pid=pid, proxy_for=proxy_for
    )


def caller_from_identity(mspid: str, cert: bytes) -> Caller:
    """Build the :class:`Caller` from a creator's MSP id and certificate bytes; refuse a mismatch."""
    if not mspid:
        raise permission_denied("creator has no MSP id")
    if not cert:
        raise permission_denied("creator has no certificate")
    key = hashlib.sha256(cert).digest()
    cached = _cache.get(key)
    if cached is None:
        try:
            cached = _parse_cert(cert)
        except ContractError as err:
            cached = err
        _cache.put(key, cached)
    if isinstance(cached, ContractError):
        raise permission_denied(cached.detail)
    if msp_id_for_org(cached.org) != mspid:
        raise permission_denied(f"certificate org does not belong to the creator's MSP {mspid}")
    return Caller(
        subject=cached.subject,
        org=cached.org,
        roles=cached.roles,
        client_id=cached.client_id,
        pid=cached.pid,
        msp_id=mspid,
        proxy_for=cached.proxy_for,
    )


def caller_from_ctx(ctx: Any) -> Caller:
    """The caller of the current transaction, from ``ctx.get_client_identity()``."""
    identity = ctx.get_client_identity()
    try:
        mspid = identity.get_mspid()
        cert = identity.get_x509()
    except Exception:  # the library raises bare Exception when the creator has no certificate
        raise permission_denied("creator identity has no certificate") from None
    if isinstance(cert, str):
        cert = cert.encode("utf-8")
    return caller_from_identity(mspid or "", bytes(cert))
