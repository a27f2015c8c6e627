from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ciphercare.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_DECISION_UNSPECIFIED: _ClassVar[ConsentDecision]
    CONSENT_DECISION_PERMIT: _ClassVar[ConsentDecision]
    CONSENT_DECISION_DENY: _ClassVar[ConsentDecision]

class ConsentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATUS_UNSPECIFIED: _ClassVar[ConsentStatus]
    CONSENT_STATUS_ACTIVE: _ClassVar[ConsentStatus]
    CONSENT_STATUS_INACTIVE: _ClassVar[ConsentStatus]
    CONSENT_STATUS_PROPOSED: _ClassVar[ConsentStatus]
CONSENT_DECISION_UNSPECIFIED: ConsentDecision
CONSENT_DECISION_PERMIT: ConsentDecision
CONSENT_DECISION_DENY: ConsentDecision
CONSENT_STATUS_UNSPECIFIED: ConsentStatus
CONSENT_STATUS_ACTIVE: ConsentStatus
CONSENT_STATUS_INACTIVE: ConsentStatus
CONSENT_STATUS_PROPOSED: ConsentStatus

class ConsentProvision(_message.Message):
    __slots__ = ("type", "purposes", "data_classes", "actors", "period", "provisions")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    type: ConsentDecision
    purposes: _containers.RepeatedScalarFieldContainer[str]
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    actors: _containers.RepeatedScalarFieldContainer[str]
    period: _common_pb2.Period
    provisions: _containers.RepeatedCompositeFieldContainer[ConsentProvision]
    def __init__(self, type: _Optional[_Union[ConsentDecision, str]] = ..., purposes: _Optional[_Iterable[str]] = ..., data_classes: _Optional[_Iterable[str]] = ..., actors: _Optional[_Iterable[str]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[ConsentProvision, _Mapping]]] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("id", "version", "status", "pid", "grantee_organization", "decision", "purposes", "data_classes", "period", "provisions", "document_sha256", "recorded_at", "recorded_by", "revoked_at", "revoked_by", "revocation_reason", "evidence_sha256", "authority", "recorded_by_organization", "confirmed_at", "confirmed_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    status: ConsentStatus
    pid: str
    grantee_organization: str
    decision: ConsentDecision
    purposes: _containers.RepeatedScalarFieldContainer[str]
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    period: _common_pb2.Period
    provisions: _containers.RepeatedCompositeFieldContainer[ConsentProvision]
    document_sha256: str
    recorded_at: _timestamp_pb2.Timestamp
    recorded_by: _common_pb2.Actor
    revoked_at: _timestamp_pb2.Timestamp
    revoked_by: _common_pb2.Actor
    revocation_reason: str
    evidence_sha256: str
    authority: str
    recorded_by_organization: str
    confirmed_at: _timestamp_pb2.Timestamp
    confirmed_by: _common_pb2.Actor
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[ConsentStatus, str]] = ..., pid: _Optional[str] = ..., grantee_organization: _Optional[str] = ..., decision: _Optional[_Union[ConsentDecision, str]] = ..., purposes: _Optional[_Iterable[str]] = ..., data_classes: _Optional[_Iterable[str]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[ConsentProvision, _Mapping]]] = ..., document_sha256: _Optional[str] = ..., recorded_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., revoked_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., revocation_reason: _Optional[str] = ..., evidence_sha256: _Optional[str] = ..., authority: _Optional[str] = ..., recorded_by_organization: _Optional[str] = ..., confirmed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., confirmed_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("pid", "grantee_organization", "decision", "purposes", "data_classes", "period", "provisions", "fhir_consent_json")
    PID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    FHIR_CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    pid: str
    grantee_organization: str
    decision: ConsentDecision
    purposes: _containers.RepeatedScalarFieldContainer[str]
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    period: _common_pb2.Period
    provisions: _containers.RepeatedCompositeFieldContainer[ConsentProvision]
    fhir_consent_json: str
    def __init__(self, pid: _Optional[str] = ..., grantee_organization: _Optional[str] = ..., decision: _Optional[_Union[ConsentDecision, str]] = ..., purposes: _Optional[_Iterable[str]] = ..., data_classes: _Optional[_Iterable[str]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[ConsentProvision, _Mapping]]] = ..., fhir_consent_json: _Optional[str] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("consent", "receipt")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("consent_id", "reason")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    reason: str
    def __init__(self, consent_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ConfirmRequest(_message.Message):
    __slots__ = ("consent_id",)
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    def __init__(self, consent_id: _Optional[str] = ...) -> None: ...

class ConfirmResponse(_message.Message):
    __slots__ = ("consent", "receipt")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("consent", "receipt")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class GetConsentRequest(_message.Message):
    __slots__ = ("consent_id",)
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    def __init__(self, consent_id: _Optional[str] = ...) -> None: ...

class GetConsentResponse(_message.Message):
    __slots__ = ("consent", "fhir_consent_json")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    FHIR_CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    fhir_consent_json: str
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., fhir_consent_json: _Optional[str] = ...) -> None: ...

class ListForPatientRequest(_message.Message):
    __slots__ = ("pid", "include_inactive")
    PID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    pid: str
    include_inactive: bool
    def __init__(self, pid: _Optional[str] = ..., include_inactive: bool = ...) -> None: ...

class ListForPatientResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[Consent]
    def __init__(self, consents: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ...) -> None: ...

class GetConsentHistoryRequest(_message.Message):
    __slots__ = ("consent_id",)
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    def __init__(self, consent_id: _Optional[str] = ...) -> None: ...

class GetConsentHistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Consent]
    def __init__(self, versions: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("pid", "recipient_organization", "purpose", "data_class", "at")
    PID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    pid: str
    recipient_organization: str
    purpose: str
    data_class: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[str] = ..., recipient_organization: _Optional[str] = ..., purpose: _Optional[str] = ..., data_class: _Optional[str] = ..., at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "consent_id", "reason", "evaluated_at", "breakglass_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    BREAKGLASS_ID_FIELD_NUMBER: _ClassVar[int]
    decision: ConsentDecision
    consent_id: str
    reason: str
    evaluated_at: _timestamp_pb2.Timestamp
    breakglass_id: str
    def __init__(self, decision: _Optional[_Union[ConsentDecision, str]] = ..., consent_id: _Optional[str] = ..., reason: _Optional[str] = ..., evaluated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., breakglass_id: _Optional[str] = ...) -> None: ...
