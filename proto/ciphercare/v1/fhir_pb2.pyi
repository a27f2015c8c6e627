from ciphercare.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImportConsentRequest(_message.Message):
    __slots__ = ("resource_json", "fhir_version")
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    resource_json: str
    fhir_version: str
    def __init__(self, resource_json: _Optional[str] = ..., fhir_version: _Optional[str] = ...) -> None: ...

class ImportConsentResponse(_message.Message):
    __slots__ = ("consent_id", "receipt", "status")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    receipt: _common_pb2.LedgerReceipt
    status: str
    def __init__(self, consent_id: _Optional[str] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ..., status: _Optional[str] = ...) -> None: ...

class ExportConsentRequest(_message.Message):
    __slots__ = ("consent_id", "fhir_version")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    fhir_version: str
    def __init__(self, consent_id: _Optional[str] = ..., fhir_version: _Optional[str] = ...) -> None: ...

class ExportConsentResponse(_message.Message):
    __slots__ = ("resource_json",)
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    resource_json: str
    def __init__(self, resource_json: _Optional[str] = ...) -> None: ...

class ExportAuditEventsRequest(_message.Message):
    __slots__ = ("pid", "fhir_version", "limit")
    PID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    pid: str
    fhir_version: str
    limit: int
    def __init__(self, pid: _Optional[str] = ..., fhir_version: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ExportAuditEventsResponse(_message.Message):
    __slots__ = ("bundle_json", "count")
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bundle_json: str
    count: int
    def __init__(self, bundle_json: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...
