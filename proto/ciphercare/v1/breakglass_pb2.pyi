from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ciphercare.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakGlassReview(_message.Message):
    __slots__ = ("outcome", "reviewed_by", "reviewed_at", "note_sha256")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_BY_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTE_SHA256_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    reviewed_by: _common_pb2.Actor
    reviewed_at: _timestamp_pb2.Timestamp
    note_sha256: str
    def __init__(self, outcome: _Optional[str] = ..., reviewed_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., reviewed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., note_sha256: _Optional[str] = ...) -> None: ...

class BreakGlassDeclaration(_message.Message):
    __slots__ = ("id", "version", "pid", "purpose", "reason_code", "text_sha256", "declared_at", "expires_at", "declared_by", "review_status", "reviews", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DECLARED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DECLARED_BY_FIELD_NUMBER: _ClassVar[int]
    REVIEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    pid: str
    purpose: str
    reason_code: str
    text_sha256: str
    declared_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    declared_by: _common_pb2.Actor
    review_status: str
    reviews: _containers.RepeatedCompositeFieldContainer[BreakGlassReview]
    active: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., pid: _Optional[str] = ..., purpose: _Optional[str] = ..., reason_code: _Optional[str] = ..., text_sha256: _Optional[str] = ..., declared_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., declared_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., review_status: _Optional[str] = ..., reviews: _Optional[_Iterable[_Union[BreakGlassReview, _Mapping]]] = ..., active: bool = ...) -> None: ...

class DeclareBreakGlassRequest(_message.Message):
    __slots__ = ("pid", "reason_code", "justification", "purpose")
    PID_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    pid: str
    reason_code: str
    justification: str
    purpose: str
    def __init__(self, pid: _Optional[str] = ..., reason_code: _Optional[str] = ..., justification: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class DeclareBreakGlassResponse(_message.Message):
    __slots__ = ("declaration", "receipt")
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    declaration: BreakGlassDeclaration
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, declaration: _Optional[_Union[BreakGlassDeclaration, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class GetBreakGlassRequest(_message.Message):
    __slots__ = ("declaration_id",)
    DECLARATION_ID_FIELD_NUMBER: _ClassVar[int]
    declaration_id: str
    def __init__(self, declaration_id: _Optional[str] = ...) -> None: ...

class GetBreakGlassResponse(_message.Message):
    __slots__ = ("declaration", "justification", "review_notes")
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    REVIEW_NOTES_FIELD_NUMBER: _ClassVar[int]
    declaration: BreakGlassDeclaration
    justification: str
    review_notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, declaration: _Optional[_Union[BreakGlassDeclaration, _Mapping]] = ..., justification: _Optional[str] = ..., review_notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBreakGlassForPatientRequest(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: str
    def __init__(self, pid: _Optional[str] = ...) -> None: ...

class ListActiveBreakGlassRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBreakGlassResponse(_message.Message):
    __slots__ = ("declarations",)
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    declarations: _containers.RepeatedCompositeFieldContainer[BreakGlassDeclaration]
    def __init__(self, declarations: _Optional[_Iterable[_Union[BreakGlassDeclaration, _Mapping]]] = ...) -> None: ...

class ListBreakGlassForReviewRequest(_message.Message):
    __slots__ = ("review_status",)
    REVIEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    review_status: str
    def __init__(self, review_status: _Optional[str] = ...) -> None: ...

class BreakGlassCounts(_message.Message):
    __slots__ = ("total", "active", "pending", "acknowledged", "escalated", "by_reason", "by_organization")
    class ByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByOrganizationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    BY_REASON_FIELD_NUMBER: _ClassVar[int]
    BY_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    total: int
    active: int
    pending: int
    acknowledged: int
    escalated: int
    by_reason: _containers.ScalarMap[str, int]
    by_organization: _containers.ScalarMap[str, int]
    def __init__(self, total: _Optional[int] = ..., active: _Optional[int] = ..., pending: _Optional[int] = ..., acknowledged: _Optional[int] = ..., escalated: _Optional[int] = ..., by_reason: _Optional[_Mapping[str, int]] = ..., by_organization: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListBreakGlassForReviewResponse(_message.Message):
    __slots__ = ("declarations", "counts")
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    declarations: _containers.RepeatedCompositeFieldContainer[BreakGlassDeclaration]
    counts: BreakGlassCounts
    def __init__(self, declarations: _Optional[_Iterable[_Union[BreakGlassDeclaration, _Mapping]]] = ..., counts: _Optional[_Union[BreakGlassCounts, _Mapping]] = ...) -> None: ...

class ReviewBreakGlassRequest(_message.Message):
    __slots__ = ("declaration_id", "outcome", "note")
    DECLARATION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    declaration_id: str
    outcome: str
    note: str
    def __init__(self, declaration_id: _Optional[str] = ..., outcome: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ReviewBreakGlassResponse(_message.Message):
    __slots__ = ("declaration", "receipt")
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    declaration: BreakGlassDeclaration
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, declaration: _Optional[_Union[BreakGlassDeclaration, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class RecordBreakGlassAccessRequest(_message.Message):
    __slots__ = ("pid", "data_classes", "purpose", "subtype")
    PID_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    pid: str
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    subtype: str
    def __init__(self, pid: _Optional[str] = ..., data_classes: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., subtype: _Optional[str] = ...) -> None: ...

class RecordBreakGlassAccessResponse(_message.Message):
    __slots__ = ("event_id", "declaration_id", "receipt")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECLARATION_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    declaration_id: str
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, event_id: _Optional[str] = ..., declaration_id: _Optional[str] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...
