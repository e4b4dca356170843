"""Webhooks and deliveries as the stores keep them, and as the API shows them."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sessionmesh.v1 import mesh_pb2
from webhooks.sealing import Sealer

# The events a webhook may ask for, and the SessionEvent field each comes from.
EVENTS = ("session.status", "qr", "message", "message.ack")
KIND_TO_EVENT = {"state": "session.status", "qr": "qr", "message": "message", "ack": "message.ack"}

QUEUED, RETRYING, DELIVERED, DEAD = "queued", "retrying", "delivered", "dead"
_OUTCOMES = {
    QUEUED: mesh_pb2.RETRYING,  # waiting for its first try (or behind an earlier delivery)
    RETRYING: mesh_pb2.RETRYING,
    DELIVERED: mesh_pb2.DELIVERED,
    DEAD: mesh_pb2.DEAD,
}


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(10)


def timestamp(seconds: float) -> Timestamp | None:
    if not seconds:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


@dataclass
class Endpoint:
    """One registered webhook. `secret` is `whsec_...`; it leaves the store only sealed."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    session_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    secret: str = field(default="", repr=False)
    enabled: bool = True
    disabled_reason: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0

    def dump(self, sealer: Sealer) -> str:
        """The stored form: JSON with the secret and the headers (often a receiver's own
        credentials) sealed to this webhook's id."""
        private = json.dumps({"secret": self.secret, "headers": self.headers}).encode()
        sealed = sealer.seal(private, f"secret:{self.id}")
        return json.dumps(
            {
                "id": self.id,
                "tenant": self.tenant,
                "url": self.url,
                "events": list(self.events),
                "session_id": self.session_id,
                "sealed": base64.b64encode(sealed).decode("ascii"),
                "enabled": self.enabled,
                "disabled_reason": self.disabled_reason,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def load(cls, raw: str | bytes, sealer: Sealer, version: int = 0) -> Endpoint:
        data = json.loads(raw)
        private = json.loads(sealer.open(base64.b64decode(data["sealed"]), f"secret:{data['id']}"))
        return cls(
            id=data["id"],
            tenant=data["tenant"],
            url=data["url"],
            events=tuple(data["events"]),
            session_id=data.get("session_id", ""),
            headers=dict(private.get("headers") or {}),
            secret=str(private["secret"]),
            enabled=bool(data.get("enabled", True)),
            disabled_reason=data.get("disabled_reason", ""),
            created_at=float(data.get("created_at", 0)),
            updated_at=float(data.get("updated_at", 0)),
            version=version,
        )

    def to_proto(self, *, with_secret: bool = False) -> mesh_pb2.Webhook:
        return mesh_pb2.Webhook(
            id=self.id,
            url=self.url,
            events=list(self.events),
            session_id=self.session_id,
            headers=self.headers,
            secret=self.secret if with_secret else "",
            enabled=self.enabled,
            disabled_reason=self.disabled_reason,
            created_at=timestamp(self.created_at),
            updated_at=timestamp(self.updated_at),
        )


def select(endpoints: Iterable[Endpoint], session_id: str, event: str) -> list[Endpoint]:
    """The webhooks that get `event` of `session_id`: the session's own webhooks if it has any
    (enabled or not), else the tenant-wide ones; only enabled ones that asked for the event."""
    endpoints = list(endpoints)
    own = [e for e in endpoints if e.session_id == session_id]
    chosen = own or [e for e in endpoints if not e.session_id]
    return [e for e in chosen if e.enabled and event in e.events]


@dataclass
class Delivery:
    """One event for one webhook. `id` is the webhook-id header: the same on every try and
    replay, so receivers dedupe on it. `created_at` is the event's time (the lag's start)."""

    id: str
    tenant: str
    webhook_id: str
    session_id: str
    event: str
    seq: int
    created_at: float
    enqueued_at: float = 0.0
    status: str = QUEUED
    attempts: int = 0
    last_status: int = 0
    last_error: str = ""
    next_at: float = 0.0
    finished_at: float = 0.0
    body: bytes | None = field(default=None, repr=False)

    @property
    def lane(self) -> str:
        """Deliveries of one lane go out in order, one at a time."""
        return lane_of(self.webhook_id, self.session_id)

    def fields(self, sealer: Sealer) -> dict[str, str | bytes]:
        """The stored form (Redis hash fields, SQLite columns); the body sealed to the id."""
        out: dict[str, str | bytes] = {
            "id": self.id,
            "tenant": self.tenant,
            "webhook_id": self.webhook_id,
            "session_id": self.session_id,
            "event": self.event,
            "seq": str(self.seq),
            "created_at": repr(self.created_at),
            "enqueued_at": repr(self.enqueued_at),
            "status": self.status,
            "attempts": str(self.attempts),
            "last_status": str(self.last_status),
            "last_error": self.last_error,
            "next_at": repr(self.next_at),
            "finished_at": repr(self.finished_at),
        }
        if self.body is not None:
            out["body"] = sealer.seal(self.body, f"body:{self.id}")
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any], sealer: Sealer | None) -> Delivery:
        """From stored fields; the body is opened only when `sealer` is given."""
        f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

        def text(name: str, default: str = "") -> str:
            value = f.get(name)
            if value is None:
                return default
            return value.decode() if isinstance(value, bytes) else str(value)

        body: bytes | None = None
        sealed = f.get("body")
        if sealer is not None and sealed:
            blob = sealed if isinstance(sealed, bytes) else str(sealed).encode()
            body = sealer.open(blob, f"body:{text('id')}")
        return cls(
            id=text("id"),
            tenant=text("tenant"),
            webhook_id=text("webhook_id"),
            session_id=text("session_id"),
            event=text("event"),
            seq=int(text("seq", "0")),
            created_at=float(text("created_at", "0")),
            enqueued_at=float(text("enqueued_at", "0")),
            status=text("status", QUEUED),
            attempts=int(text("attempts", "0")),
            last_status=int(text("last_status", "0")),
            last_error=text("last_error"),
            next_at=float(text("next_at", "0")),
            finished_at=float(text("finished_at", "0")),
            body=body,
        )

    def to_proto(self) -> mesh_pb2.Delivery:
        return mesh_pb2.Delivery(
            id=self.id,
            webhook_id=self.webhook_id,
            event=self.event,
            session_id=self.session_id,
            outcome=_OUTCOMES.get(self.status, mesh_pb2.DELIVERY_OUTCOME_UNSPECIFIED),
            attempts=self.attempts,
            last_status=self.last_status,
            last_error=self.last_error,
            created_at=timestamp(self.created_at),
            finished_at=timestamp(self.finished_at),
            next_attempt_at=timestamp(self.next_at) if self.status == RETRYING else None,
        )

    def but(self, **changes: Any) -> Delivery:
        return replace(self, **changes)


def lane_of(webhook_id: str, session_id: str) -> str:
    return f"{webhook_id}/{session_id}"
