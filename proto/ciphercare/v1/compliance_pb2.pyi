from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ciphercare.v1 import access_log_pb2 as _access_log_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_ORDER_UNSPECIFIED: _ClassVar[SearchOrder]
    SEARCH_ORDER_NEWEST_FIRST: _ClassVar[SearchOrder]
    SEARCH_ORDER_OLDEST_FIRST: _ClassVar[SearchOrder]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
    EXPORT_FORMAT_FHIR_BUNDLE: _ClassVar[ExportFormat]
    EXPORT_FORMAT_JSON_LINES: _ClassVar[ExportFormat]
SEARCH_ORDER_UNSPECIFIED: SearchOrder
SEARCH_ORDER_NEWEST_FIRST: SearchOrder
SEARCH_ORDER_OLDEST_FIRST: SearchOrder
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat
EXPORT_FORMAT_FHIR_BUNDLE: ExportFormat
EXPORT_FORMAT_JSON_LINES: ExportFormat

class AccessFilter(_message.Message):
    __slots__ = ("pid", "requester_subject", "organization", "purpose_of_use", "outcome", "recorded_from", "recorded_to")
    PID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FROM_FIELD_NUMBER: _ClassVar[int]
    RECORDED_TO_FIELD_NUMBER: _ClassVar[int]
    pid: str
    requester_subject: str
    organization: str
    purpose_of_use: str
    outcome: _access_log_pb2.AccessOutcome
    recorded_from: _timestamp_pb2.Timestamp
    recorded_to: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[str] = ..., requester_subject: _Optional[str] = ..., organization: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., outcome: _Optional[_Union[_access_log_pb2.AccessOutcome, str]] = ..., recorded_from: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_to: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListFlagsRequest(_message.Message):
    __slots__ = ("window_start", "window_end", "requester_subject", "organization", "page_size", "page_token")
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    requester_subject: str
    organization: str
    page_size: int
    page_token: str
    def __init__(self, window_start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., requester_subject: _Optional[str] = ..., organization: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class UnusualAccessFlag(_message.Message):
    __slots__ = ("id", "requester_subject", "organization", "window_start", "window_end", "score", "kind", "reasons", "detectors", "patients")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    requester_subject: str
    organization: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    score: float
    kind: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    detectors: _containers.RepeatedScalarFieldContainer[str]
    patients: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., requester_subject: _Optional[str] = ..., organization: _Optional[str] = ..., window_start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., score: _Optional[float] = ..., kind: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., detectors: _Optional[_Iterable[str]] = ..., patients: _Optional[_Iterable[str]] = ...) -> None: ...

class ListFlagsResponse(_message.Message):
    __slots__ = ("flags", "next_page_token", "total_flags", "events_examined", "history_events", "history_start", "history_end", "notice")
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FLAGS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_EXAMINED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_START_FIELD_NUMBER: _ClassVar[int]
    HISTORY_END_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    flags: _containers.RepeatedCompositeFieldContainer[UnusualAccessFlag]
    next_page_token: str
    total_flags: int
    events_examined: int
    history_events: int
    history_start: _timestamp_pb2.Timestamp
    history_end: _timestamp_pb2.Timestamp
    notice: str
    def __init__(self, flags: _Optional[_Iterable[_Union[UnusualAccessFlag, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_flags: _Optional[int] = ..., events_examined: _Optional[int] = ..., history_events: _Optional[int] = ..., history_start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., history_end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., notice: _Optional[str] = ...) -> None: ...

class ComplianceSearchRequest(_message.Message):
    __slots__ = ("filter", "order", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: AccessFilter
    order: SearchOrder
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[AccessFilter, _Mapping]] = ..., order: _Optional[_Union[SearchOrder, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ComplianceSearchResponse(_message.Message):
    __slots__ = ("events", "next_page_token", "previous_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_access_log_pb2.AccessEvent]
    next_page_token: str
    previous_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_access_log_pb2.AccessEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ...) -> None: ...

class AggregateRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: AccessFilter
    def __init__(self, filter: _Optional[_Union[AccessFilter, _Mapping]] = ...) -> None: ...

class OutcomeCount(_message.Message):
    __slots__ = ("outcome", "count")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    outcome: _access_log_pb2.AccessOutcome
    count: int
    def __init__(self, outcome: _Optional[_Union[_access_log_pb2.AccessOutcome, str]] = ..., count: _Optional[int] = ...) -> None: ...

class DayCount(_message.Message):
    __slots__ = ("day", "count", "denied", "errors")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    day: str
    count: int
    denied: int
    errors: int
    def __init__(self, day: _Optional[str] = ..., count: _Optional[int] = ..., denied: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class OrganizationCount(_message.Message):
    __slots__ = ("organization", "count", "denied", "errors")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    organization: str
    count: int
    denied: int
    errors: int
    def __init__(self, organization: _Optional[str] = ..., count: _Optional[int] = ..., denied: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class AggregateResponse(_message.Message):
    __slots__ = ("total", "by_outcome", "by_day", "by_organization")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    BY_DAY_FIELD_NUMBER: _ClassVar[int]
    BY_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    total: int
    by_outcome: _containers.RepeatedCompositeFieldContainer[OutcomeCount]
    by_day: _containers.RepeatedCompositeFieldContainer[DayCount]
    by_organization: _containers.RepeatedCompositeFieldContainer[OrganizationCount]
    def __init__(self, total: _Optional[int] = ..., by_outcome: _Optional[_Iterable[_Union[OutcomeCount, _Mapping]]] = ..., by_day: _Optional[_Iterable[_Union[DayCount, _Mapping]]] = ..., by_organization: _Optional[_Iterable[_Union[OrganizationCount, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("filter", "format")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    filter: AccessFilter
    format: ExportFormat
    def __init__(self, filter: _Optional[_Union[AccessFilter, _Mapping]] = ..., format: _Optional[_Union[ExportFormat, str]] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data", "rows", "total_rows")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    rows: int
    total_rows: int
    def __init__(self, data: _Optional[bytes] = ..., rows: _Optional[int] = ..., total_rows: _Optional[int] = ...) -> None: ...
