import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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

class SessionEvent(_message.Message):
    __slots__ = ("session_id", "seq", "time", "qr", "state", "loading")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADING_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    qr: QrCode
    state: StateChange
    loading: Loading
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., qr: _Optional[_Union[QrCode, _Mapping]] = ..., state: _Optional[_Union[StateChange, _Mapping]] = ..., loading: _Optional[_Union[Loading, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "address", "health", "sessions", "capacity", "memory_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    health: NodeHealth
    sessions: int
    capacity: int
    memory_bytes: int
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., health: _Optional[_Union[NodeHealth, str]] = ..., sessions: _Optional[int] = ..., capacity: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...
