"""FHIR Consent (R4B, R5) <-> ciphercare consents, validated with the ``fhir.resources`` models.

Import: the resource is parsed by the library's model of the requested version (structure, data types,
cardinalities), then our own checks bind the codes ciphercare puts on the ledger: purposes must be HL7
v3 ActReason codes we know (``consent.codes.PURPOSES_OF_USE``), data classes FHIR resource types we know
(``consent.codes.DATA_CLASSES``), recipients organisations of the registry (the ``organizations``
setting). The result is a ``consent:Grant`` input (``ConsentGrant``'s dict) plus the evidence.

Mapping (ciphercare field <- R4B / R5):

* pid <- ``patient`` / ``subject``: ``identifier`` with system ``urn:ciphercare:pid``;
* decision, purposes, data classes, grantee <- R4B root ``provision`` (``type``, ``purpose``, ``class``,
  the one ``actor`` with role IRCP) / R5 ``decision``, ``grantee`` and the single top-level ``provision``
  (``purpose``, ``resourceType``);
* period <- R4B ``provision.period`` / R5 ``period`` (start defaults to the import time);
* nested provisions <- ``provision.provision`` (type, purposes, data classes, actors, period); R5 has no
  ``provision.type``: ciphercare writes it in the extension :data:`PROVISION_TYPE_URL`, and a provision
  without it is an exception to its parent (the opposite decision), as R5 defines;
* status <- ``active``, or R4B ``proposed`` / R5 ``draft`` for a consent staff recorded that awaits the
  patient's confirmation (exported the same way; a revoked consent exports as ``inactive``, which import
  refuses);
* evidence <- ``sourceAttachment`` / ``sourceReference`` (R5: lists); its SHA-256 (canonical JSON of those
  fields) is what the ledger records as ``evidence_sha256``.

Export builds the resource with the library's models from the ledger record (authoritative) and the
evidence of the stored document, so import -> export -> import gives the same Grant input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.consent import Consent as ConsentR4B
from pydantic import ValidationError as ModelValidationError

from ciphercare.consent import canonical, codes, model
from ciphercare.consent.errors import ContractError

R4B = "R4B"
R5 = "R5"
VERSIONS = (R4B, R5)
PID_SYSTEM = "urn:ciphercare:pid"
ORG_SYSTEM = "urn:ciphercare:organization"
ACT_REASON = codes.PURPOSE_OF_USE_SYSTEM
#: FHIR R4 binds Consent.provision.class to resource-types; R5 renamed the system fhir-types.
DATA_CLASS_SYSTEMS = frozenset({"http://hl7.org/fhir/resource-types", "http://hl7.org/fhir/fhir-types"})
R4_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
R5_FHIR_TYPES = "http://hl7.org/fhir/fhir-types"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PROVISION_TYPE_URL = "https://ciphercare.dev/fhir/StructureDefinition/provision-type"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
MAX_RESOURCE_BYTES = 256 * 1024
#: Consent.status of a consent staff recorded that awaits the patient's confirmation: R4B has ``proposed``
#: ("presented to the patient for review"); R5 dropped it, its ``draft`` is "not yet intended to be acted upon".
PROPOSED_STATUS = {R4B: "proposed", R5: "draft"}


class FhirImportError(ValueError):
    """The resource is not an acceptable FHIR Consent (the message names the offending path)."""


def version(value: str) -> str:
    """``R4B`` (default) or ``R5``."""
    v = (value or R4B).upper()
    if v not in VERSIONS:
        raise FhirImportError(f"fhir_version must be R4B or R5, got {value!r}")
    return v


# --- Import -----------------------------------------------------------------------------


def _parse(text: str, fhir_version: str) -> dict[str, Any]:
    if len(text.encode("utf-8")) > MAX_RESOURCE_BYTES:
        raise FhirImportError(f"resource_json is larger than {MAX_RESOURCE_BYTES} bytes")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FhirImportError(f"resource_json is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(raw, dict) or raw.get("resourceType") != "Consent":
        raise FhirImportError("resource_json must be a FHIR resource with resourceType 'Consent'")
    cls = ConsentR4B if fhir_version == R4B else ConsentR5
    try:
        parsed = cls.model_validate(raw)
    except ModelValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "Consent"
        raise FhirImportError(f"not a valid FHIR {fhir_version} Consent: {where}: {first['msg']}") from None
    try:
        canonical.dumps(raw)
    except canonical.CanonicalJSONError as exc:
        raise FhirImportError(f"resource_json cannot be stored canonically: {exc}") from None
    document: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True, by_alias=True)
    return document


def _codes(items: Iterable[Any], path: str, systems: frozenset[str], table: Mapping[str, str], what: str) -> list[str]:
    out: list[str] = []
    for i, coding in enumerate(items or []):
        system, code = coding.get("system"), coding.get("code")
        if system not in systems:
            allowed = ", ".join(sorted(systems))
            raise FhirImportError(f"{path}[{i}].system: {system!r} is not {what}'s system ({allowed})")
        if code not in table:
            raise FhirImportError(f"{path}[{i}].code: {code!r} is not {what} ciphercare knows; allowed: "
                                  f"{codes.allowed(table)}")
        if code not in out:
            out.append(code)
    return out


def _org_of(reference: Any, path: str, organizations: Mapping[str, str]) -> str:
    identifier = (reference or {}).get("identifier") or {}
    if identifier.get("system") != ORG_SYSTEM or not identifier.get("value"):
        raise FhirImportError(f"{path}: name the organisation by identifier (system {ORG_SYSTEM})")
    org = str(identifier["value"])
    if org not in organizations:
        raise FhirImportError(f"{path}: {org!r} is not an organisation ciphercare knows; known: "
                              f"{', '.join(sorted(organizations))}")
    return org


def _actors(actors: Iterable[Any], path: str, organizations: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for i, actor in enumerate(actors or []):
        roles = [c.get("code") for c in ((actor.get("role") or {}).get("coding") or [])]
        if roles and "IRCP" not in roles:
            raise FhirImportError(f"{path}[{i}].role: only recipients (v3-ParticipationType IRCP) are supported")
        org = _org_of(actor.get("reference"), f"{path}[{i}].reference", organizations)
        if org not in out:
            out.append(org)
    return out


def _period(value: Any, path: str) -> dict[str, Any] | None:
    if not value:
        return None
    out: dict[str, Any] = {}
    for bound in ("start", "end"):
        if value.get(bound):
            try:
                out[bound] = model.format_time(model.parse_time(_with_zone(value[bound]), f"{path}.{bound}"))
            except ContractError as exc:
                raise FhirImportError(f"{path}.{bound}: {exc.detail}") from None
    return out or None


def _with_zone(text: str) -> str:
    """FHIR dateTime may be a date; ciphercare periods are instants (a date is its UTC midnight)."""
    if len(text) == 10:
        return text + "T00:00:00Z"
    return text


def _type_of(provision: Mapping[str, Any], parent: str, fhir_version: str, path: str) -> str:
    if fhir_version == R4B:
        value = provision.get("type")
        if value is None:
            return parent
    else:
        declared = [e.get("valueCode") for e in provision.get("extension") or [] if e.get("url") == PROVISION_TYPE_URL]
        value = declared[0] if declared else (codes.DENY if parent == codes.PERMIT else codes.PERMIT)
    if value not in codes.DECISIONS:
        raise FhirImportError(f"{path}.type: {value!r} is not permit or deny")
    return str(value)


def _nested(items: Iterable[Any], parent: str, fhir_version: str, path: str,
            organizations: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    class_key = "class" if fhir_version == R4B else "resourceType"
    for i, p in enumerate(items or []):
        where = f"{path}[{i}]"
        kind = _type_of(p, parent, fhir_version, where)
        item: dict[str, Any] = {
            "type": kind,
            "purposes": _codes(p.get("purpose"), f"{where}.purpose", frozenset({ACT_REASON}),
                               codes.PURPOSES_OF_USE, "a v3-ActReason purpose"),
            "data_classes": _codes(p.get(class_key), f"{where}.{class_key}", DATA_CLASS_SYSTEMS,
                                   codes.DATA_CLASSES, "a FHIR resource type"),
            "actors": _actors(p.get("actor"), f"{where}.actor", organizations),
            "provisions": _nested(p.get("provision"), kind, fhir_version, f"{where}.provision", organizations),
        }
        period = _period(p.get("period"), f"{where}.period")
        if period is not None:
            item["period"] = period
        out.append(item)
    return out


def _pid(document: Mapping[str, Any], fhir_version: str) -> str:
    field = "patient" if fhir_version == R4B else "subject"
    identifier = (document.get(field) or {}).get("identifier") or {}
    if identifier.get("system") != PID_SYSTEM or not identifier.get("value"):
        raise FhirImportError(f"Consent.{field}: name the patient by pseudonym (identifier system {PID_SYSTEM})")
    try:
        return model.pid(identifier["value"], f"Consent.{field}.identifier.value")
    except ContractError as exc:
        raise FhirImportError(exc.detail) from None


def status_of(document: Mapping[str, Any], fhir_version: str) -> str:
    """The consent status a FHIR Consent asks for: ``active``, or ``proposed`` (R4B ``proposed``, R5 ``draft``:
    recorded on the patient's behalf, not in force until the patient confirms it). The ledger status is
    still the consent contract's to decide (a staff-recorded PERMIT is proposed whatever the document says);
    the import service refuses a proposed document the ledger would put in force at once."""
    status = document.get("status")
    if status == "active":
        return codes.CONSENT_STATUS_ACTIVE
    if status == PROPOSED_STATUS[fhir_version]:
        return codes.CONSENT_STATUS_PROPOSED
    raise FhirImportError(f"Consent.status: only an active consent, or one proposed to the patient "
                          f"({PROPOSED_STATUS[fhir_version]!r} in {fhir_version}), can be imported, got {status!r}")


def evidence_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence fields of a Consent (``sourceAttachment`` / ``sourceReference``), as present."""
    return {k: document[k] for k in ("sourceAttachment", "sourceReference") if document.get(k)}


def evidence_digest(evidence: Mapping[str, Any]) -> str | None:
    return hashlib.sha256(canonical.dumps(dict(evidence))).hexdigest() if evidence else None


def consent_from_fhir(text: str, fhir_version: str, organizations: Mapping[str, str],
                      now_iso: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``consent:Grant`` input without ``document_sha256``, the validated document) of a FHIR Consent."""
    document = _parse(text, fhir_version)
    status_of(document, fhir_version)
    pid = _pid(document, fhir_version)
    if fhir_version == R4B:
        root = document.get("provision")
        if not root:
            raise FhirImportError("Consent.provision: the root provision (type, actor, purpose, class) is required")
        decision = _type_of(root, codes.PERMIT, R4B, "Consent.provision")
        actors = _actors(root.get("actor"), "Consent.provision.actor", organizations)
        period = _period(root.get("period"), "Consent.provision.period")
        class_key, base = "class", "Consent.provision"
    else:
        decision = document.get("decision") or codes.PERMIT
        if decision not in codes.DECISIONS:
            raise FhirImportError(f"Consent.decision: {decision!r} is not permit or deny")
        tops = document.get("provision") or []
        if len(tops) != 1:
            raise FhirImportError("Consent.provision: exactly one top-level provision (the scope) is required")
        root = tops[0]
        grantees = document.get("grantee") or []
        actors = [_org_of(g, f"Consent.grantee[{i}]", organizations) for i, g in enumerate(grantees)]
        scoped = _actors(root.get("actor"), "Consent.provision[0].actor", organizations)
        actors += [a for a in scoped if a not in actors]
        period = _period(document.get("period"), "Consent.period")
        class_key, base = "resourceType", "Consent.provision[0]"
    if len(actors) != 1:
        raise FhirImportError(f"{base}: exactly one recipient organisation is required, got {len(actors)}")
    purposes = _codes(root.get("purpose"), f"{base}.purpose", frozenset({ACT_REASON}), codes.PURPOSES_OF_USE,
                      "a v3-ActReason purpose")
    classes = _codes(root.get(class_key), f"{base}.{class_key}", DATA_CLASS_SYSTEMS, codes.DATA_CLASSES,
                     "a FHIR resource type")
    if not purposes or not classes:
        raise FhirImportError(f"{base}: name at least one purpose and one data class")
    period = period or {}
    period.setdefault("start", now_iso)
    grant: dict[str, Any] = {
        "pid": pid,
        "grantee_org": actors[0],
        "decision": decision,
        "purposes": purposes,
        "data_classes": classes,
        "period": period,
        "provisions": _nested(root.get("provision"), decision, fhir_version, f"{base}.provision", organizations),
    }
    evidence = evidence_digest(evidence_of(document))
    if evidence is not None:
        grant["evidence_sha256"] = evidence
    try:  # the ledger's own validation, before anything is written
        model.ConsentGrant.from_dict({**grant, "document_sha256": "0" * 64})
    except ContractError as exc:
        raise FhirImportError(exc.detail) from None
    return grant, document


# --- Export -----------------------------------------------------------------------------


def _org_ref(org: str, organizations: Mapping[str, str]) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": ORG_SYSTEM, "value": org}}
    if org in organizations:
        ref["display"] = organizations[org]
    return ref


def _actor(org: str, organizations: Mapping[str, str]) -> dict[str, Any]:
    return {"role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]}, "reference": _org_ref(org, organizations)}


def _purpose_codings(purposes: Iterable[str]) -> list[dict[str, Any]]:
    return [{"system": ACT_REASON, "code": p, "display": codes.PURPOSES_OF_USE[p]} for p in purposes]


def _provision_out(p: Mapping[str, Any], fhir_version: str, organizations: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fhir_version == R4B:
        out["type"] = p["type"]
    else:
        out["extension"] = [{"url": PROVISION_TYPE_URL, "valueCode": p["type"]}]
    if p.get("period"):
        out["period"] = {k: v for k, v in p["period"].items() if v}
    if p.get("actors"):
        out["actor"] = [_actor(o, organizations) for o in p["actors"]]
    if p.get("purposes"):
        out["purpose"] = _purpose_codings(p["purposes"])
    if p.get("data_classes"):
        system = R4_RESOURCE_TYPES if fhir_version == R4B else R5_FHIR_TYPES
        out["class" if fhir_version == R4B else "resourceType"] = [
            {"system": system, "code": c} for c in p["data_classes"]
        ]
    if p.get("provisions"):
        out["provision"] = [_provision_out(c, fhir_version, organizations) for c in p["provisions"]]
    return out


def consent_to_fhir(record: Mapping[str, Any], evidence: Mapping[str, Any], fhir_version: str,
                    organizations: Mapping[str, str]) -> dict[str, Any]:
    """A ledger consent record (+ its document's evidence) as a FHIR Consent of ``fhir_version``."""
    status = {codes.CONSENT_STATUS_ACTIVE: "active", codes.CONSENT_STATUS_PROPOSED: PROPOSED_STATUS[fhir_version]
              }.get(record["status"], "inactive")
    root = {
        "type": record["decision"],
        "actors": [record["grantee_org"]],
        "purposes": record["purposes"],
        "data_classes": record["data_classes"],
        "provisions": record.get("provisions") or [],
    }
    patient = {"identifier": {"system": PID_SYSTEM, "value": record["pid"]}}
    category = [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}]
    period = {k: v for k, v in (record.get("period") or {}).items() if v}
    resource: dict[str, Any] = {"resourceType": "Consent", "id": record["id"], "status": status, "category": category}
    if fhir_version == R4B:
        resource.update({
            "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
            "patient": patient,
            "dateTime": record["recorded_at"],
            "provision": {**_provision_out(root, R4B, organizations), "period": period},
        })
        if evidence.get("sourceAttachment"):
            resource["sourceAttachment"] = _single(evidence["sourceAttachment"])
        if evidence.get("sourceReference"):
            resource["sourceReference"] = _single(evidence["sourceReference"])
        built: ConsentR4B | ConsentR5 = ConsentR4B.model_validate(resource)
    else:
        scope = _provision_out(root, R5, organizations)
        scope.pop("actor", None)  # the recipient is Consent.grantee in R5
        resource.update({
            "subject": patient,
            "date": record["recorded_at"][:10],
            "decision": record["decision"],
            "grantee": [_org_ref(record["grantee_org"], organizations)],
            "period": period,
            "provision": [scope],
        })
        for key in ("sourceAttachment", "sourceReference"):
            if evidence.get(key):
                value = evidence[key]
                resource[key] = value if isinstance(value, list) else [value]
        built = ConsentR5.model_validate(resource)
    out: dict[str, Any] = built.model_dump(mode="json", exclude_none=True, by_alias=True)
    return out


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value
