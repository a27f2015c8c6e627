from ciphercare.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PatientStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PATIENT_STATUS_UNSPECIFIED: _ClassVar[PatientStatus]
    PATIENT_STATUS_PERMITTED: _ClassVar[PatientStatus]
    PATIENT_STATUS_DENIED: _ClassVar[PatientStatus]
    PATIENT_STATUS_SCORED: _ClassVar[PatientStatus]
    PATIENT_STATUS_ERROR: _ClassVar[PatientStatus]
PATIENT_STATUS_UNSPECIFIED: PatientStatus
PATIENT_STATUS_PERMITTED: PatientStatus
PATIENT_STATUS_DENIED: PatientStatus
PATIENT_STATUS_SCORED: PatientStatus
PATIENT_STATUS_ERROR: PatientStatus

class RegisterContextRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class RegisterContextResponse(_message.Message):
    __slots__ = ("context_id", "size_bytes", "already_registered")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    size_bytes: int
    already_registered: bool
    def __init__(self, context_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., already_registered: bool = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureGrid(_message.Message):
    __slots__ = ("name", "type", "description", "edges", "categories", "imputation", "min", "max")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    IMPUTATION_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    edges: _containers.RepeatedScalarFieldContainer[float]
    categories: _containers.RepeatedScalarFieldContainer[str]
    imputation: float
    min: float
    max: float
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., edges: _Optional[_Iterable[float]] = ..., categories: _Optional[_Iterable[str]] = ..., imputation: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class CkksParameters(_message.Message):
    __slots__ = ("poly_modulus_degree", "coeff_mod_bit_sizes", "slots", "bit_scale_log2", "result_scale_log2", "security_level", "security_reference")
    POLY_MODULUS_DEGREE_FIELD_NUMBER: _ClassVar[int]
    COEFF_MOD_BIT_SIZES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BIT_SCALE_LOG2_FIELD_NUMBER: _ClassVar[int]
    RESULT_SCALE_LOG2_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SECURITY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    poly_modulus_degree: int
    coeff_mod_bit_sizes: _containers.RepeatedScalarFieldContainer[int]
    slots: int
    bit_scale_log2: int
    result_scale_log2: int
    security_level: int
    security_reference: str
    def __init__(self, poly_modulus_degree: _Optional[int] = ..., coeff_mod_bit_sizes: _Optional[_Iterable[int]] = ..., slots: _Optional[int] = ..., bit_scale_log2: _Optional[int] = ..., result_scale_log2: _Optional[int] = ..., security_level: _Optional[int] = ..., security_reference: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_sha256", "model_name", "model_version", "features", "edge_count", "parameters", "label_description", "metrics", "deployment_receipt")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EDGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    model_name: str
    model_version: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureGrid]
    edge_count: int
    parameters: CkksParameters
    label_description: str
    metrics: _containers.ScalarMap[str, float]
    deployment_receipt: _common_pb2.LedgerReceipt
    def __init__(self, model_sha256: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureGrid, _Mapping]]] = ..., edge_count: _Optional[int] = ..., parameters: _Optional[_Union[CkksParameters, _Mapping]] = ..., label_description: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., deployment_receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ...) -> None: ...

class ScoreHeader(_message.Message):
    __slots__ = ("context_id", "model_sha256", "purpose_of_use", "data_class", "pids")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    model_sha256: str
    purpose_of_use: str
    data_class: str
    pids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, context_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., data_class: _Optional[str] = ..., pids: _Optional[_Iterable[str]] = ...) -> None: ...

class BitCiphertext(_message.Message):
    __slots__ = ("batch_index", "edge_index", "ciphertext")
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    EDGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    batch_index: int
    edge_index: int
    ciphertext: bytes
    def __init__(self, batch_index: _Optional[int] = ..., edge_index: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("header", "bits")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    header: ScoreHeader
    bits: BitCiphertext
    def __init__(self, header: _Optional[_Union[ScoreHeader, _Mapping]] = ..., bits: _Optional[_Union[BitCiphertext, _Mapping]] = ...) -> None: ...

class PatientOutcome(_message.Message):
    __slots__ = ("pid", "status", "reason_code", "consent_id", "batch_index", "slot", "access_event_id", "receipt", "batch_membership")
    PID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    BATCH_MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    pid: str
    status: PatientStatus
    reason_code: str
    consent_id: str
    batch_index: int
    slot: int
    access_event_id: str
    receipt: _common_pb2.LedgerReceipt
    batch_membership: _common_pb2.AccessBatchMembership
    def __init__(self, pid: _Optional[str] = ..., status: _Optional[_Union[PatientStatus, str]] = ..., reason_code: _Optional[str] = ..., consent_id: _Optional[str] = ..., batch_index: _Optional[int] = ..., slot: _Optional[int] = ..., access_event_id: _Optional[str] = ..., receipt: _Optional[_Union[_common_pb2.LedgerReceipt, _Mapping]] = ..., batch_membership: _Optional[_Union[_common_pb2.AccessBatchMembership, _Mapping]] = ...) -> None: ...

class ScoreDecisions(_message.Message):
    __slots__ = ("outcomes", "permitted_count", "batch_count", "edge_count", "final")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    EDGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[PatientOutcome]
    permitted_count: int
    batch_count: int
    edge_count: int
    final: bool
    def __init__(self, outcomes: _Optional[_Iterable[_Union[PatientOutcome, _Mapping]]] = ..., permitted_count: _Optional[int] = ..., batch_count: _Optional[int] = ..., edge_count: _Optional[int] = ..., final: bool = ...) -> None: ...

class EncryptedScore(_message.Message):
    __slots__ = ("batch_index", "ciphertext", "patient_count", "outcomes", "more")
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    PATIENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    batch_index: int
    ciphertext: bytes
    patient_count: int
    outcomes: _containers.RepeatedCompositeFieldContainer[PatientOutcome]
    more: bool
    def __init__(self, batch_index: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., patient_count: _Optional[int] = ..., outcomes: _Optional[_Iterable[_Union[PatientOutcome, _Mapping]]] = ..., more: bool = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("decisions", "score")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    decisions: ScoreDecisions
    score: EncryptedScore
    def __init__(self, decisions: _Optional[_Union[ScoreDecisions, _Mapping]] = ..., score: _Optional[_Union[EncryptedScore, _Mapping]] = ...) -> None: ...
