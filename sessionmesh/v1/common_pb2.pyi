import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    STARTING: _ClassVar[SessionState]
    SCAN_QR_CODE: _ClassVar[SessionState]
    AUTHENTICATED: _ClassVar[SessionState]
    READY: _ClassVar[SessionState]
    STOPPED: _ClassVar[SessionState]
    LOGGED_OUT: _ClassVar[SessionState]
    FAILED: _ClassVar[SessionState]

class AuthStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_STRATEGY_UNSPECIFIED: _ClassVar[AuthStrategy]
    LOCAL: _ClassVar[AuthStrategy]
    REMOTE: _ClassVar[AuthStrategy]

class NodeHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_HEALTH_UNSPECIFIED: _ClassVar[NodeHealth]
    SERVING: _ClassVar[NodeHealth]
    NOT_SERVING: _ClassVar[NodeHealth]
    UNREACHABLE: _ClassVar[NodeHealth]
    DRAINING: _ClassVar[NodeHealth]

class MessageDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_DIRECTION_UNSPECIFIED: _ClassVar[MessageDirection]
    INBOUND: _ClassVar[MessageDirection]
    OUTBOUND: _ClassVar[MessageDirection]

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    TEXT: _ClassVar[MessageType]
    IMAGE: _ClassVar[MessageType]
    DOCUMENT: _ClassVar[MessageType]
    AUDIO: _ClassVar[MessageType]
    VIDEO: _ClassVar[MessageType]
    STICKER: _ClassVar[MessageType]
    OTHER: _ClassVar[MessageType]

class Ack(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_PENDING: _ClassVar[Ack]
    ACK_SERVER: _ClassVar[Ack]
    ACK_DEVICE: _ClassVar[Ack]
    ACK_READ: _ClassVar[Ack]
    ACK_PLAYED: _ClassVar[Ack]
    ACK_ERROR: _ClassVar[Ack]
SESSION_STATE_UNSPECIFIED: SessionState
STARTING: SessionState
SCAN_QR_CODE: SessionState
AUTHENTICATED: SessionState
READY: SessionState
STOPPED: SessionState
LOGGED_OUT: SessionState
FAILED: SessionState
AUTH_STRATEGY_UNSPECIFIED: AuthStrategy
LOCAL: AuthStrategy
REMOTE: AuthStrategy
NODE_HEALTH_UNSPECIFIED: NodeHealth
SERVING: NodeHealth
NOT_SERVING: NodeHealth
UNREACHABLE: NodeHealth
DRAINING: NodeHealth
MESSAGE_DIRECTION_UNSPECIFIED: MessageDirection
INBOUND: MessageDirection
OUTBOUND: MessageDirection
MESSAGE_TYPE_UNSPECIFIED: MessageType
TEXT: MessageType
IMAGE: MessageType
DOCUMENT: MessageType
AUDIO: MessageType
VIDEO: MessageType
STICKER: MessageType
OTHER: MessageType
ACK_PENDING: Ack
ACK_SERVER: Ack
ACK_DEVICE: Ack
ACK_READ: Ack
ACK_PLAYED: Ack
ACK_ERROR: Ack

class Session(_message.Message):
    __slots__ = ("session_id", "state", "node_id", "auth_strategy", "phone", "created_at", "updated_at", "ready_at", "last_error", "labels", "last_seq")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: SessionState
    node_id: str
    auth_strategy: AuthStrategy
    phone: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    ready_at: _timestamp_pb2.Timestamp
    last_error: str
    labels: _containers.ScalarMap[str, str]
    last_seq: int
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., node_id: _Optional[str] = ..., auth_strategy: _Optional[_Union[AuthStrategy, str]] = ..., phone: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class QrCode(_message.Message):
    __slots__ = ("code", "attempt", "expires_at")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    code: str
    attempt: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, code: _Optional[str] = ..., attempt: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: SessionState
    reason: str
    def __init__(self, state: _Optional[_Union[SessionState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Loading(_message.Message):
    __slots__ = ("percent",)
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    percent: int
    def __init__(self, percent: _Optional[int] = ...) -> None: ...

class MediaInfo(_message.Message):
    __slots__ = ("mimetype", "filename", "size", "downloadable")
    MIMETYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADABLE_FIELD_NUMBER: _ClassVar[int]
    mimetype: str
    filename: str
    size: int
    downloadable: bool
    def __init__(self, mimetype: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., downloadable: _Optional[bool] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "direction", "chat_id", "sender", "timestamp", "type", "text", "media", "reply_to", "ack")
    ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    id: str
    direction: MessageDirection
    chat_id: str
    sender: str
    timestamp: _timestamp_pb2.Timestamp
    type: MessageType
    text: str
    media: MediaInfo
    reply_to: str
    ack: Ack
    def __init__(self, id: _Optional[str] = ..., direction: _Optional[_Union[MessageDirection, str]] = ..., chat_id: _Optional[str] = ..., sender: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[MessageType, str]] = ..., text: _Optional[str] = ..., media: _Optional[_Union[MediaInfo, _Mapping]] = ..., reply_to: _Optional[str] = ..., ack: _Optional[_Union[Ack, str]] = ...) -> None: ...

class MessageAck(_message.Message):
    __slots__ = ("message_id", "chat_id", "ack")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    chat_id: str
    ack: Ack
    def __init__(self, message_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., ack: _Optional[_Union[Ack, str]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("session_id", "seq", "time", "qr", "state", "loading", "message", "ack")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADING_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    qr: QrCode
    state: StateChange
    loading: Loading
    message: Message
    ack: MessageAck
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., qr: _Optional[_Union[QrCode, _Mapping]] = ..., state: _Optional[_Union[StateChange, _Mapping]] = ..., loading: _Optional[_Union[Loading, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., ack: _Optional[_Union[MessageAck, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "address", "health", "sessions", "capacity", "memory_bytes", "missing_hooks", "wa_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MISSING_HOOKS_FIELD_NUMBER: _ClassVar[int]
    WA_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    health: NodeHealth
    sessions: int
    capacity: int
    memory_bytes: int
    missing_hooks: _containers.RepeatedScalarFieldContainer[str]
    wa_version: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., health: _Optional[_Union[NodeHealth, str]] = ..., sessions: _Optional[int] = ..., capacity: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., missing_hooks: _Optional[_Iterable[str]] = ..., wa_version: _Optional[str] = ...) -> None: ...

class LatencyHistogram(_message.Message):
    __slots__ = ("phase", "auth_strategy", "bounds", "counts", "sum", "count")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    AUTH_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    auth_strategy: AuthStrategy
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum: float
    count: int
    def __init__(self, phase: _Optional[str] = ..., auth_strategy: _Optional[_Union[AuthStrategy, str]] = ..., bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...
