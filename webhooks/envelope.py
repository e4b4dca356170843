"""What a delivery carries: the event's name, its JSON body, and its stable webhook-id."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from sessionmesh.v1 import common_pb2 as pb
from webhooks.model import KIND_TO_EVENT


def event_name(event: pb.SessionEvent) -> str | None:
    """`session.status`, `qr`, `message` or `message.ack`; None for events webhooks never get
    (loading progress)."""
    kind = event.WhichOneof("event")
    return KIND_TO_EVENT.get(kind) if kind else None


def event_time(event: pb.SessionEvent) -> float:
    return event.time.ToNanoseconds() / 1e9


def payload(event: pb.SessionEvent) -> dict[str, Any]:
    """The event's own fields, with the API's field names and enum names."""
    kind = event.WhichOneof("event")
    if kind is None:
        return {}
    return MessageToDict(
        getattr(event, kind),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def body(tenant: str, event: pb.SessionEvent) -> bytes:
    """The JSON envelope: event, session, tenant, time (RFC 3339, UTC), seq and payload."""
    name = event_name(event)
    when = dt.datetime.fromtimestamp(event_time(event), dt.UTC)
    doc = {
        "event": name,
        "session": event.session_id,
        "tenant": tenant,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seq": event.seq,
        "payload": payload(event),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def delivery_id(tenant: str, webhook_id: str, event: pb.SessionEvent) -> str:
    """The same for the same event and webhook on every node: an event published twice (by a
    node that took the session over, say) is one delivery. The event's time is part of it, so
    a seq reused after a crash (an event never made durable) is a different delivery."""
    key = f"{tenant}/{event.session_id}/{event.seq}/{event.time.ToNanoseconds()}/{webhook_id}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()[:20]
    return "msg_" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()
