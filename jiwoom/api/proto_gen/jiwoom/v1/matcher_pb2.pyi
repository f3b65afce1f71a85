import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Signal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_UNSPECIFIED: _ClassVar[Signal]
    SIGNAL_PDQ: _ClassVar[Signal]
    SIGNAL_EMBEDDING: _ClassVar[Signal]
    SIGNAL_FACE: _ClassVar[Signal]
    SIGNAL_AUDIO: _ClassVar[Signal]

class TargetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_UNSPECIFIED: _ClassVar[TargetKind]
    TARGET_REFERENCE: _ClassVar[TargetKind]
    TARGET_SIGHTING: _ClassVar[TargetKind]

class Verification(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERIFICATION_UNSPECIFIED: _ClassVar[Verification]
    VERIFICATION_NOT_NEEDED: _ClassVar[Verification]
    VERIFICATION_VERIFIED: _ClassVar[Verification]
SIGNAL_UNSPECIFIED: Signal
SIGNAL_PDQ: Signal
SIGNAL_EMBEDDING: Signal
SIGNAL_FACE: Signal
SIGNAL_AUDIO: Signal
TARGET_UNSPECIFIED: TargetKind
TARGET_REFERENCE: TargetKind
TARGET_SIGHTING: TargetKind
VERIFICATION_UNSPECIFIED: Verification
VERIFICATION_NOT_NEEDED: Verification
VERIFICATION_VERIFIED: Verification

class Thresholds(_message.Message):
    __slots__ = ("pdq_max_distance", "embedding_min_similarity", "face_max_distance", "by_signal")
    class BySignalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PDQ_MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    FACE_MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    BY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    pdq_max_distance: int
    embedding_min_similarity: float
    face_max_distance: float
    by_signal: _containers.ScalarMap[str, float]
    def __init__(self, pdq_max_distance: _Optional[int] = ..., embedding_min_similarity: _Optional[float] = ..., face_max_distance: _Optional[float] = ..., by_signal: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("url", "page_url", "site", "title", "author", "posted_at", "text", "suspected", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    PAGE_URL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SUSPECTED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    url: str
    page_url: str
    site: str
    title: str
    author: str
    posted_at: _timestamp_pb2.Timestamp
    text: str
    suspected: bool
    extra: _containers.ScalarMap[str, str]
    def __init__(self, url: _Optional[str] = ..., page_url: _Optional[str] = ..., site: _Optional[str] = ..., title: _Optional[str] = ..., author: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text: _Optional[str] = ..., suspected: _Optional[bool] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PdqHashes(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterReferenceRequest(_message.Message):
    __slots__ = ("case_id", "media", "pdq", "skip_retro_hunt")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    PDQ_FIELD_NUMBER: _ClassVar[int]
    SKIP_RETRO_HUNT_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    media: bytes
    pdq: PdqHashes
    skip_retro_hunt: bool
    def __init__(self, case_id: _Optional[str] = ..., media: _Optional[bytes] = ..., pdq: _Optional[_Union[PdqHashes, _Mapping]] = ..., skip_retro_hunt: _Optional[bool] = ...) -> None: ...

class RegisterReferenceResponse(_message.Message):
    __slots__ = ("reference_id", "case_id", "created", "media", "matches")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    reference_id: int
    case_id: str
    created: bool
    media: MediaInfo
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    def __init__(self, reference_id: _Optional[int] = ..., case_id: _Optional[str] = ..., created: _Optional[bool] = ..., media: _Optional[_Union[MediaInfo, _Mapping]] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ...) -> None: ...

class MediaInfo(_message.Message):
    __slots__ = ("kind", "sha256", "width", "height", "duration_s", "frames")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    sha256: str
    width: int
    height: int
    duration_s: float
    frames: int
    def __init__(self, kind: _Optional[str] = ..., sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_s: _Optional[float] = ..., frames: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start_s", "end_s")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ...) -> None: ...

class FaceAge(_message.Message):
    __slots__ = ("timestamp_s", "box", "age_mean", "age_std", "p_under_19", "under_19")
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    AGE_MEAN_FIELD_NUMBER: _ClassVar[int]
    AGE_STD_FIELD_NUMBER: _ClassVar[int]
    P_UNDER_19_FIELD_NUMBER: _ClassVar[int]
    UNDER_19_FIELD_NUMBER: _ClassVar[int]
    timestamp_s: float
    box: Box
    age_mean: float
    age_std: float
    p_under_19: float
    under_19: bool
    def __init__(self, timestamp_s: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., age_mean: _Optional[float] = ..., age_std: _Optional[float] = ..., p_under_19: _Optional[float] = ..., under_19: _Optional[bool] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("target", "reference_id", "case_id", "sighting_id", "sighting_source", "signal", "score", "threshold", "query_segment", "target_segment", "matched_frames", "query_box", "faces", "under_19", "confidence", "signal_name")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGHTING_ID_FIELD_NUMBER: _ClassVar[int]
    SIGHTING_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    QUERY_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    QUERY_BOX_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    UNDER_19_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    target: TargetKind
    reference_id: int
    case_id: str
    sighting_id: int
    sighting_source: Source
    signal: Signal
    score: float
    threshold: float
    query_segment: Segment
    target_segment: Segment
    matched_frames: int
    query_box: Box
    faces: _containers.RepeatedCompositeFieldContainer[FaceAge]
    under_19: bool
    confidence: Confidence
    signal_name: str
    def __init__(self, target: _Optional[_Union[TargetKind, str]] = ..., reference_id: _Optional[int] = ..., case_id: _Optional[str] = ..., sighting_id: _Optional[int] = ..., sighting_source: _Optional[_Union[Source, _Mapping]] = ..., signal: _Optional[_Union[Signal, str]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., query_segment: _Optional[_Union[Segment, _Mapping]] = ..., target_segment: _Optional[_Union[Segment, _Mapping]] = ..., matched_frames: _Optional[int] = ..., query_box: _Optional[_Union[Box, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[FaceAge, _Mapping]]] = ..., under_19: _Optional[bool] = ..., confidence: _Optional[_Union[Confidence, _Mapping]] = ..., signal_name: _Optional[str] = ...) -> None: ...

class Confidence(_message.Message):
    __slots__ = ("p_false", "expected_false_matches", "verification", "face_only", "normalised_score", "audio_only")
    P_FALSE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FALSE_MATCHES_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    FACE_ONLY_FIELD_NUMBER: _ClassVar[int]
    NORMALISED_SCORE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_ONLY_FIELD_NUMBER: _ClassVar[int]
    p_false: float
    expected_false_matches: float
    verification: Verification
    face_only: bool
    normalised_score: float
    audio_only: bool
    def __init__(self, p_false: _Optional[float] = ..., expected_false_matches: _Optional[float] = ..., verification: _Optional[_Union[Verification, str]] = ..., face_only: _Optional[bool] = ..., normalised_score: _Optional[float] = ..., audio_only: _Optional[bool] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("media", "source", "include_sightings")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    media: bytes
    source: Source
    include_sightings: bool
    def __init__(self, media: _Optional[bytes] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., include_sightings: _Optional[bool] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("media", "sighting_id", "matches", "youth_faces", "benign", "exposures", "redacted_title", "redacted_text")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    SIGHTING_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    YOUTH_FACES_FIELD_NUMBER: _ClassVar[int]
    BENIGN_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    REDACTED_TITLE_FIELD_NUMBER: _ClassVar[int]
    REDACTED_TEXT_FIELD_NUMBER: _ClassVar[int]
    media: MediaInfo
    sighting_id: int
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    youth_faces: _containers.RepeatedCompositeFieldContainer[FaceAge]
    benign: bool
    exposures: _containers.RepeatedCompositeFieldContainer[Exposure]
    redacted_title: str
    redacted_text: str
    def __init__(self, media: _Optional[_Union[MediaInfo, _Mapping]] = ..., sighting_id: _Optional[int] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., youth_faces: _Optional[_Iterable[_Union[FaceAge, _Mapping]]] = ..., benign: _Optional[bool] = ..., exposures: _Optional[_Iterable[_Union[Exposure, _Mapping]]] = ..., redacted_title: _Optional[str] = ..., redacted_text: _Optional[str] = ...) -> None: ...

class Exposure(_message.Message):
    __slots__ = ("case_id", "kind", "field")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    kind: str
    field: str
    def __init__(self, case_id: _Optional[str] = ..., kind: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class StreamMedia(_message.Message):
    __slots__ = ("data", "source", "include_sightings")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    source: Source
    include_sightings: bool
    def __init__(self, data: _Optional[bytes] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., include_sightings: _Optional[bool] = ...) -> None: ...

class StreamFrame(_message.Message):
    __slots__ = ("image", "timestamp_s")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    timestamp_s: float
    def __init__(self, image: _Optional[bytes] = ..., timestamp_s: _Optional[float] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("source", "include_sightings")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    source: Source
    include_sightings: bool
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ..., include_sightings: _Optional[bool] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("item_id", "media", "frame", "end")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    media: StreamMedia
    frame: StreamFrame
    end: StreamEnd
    def __init__(self, item_id: _Optional[str] = ..., media: _Optional[_Union[StreamMedia, _Mapping]] = ..., frame: _Optional[_Union[StreamFrame, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("item_id", "result", "error_code", "error_message")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    result: MatchResponse
    error_code: int
    error_message: str
    def __init__(self, item_id: _Optional[str] = ..., result: _Optional[_Union[MatchResponse, _Mapping]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class ForgetReferenceRequest(_message.Message):
    __slots__ = ("reference_id", "reason")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    reference_id: int
    reason: str
    def __init__(self, reference_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ForgetCaseRequest(_message.Message):
    __slots__ = ("case_id", "reason")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    reason: str
    def __init__(self, case_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Identifier(_message.Message):
    __slots__ = ("kind", "value")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    value: str
    def __init__(self, kind: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RecordIdentifiersRequest(_message.Message):
    __slots__ = ("case_id", "identifiers")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    identifiers: _containers.RepeatedCompositeFieldContainer[Identifier]
    def __init__(self, case_id: _Optional[str] = ..., identifiers: _Optional[_Iterable[_Union[Identifier, _Mapping]]] = ...) -> None: ...

class RecordIdentifiersResponse(_message.Message):
    __slots__ = ("stored", "total")
    STORED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stored: int
    total: int
    def __init__(self, stored: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ForgetResponse(_message.Message):
    __slots__ = ("references_forgotten", "matches_deleted")
    REFERENCES_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    MATCHES_DELETED_FIELD_NUMBER: _ClassVar[int]
    references_forgotten: int
    matches_deleted: int
    def __init__(self, references_forgotten: _Optional[int] = ..., matches_deleted: _Optional[int] = ...) -> None: ...

class ConfigureCaseRequest(_message.Message):
    __slots__ = ("case_id", "thresholds")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    thresholds: Thresholds
    def __init__(self, case_id: _Optional[str] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ...) -> None: ...

class Case(_message.Message):
    __slots__ = ("case_id", "thresholds", "references")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    thresholds: Thresholds
    references: int
    def __init__(self, case_id: _Optional[str] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., references: _Optional[int] = ...) -> None: ...

class MarkBenignRequest(_message.Message):
    __slots__ = ("media", "sighting_id", "note", "case_id")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    SIGHTING_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    media: bytes
    sighting_id: int
    note: str
    case_id: str
    def __init__(self, media: _Optional[bytes] = ..., sighting_id: _Optional[int] = ..., note: _Optional[str] = ..., case_id: _Optional[str] = ...) -> None: ...

class MarkBenignResponse(_message.Message):
    __slots__ = ("benign_id",)
    BENIGN_ID_FIELD_NUMBER: _ClassVar[int]
    benign_id: int
    def __init__(self, benign_id: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexStats(_message.Message):
    __slots__ = ("collection", "signal", "vectors", "signal_name", "owners", "memory_bytes", "device")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    signal: Signal
    vectors: int
    signal_name: str
    owners: int
    memory_bytes: int
    device: str
    def __init__(self, collection: _Optional[str] = ..., signal: _Optional[_Union[Signal, str]] = ..., vectors: _Optional[int] = ..., signal_name: _Optional[str] = ..., owners: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("cases", "references", "sightings", "matches", "benign", "indexes", "inference", "uptime_s")
    CASES_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    BENIGN_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    cases: int
    references: int
    sightings: int
    matches: int
    benign: int
    indexes: _containers.RepeatedCompositeFieldContainer[IndexStats]
    inference: str
    uptime_s: float
    def __init__(self, cases: _Optional[int] = ..., references: _Optional[int] = ..., sightings: _Optional[int] = ..., matches: _Optional[int] = ..., benign: _Optional[int] = ..., indexes: _Optional[_Iterable[_Union[IndexStats, _Mapping]]] = ..., inference: _Optional[str] = ..., uptime_s: _Optional[float] = ...) -> None: ...
