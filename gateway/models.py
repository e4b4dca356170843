"""The HTTP API's JSON: request bodies with the router's own rules as JSON Schema, replies, and
their conversion from the protobuf messages.

Field names are the proto's; enums are their proto names; timestamps are RFC 3339 (null when
unset); 64-bit integers are JSON numbers.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from sessionmesh.sending import (
    CHAT_RE,
    KEY_RE,
    MAX_CAPTION,
    MAX_FILENAME,
    MAX_TEXT,
    MAX_URL,
    MESSAGE_ID_RE,
    MIMETYPE_RE,
)
from sessionmesh.v1 import common_pb2, mesh_pb2
from sessionmesh.validation import LABEL_KEY_RE, MAX_LABEL_VALUE, MAX_LABELS, SESSION_ID_RE

# The router's rules, anchored for JSON Schema (ECMA-262 regular expressions).
SESSION_ID_PATTERN = f"^{SESSION_ID_RE.pattern}$"
LABEL_KEY_PATTERN = f"^{LABEL_KEY_RE.pattern}$"
MESSAGE_ID_PATTERN = f"^(?:{MESSAGE_ID_RE.pattern})$"
KEY_PATTERN = f"^{KEY_RE.pattern}$"
# A phone number (6-15 digits; spaces, '+', '(', ')' and '-' ignored) or a chat id.
TO_PATTERN = rf"^(?:[ +()-]*(?:[0-9][ +()-]*){{6,15}}|{CHAT_RE.pattern})$"
MIMETYPE_PATTERN = f"^{MIMETYPE_RE.pattern.replace('[a-z0-9]', '[A-Za-z0-9]')}$"
FILENAME_PATTERN = r"^[^/\\\u0000\r\n]*$"
# http(s), an ASCII host name or IPv4 address (no IPv6 literal), a port up to 65535, then no
# spaces: what the router's own check (urlsplit) takes without tripping.
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
    rf"(?::{_PORT})?(?:[/?#][\x21-\x7e]*)?$"
)
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
NODE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
PAGE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{0,200}$"
WEBHOOK_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"

SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


def field_name(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A validation error's location as a field name (`media.url`, `labels`), without the
    request part (body, query...) or the union member tried."""
    parts = [str(p) for p in loc if p not in _LOC_NOISE]
    return ".".join(parts) or "body"


_LOC_NOISE = {"body", "query", "path", "header", "SendText", "SendMedia", "MediaUrl", "MediaData"}


class SessionState(enum.StrEnum):
    SESSION_STATE_UNSPECIFIED = "SESSION_STATE_UNSPECIFIED"
    STARTING = "STARTING"
    SCAN_QR_CODE = "SCAN_QR_CODE"
    AUTHENTICATED = "AUTHENTICATED"
    READY = "READY"
    STOPPED = "STOPPED"
    LOGGED_OUT = "LOGGED_OUT"
    FAILED = "FAILED"


class AuthStrategy(enum.StrEnum):
    AUTH_STRATEGY_UNSPECIFIED = "AUTH_STRATEGY_UNSPECIFIED"
    LOCAL = "LOCAL"
    REMOTE = "REMOTE"


class NodeHealth(enum.StrEnum):
    NODE_HEALTH_UNSPECIFIED = "NODE_HEALTH_UNSPECIFIED"
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    UNREACHABLE = "UNREACHABLE"
    DRAINING = "DRAINING"


class MessageDirection(enum.StrEnum):
    MESSAGE_DIRECTION_UNSPECIFIED = "MESSAGE_DIRECTION_UNSPECIFIED"
    INBOUND = "INBOUND"
    OUTBOUND = "OUTBOUND"


class MessageType(enum.StrEnum):
    MESSAGE_TYPE_UNSPECIFIED = "MESSAGE_TYPE_UNSPECIFIED"
    TEXT = "TEXT"
    IMAGE = "IMAGE"
    DOCUMENT = "DOCUMENT"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    STICKER = "STICKER"
    OTHER = "OTHER"


class Ack(enum.StrEnum):
    """WhatsApp's delivery states: -1 error, 0 pending, 1 server, 2 device, 3 read, 4 played."""

    ACK_PENDING = "ACK_PENDING"
    ACK_SERVER = "ACK_SERVER"
    ACK_DEVICE = "ACK_DEVICE"
    ACK_READ = "ACK_READ"
    ACK_PLAYED = "ACK_PLAYED"
    ACK_ERROR = "ACK_ERROR"


class DeliveryOutcome(enum.StrEnum):
    DELIVERY_OUTCOME_UNSPECIFIED = "DELIVERY_OUTCOME_UNSPECIFIED"
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"
    DEAD = "DEAD"


class WebhookEvent(enum.StrEnum):
    SESSION_STATUS = "session.status"
    QR = "qr"
    MESSAGE = "message"
    MESSAGE_ACK = "message.ack"


# The enums above mirror the proto; tests/gateway checks they stay in step.
PROTO_ENUMS: dict[type[enum.StrEnum], Any] = {
    SessionState: common_pb2.SessionState,
    AuthStrategy: common_pb2.AuthStrategy,
    NodeHealth: common_pb2.NodeHealth,
    MessageDirection: common_pb2.MessageDirection,
    MessageType: common_pb2.MessageType,
    Ack: common_pb2.Ack,
    DeliveryOutcome: mesh_pb2.DeliveryOutcome,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- replies -----------------------------------------------------------------------------------


class Session(BaseModel):
    """A hosted WhatsApp Web session."""

    session_id: str
    state: SessionState
    node_id: str = Field(description="the node holding it")
    auth_strategy: AuthStrategy
    phone: str = Field(description="the linked phone's number, once authenticated")
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    ready_at: dt.datetime | None
    last_error: str
    labels: dict[str, str]
    last_seq: int = Field(ge=0, description="seq of the newest event in the session's log")


class ListSessionsResponse(BaseModel):
    sessions: list[Session]
    next_page_token: str = Field(description="pass as page_token for the next page; empty: last")


class QrCode(BaseModel):
    code: str = Field(description="ref,noiseKeyB64,identityKeyB64,advSecretB64,platform")
    attempt: int = Field(description="1 for the first QR of a linking attempt")
    expires_at: dt.datetime | None


class QrRaw(QrCode):
    """The QR's payload, from the session's latest QR event."""

    seq: int = Field(ge=1, description="the QR event's seq")


class QrImage(BaseModel):
    """The QR as a PNG image, base64-encoded (WAHA's shape)."""

    mimetype: Literal["image/png"]
    data: str = Field(
        description="base64 of the PNG", json_schema_extra={"contentEncoding": "base64"}
    )


class StateChange(BaseModel):
    state: SessionState
    reason: str


class Loading(BaseModel):
    percent: int


class MediaInfo(BaseModel):
    mimetype: str
    filename: str
    size: int
    downloadable: bool = Field(description="GET .../messages/{message_id}/media fetches it")


class Message(BaseModel):
    id: str = Field(description="WhatsApp's serialized message id")
    direction: MessageDirection
    chat_id: str
    sender: str
    timestamp: dt.datetime | None
    type: MessageType
    text: str = Field(description="the body, or a media message's caption")
    media: MediaInfo | None
    reply_to: str
    ack: Ack


class MessageAck(BaseModel):
    message_id: str
    chat_id: str
    ack: Ack


EventType = Literal["qr", "state", "loading", "message", "ack"]


class SessionEvent(BaseModel):
    """One event of a session's stream: `type` names the member that is set. In the SSE stream
    it is the `data` of an event whose `id` is `seq` and whose `event` is `type`."""

    session_id: str
    seq: int = Field(ge=1, description="1, 2, 3, ... per session, never reused")
    time: dt.datetime | None
    type: EventType
    qr: QrCode | None = None
    state: StateChange | None = None
    loading: Loading | None = None
    message: Message | None = None
    ack: MessageAck | None = None


class SendMessageResponse(BaseModel):
    message_id: str
    ack: Ack = Field(description="the ack reached when the call returned (at least ACK_SERVER)")
    duplicate: bool = Field(
        description="an earlier call with this Idempotency-Key sent it; nothing new was sent"
    )


class NodeStatus(BaseModel):
    node_id: str
    address: str = Field(description="empty unless the caller is an admin")
    health: NodeHealth
    sessions: int
    capacity: int
    memory_bytes: int
    missing_hooks: list[str]
    wa_version: str


class ClusterStatus(BaseModel):
    nodes: list[NodeStatus]


class DrainNodeResponse(BaseModel):
    node_id: str
    moved: int
    stayed: int
    failed: list[str]


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    session_id: str = Field(description="empty: every session of the tenant without its own")
    headers: dict[str, str]
    secret: str = Field(description="whsec_...; only when created and when rotated")
    enabled: bool
    disabled_reason: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class ListWebhooksResponse(BaseModel):
    webhooks: list[Webhook]


class Delivery(BaseModel):
    id: str = Field(description="the webhook-id header: receivers dedupe on it")
    webhook_id: str
    event: str
    session_id: str
    outcome: DeliveryOutcome
    attempts: int
    last_status: int
    last_error: str
    created_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None


class ListDeliveriesResponse(BaseModel):
    deliveries: list[Delivery]


class ListDeadLettersResponse(BaseModel):
    dead_letters: list[Delivery]
    next_page_token: str


class ReplayDeadLettersResponse(BaseModel):
    replayed: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


# -- requests ----------------------------------------------------------------------------------

LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


class CreateSessionRequest(Strict):
    session_id: SessionId = Field(description="1-64 of letters, digits, '_' and '-'")
    auth_strategy: AuthStrategy = Field(
        AuthStrategy.AUTH_STRATEGY_UNSPECIFIED,
        description="where the login is kept; unspecified: the node's default",
    )
    labels: Labels = Field(default_factory=dict)


class MediaUrl(Strict):
    """Media the node fetches (http or https; private and loopback addresses are refused)."""

    url: Annotated[str, StringConstraints(max_length=MAX_URL, pattern=URL_PATTERN)]
    mimetype: Annotated[str, StringConstraints(pattern=MIMETYPE_PATTERN)] | None = Field(
        None, description="default: the server's Content-Type"
    )
    filename: Annotated[
        str, StringConstraints(max_length=MAX_FILENAME, pattern=FILENAME_PATTERN)
    ] = ""
    caption: Annotated[str, StringConstraints(max_length=MAX_CAPTION)] = ""


class MediaData(Strict):
    """Media given inline, base64-encoded."""

    data: Annotated[str, StringConstraints(min_length=4, pattern=BASE64_PATTERN)] = Field(
        json_schema_extra={"contentEncoding": "base64"}
    )
    mimetype: Annotated[str, StringConstraints(pattern=MIMETYPE_PATTERN)]
    filename: Annotated[
        str, StringConstraints(max_length=MAX_FILENAME, pattern=FILENAME_PATTERN)
    ] = ""
    caption: Annotated[str, StringConstraints(max_length=MAX_CAPTION)] = ""


ChatTarget = Annotated[str, StringConstraints(pattern=TO_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=r"\S")]


class SendText(Strict):
    to: ChatTarget = Field(description="a phone number, country code first, or a chat id")
    text: Text
    reply_to: MessageId | None = Field(None, description="id of a message in the chat to quote")


class SendMedia(Strict):
    to: ChatTarget = Field(description="a phone number, country code first, or a chat id")
    media: MediaUrl | MediaData
    reply_to: MessageId | None = Field(None, description="id of a message in the chat to quote")


SendMessageBody = SendText | SendMedia


class SendUpload(BaseModel):
    """A multipart/form-data send: the file as a part, the rest as fields."""

    to: ChatTarget = Field(description="a phone number, country code first, or a chat id")
    file: str = Field(
        description="the file (sent as an image when it is one WhatsApp shows, else a document)",
        json_schema_extra={"contentMediaType": "application/octet-stream"},
    )
    caption: Annotated[str, StringConstraints(max_length=MAX_CAPTION)] | None = None
    mimetype: Annotated[str, StringConstraints(pattern=MIMETYPE_PATTERN)] | None = Field(
        None, description="default: the part's Content-Type"
    )
    reply_to: MessageId | None = None


class FieldError(BaseModel):
    field: str
    detail: str


class Problem(BaseModel):
    """An error, as RFC 9457 describes: `code` is the gRPC status the router answered (or the
    gateway's own), `errors` names a bad field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None


class DrainNodeRequest(Strict):
    parallelism: StrictInt = Field(0, ge=0, le=32, description="sessions moved at once; 0 means 4")


WebhookUrl = Annotated[str, StringConstraints(max_length=MAX_URL, pattern=URL_PATTERN)]
WebhookHeaders = Annotated[
    dict[Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)], str],
    Field(max_length=32),
]


class CreateWebhookRequest(Strict):
    url: WebhookUrl
    events: list[WebhookEvent] = Field(min_length=1)
    session_id: SessionId | None = Field(None, description="only this session's events")
    headers: WebhookHeaders = Field(default_factory=dict)
    secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = Field(
        None, description="whsec_ + base64 of 24-64 bytes; one is made if absent"
    )


class UpdateWebhookRequest(Strict):
    """The fields given are changed (the update mask); re-enabling clears disabled_reason."""

    url: WebhookUrl | None = None
    events: list[WebhookEvent] | None = Field(None, min_length=1)
    headers: WebhookHeaders | None = None
    enabled: StrictBool | None = None


class ReplayDeadLettersRequest(Strict):
    ids: list[Annotated[str, StringConstraints(pattern=WEBHOOK_ID_PATTERN)]] = Field(
        default_factory=list, max_length=1000, description="these dead letters, or"
    )
    webhook_id: Annotated[str, StringConstraints(pattern=WEBHOOK_ID_PATTERN)] | None = None
    all: StrictBool = Field(False, description="every dead letter of webhook_id (or of the tenant)")


# -- from protobuf -----------------------------------------------------------------------------


def when(ts: Timestamp) -> dt.datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def session(s: common_pb2.Session) -> Session:
    return Session(
        session_id=s.session_id,
        state=SessionState(common_pb2.SessionState.Name(s.state)),
        node_id=s.node_id,
        auth_strategy=AuthStrategy(common_pb2.AuthStrategy.Name(s.auth_strategy)),
        phone=s.phone,
        created_at=when(s.created_at),
        updated_at=when(s.updated_at),
        ready_at=when(s.ready_at),
        last_error=s.last_error,
        labels=dict(s.labels),
        last_seq=s.last_seq,
    )


def qr(q: common_pb2.QrCode) -> QrCode:
    return QrCode(code=q.code, attempt=q.attempt, expires_at=when(q.expires_at))


def _ack(value: int) -> Ack:
    return Ack(common_pb2.Ack.Name(value))


def message(m: common_pb2.Message) -> Message:
    return Message(
        id=m.id,
        direction=MessageDirection(common_pb2.MessageDirection.Name(m.direction)),
        chat_id=m.chat_id,
        sender=m.sender,
        timestamp=when(m.timestamp),
        type=MessageType(common_pb2.MessageType.Name(m.type)),
        text=m.text,
        media=MediaInfo(
            mimetype=m.media.mimetype,
            filename=m.media.filename,
            size=m.media.size,
            downloadable=m.media.downloadable,
        )
        if m.HasField("media")
        else None,
        reply_to=m.reply_to,
        ack=_ack(m.ack),
    )


def event(e: common_pb2.SessionEvent) -> SessionEvent:
    kind = e.WhichOneof("event")
    out = SessionEvent(session_id=e.session_id, seq=e.seq, time=when(e.time), type=kind or "state")
    if kind == "qr":
        out.qr = qr(e.qr)
    elif kind == "state":
        out.state = StateChange(
            state=SessionState(common_pb2.SessionState.Name(e.state.state)), reason=e.state.reason
        )
    elif kind == "loading":
        out.loading = Loading(percent=e.loading.percent)
    elif kind == "message":
        out.message = message(e.message)
    elif kind == "ack":
        out.ack = MessageAck(
            message_id=e.ack.message_id, chat_id=e.ack.chat_id, ack=_ack(e.ack.ack)
        )
    return out


def send_reply(r: mesh_pb2.SendMessageResponse) -> SendMessageResponse:
    return SendMessageResponse(message_id=r.message_id, ack=_ack(r.ack), duplicate=r.duplicate)


def cluster(c: mesh_pb2.ClusterStatus) -> ClusterStatus:
    return ClusterStatus(
        nodes=[
            NodeStatus(
                node_id=n.node_id,
                address=n.address,
                health=NodeHealth(common_pb2.NodeHealth.Name(n.health)),
                sessions=n.sessions,
                capacity=n.capacity,
                memory_bytes=n.memory_bytes,
                missing_hooks=list(n.missing_hooks),
                wa_version=n.wa_version,
            )
            for n in c.nodes
        ]
    )


def webhook(w: mesh_pb2.Webhook) -> Webhook:
    return Webhook(
        id=w.id,
        url=w.url,
        events=list(w.events),
        session_id=w.session_id,
        headers=dict(w.headers),
        secret=w.secret,
        enabled=w.enabled,
        disabled_reason=w.disabled_reason,
        created_at=when(w.created_at),
        updated_at=when(w.updated_at),
    )


def delivery(d: mesh_pb2.Delivery) -> Delivery:
    return Delivery(
        id=d.id,
        webhook_id=d.webhook_id,
        event=d.event,
        session_id=d.session_id,
        outcome=DeliveryOutcome(mesh_pb2.DeliveryOutcome.Name(d.outcome)),
        attempts=d.attempts,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=when(d.created_at),
        finished_at=when(d.finished_at),
        next_attempt_at=when(d.next_attempt_at),
    )
