from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ciphercare.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_OUTCOME_UNSPECIFIED: _ClassVar[AccessOutcome]
    ACCESS_OUTCOME_SUCCESS: _ClassVar[AccessOutcome]
    ACCESS_OUTCOME_DENIED: _ClassVar[AccessOutcome]
    ACCESS_OUTCOME_ERROR: _ClassVar[AccessOutcome]
ACCESS_OUTCOME_UNSPECIFIED: AccessOutcome
ACCESS_OUTCOME_SUCCESS: AccessOutcome
ACCESS_OUTCOME_DENIED: AccessOutcome
ACCESS_OUTCOME_ERROR: AccessOutcome

class AccessEvent(_message.Message):
    __slots__ = ("id", "sequence", "type", "subtype", "action", "recorded", "outcome", "outcome_description", "purpose_of_use", "agent", "source_observer", "pid", "consent_id", "model_sha256", "data_classes", "detail_sha256", "tx_id", "repeat_count", "consent_basis")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OBSERVER_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_SHA256_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    REPEAT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_BASIS_FIELD_NUMBER: _ClassVar[int]
    id: str
    sequence: int
    type: str
    subtype: str
    action: str
    recorded: _timestamp_pb2.Timestamp
    outcome: AccessOutcome
    outcome_description: str
    purpose_of_use: str
    agent: _common_pb2.Actor
    source_observer: str
    pid: str
    consent_id: str
    model_sha256: str
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    detail_sha256: str
    tx_id: str
    repeat_count: int
    consent_basis: str
    def __init__(self, id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., subtype: _Optional[str] = ..., action: _Optional[str] = ..., recorded: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[AccessOutcome, str]] = ..., outcome_description: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., agent: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., source_observer: _Optional[str] = ..., pid: _Optional[str] = ..., consent_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., data_classes: _Optional[_Iterable[str]] = ..., detail_sha256: _Optional[str] = ..., tx_id: _Optional[str] = ..., repeat_count: _Optional[int] = ..., consent_basis: _Optional[str] = ...) -> None: ...

class RecordRequest(_message.Message):
    __slots__ = ("type", "subtype", "action", "outcome", "outcome_description", "purpose_of_use", "pid", "consent_id", "data_classes", "source_observer", "detail_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OBSERVER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    subtype: str
    action: str
    outcome: AccessOutcome
    outcome_description: str
    purpose_of_use: str
    pid: str
    consent_id: str
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    source_observer: str
    detail_json: str
    def __init__(self, type: _Optional[str] = ..., subtype: _Optional[str] = ..., action: _Optional[str] = ..., outcome: _Optional[_Union[AccessOutcome, str]] = ..., outcome_description: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., pid: _Optional[str] = ..., consent_id: _Optional[str] = ..., data_classes: _Optional[_Iterable[str]] = ..., source_observer: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class RecordResponse(_message.Message):
    __slots__ = ("event", "receipt")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    event: AccessEvent
    receipt: _common_pb2.LedgerReceipt
    def __init__(self, event: _Optional[_Union[AccessEvent, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class GetAccessEventRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class GetAccessEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: AccessEvent
    def __init__(self, event: _Optional[_Union[AccessEvent, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("pid", "requester_subject", "organization", "purpose_of_use", "outcome", "recorded_from", "recorded_to", "page_size", "page_token")
    PID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FROM_FIELD_NUMBER: _ClassVar[int]
    RECORDED_TO_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pid: str
    requester_subject: str
    organization: str
    purpose_of_use: str
    outcome: AccessOutcome
    recorded_from: _timestamp_pb2.Timestamp
    recorded_to: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, pid: _Optional[str] = ..., requester_subject: _Optional[str] = ..., organization: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., outcome: _Optional[_Union[AccessOutcome, str]] = ..., recorded_from: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_to: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AccessEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AccessEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("tree_size", "cosigned")
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    COSIGNED_FIELD_NUMBER: _ClassVar[int]
    tree_size: int
    cosigned: bool
    def __init__(self, tree_size: _Optional[int] = ..., cosigned: bool = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "verifier_key", "cosignatures")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_KEY_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURES_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _common_pb2.Checkpoint
    verifier_key: str
    cosignatures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., verifier_key: _Optional[str] = ..., cosignatures: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("event_id", "sequence", "tree_size")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    sequence: int
    tree_size: int
    def __init__(self, event_id: _Optional[str] = ..., sequence: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("leaf_index", "tree_size", "hashes", "leaf", "checkpoint", "batch_membership")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BATCH_MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    leaf: bytes
    checkpoint: _common_pb2.Checkpoint
    batch_membership: _common_pb2.AccessBatchMembership
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., leaf: _Optional[bytes] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., batch_membership: _Optional[_Union[_common_pb2.AccessBatchMembership, _Mapping]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first_tree_size", "second_tree_size")
    FIRST_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    first_tree_size: int
    second_tree_size: int
    def __init__(self, first_tree_size: _Optional[int] = ..., second_tree_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("first_tree_size", "second_tree_size", "hashes", "first_checkpoint", "second_checkpoint")
    FIRST_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SECOND_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    first_tree_size: int
    second_tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    first_checkpoint: _common_pb2.Checkpoint
    second_checkpoint: _common_pb2.Checkpoint
    def __init__(self, first_tree_size: _Optional[int] = ..., second_tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., first_checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., second_checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start_sequence", "pid", "organization")
    START_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    start_sequence: int
    pid: str
    organization: str
    def __init__(self, start_sequence: _Optional[int] = ..., pid: _Optional[str] = ..., organization: _Optional[str] = ...) -> None: ...
