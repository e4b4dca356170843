from sessionmesh.v1 import common_pb2 as _common_pb2
from sessionmesh.v1 import mesh_pb2 as _mesh_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSessionRequest(_message.Message):
    __slots__ = ("tenant", "session_id", "auth_strategy", "labels", "takeover")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    auth_strategy: _common_pb2.AuthStrategy
    labels: _containers.ScalarMap[str, str]
    takeover: bool
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., auth_strategy: _Optional[_Union[_common_pb2.AuthStrategy, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., takeover: _Optional[bool] = ...) -> None: ...

class NodeSessionRequest(_message.Message):
    __slots__ = ("tenant", "session_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class NodeListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeSession(_message.Message):
    __slots__ = ("tenant", "session")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session: _common_pb2.Session
    def __init__(self, tenant: _Optional[str] = ..., session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class NodeListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[NodeSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[NodeSession, _Mapping]]] = ...) -> None: ...

class NodeWatchRequest(_message.Message):
    __slots__ = ("tenant", "session_id", "after_seq")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    after_seq: int
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeDrainRequest(_message.Message):
    __slots__ = ("done",)
    DONE_FIELD_NUMBER: _ClassVar[int]
    done: bool
    def __init__(self, done: _Optional[bool] = ...) -> None: ...

class NodeSendMessageRequest(_message.Message):
    __slots__ = ("tenant", "request")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    request: _mesh_pb2.SendMessageRequest
    def __init__(self, tenant: _Optional[str] = ..., request: _Optional[_Union[_mesh_pb2.SendMessageRequest, _Mapping]] = ...) -> None: ...

class NodeMediaRequest(_message.Message):
    __slots__ = ("tenant", "session_id", "message_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    message_id: str
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class NodeLatencyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TenantLatency(_message.Message):
    __slots__ = ("tenant", "histogram")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    histogram: _common_pb2.LatencyHistogram
    def __init__(self, tenant: _Optional[str] = ..., histogram: _Optional[_Union[_common_pb2.LatencyHistogram, _Mapping]] = ...) -> None: ...

class NodeLatency(_message.Message):
    __slots__ = ("histograms",)
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    histograms: _containers.RepeatedCompositeFieldContainer[TenantLatency]
    def __init__(self, histograms: _Optional[_Iterable[_Union[TenantLatency, _Mapping]]] = ...) -> None: ...
