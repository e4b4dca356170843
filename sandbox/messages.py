"""Messages between accounts: what each phone received, and what waits for offline devices.

A message goes from one account (phone number) to another. The receiving phone keeps it in its
inbox (`GET /phone/messages`); every linked device of the receiver gets it as incoming, and every
linked device of the sender but the one that sent it gets it as its own (fromMe). A device whose
page is not connected gets it when its page next connects, during the offline sync.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MESSAGE_TYPES = ("chat", "image", "document")
MEDIA_TYPES = ("image", "document")
INBOX_KEPT = 500
PENDING_KEPT = 1_000
MAX_TEXT = 65_536

# Acks as WhatsApp Web numbers them.
ACK_ERROR, ACK_PENDING, ACK_SERVER, ACK_DEVICE, ACK_READ, ACK_PLAYED = -1, 0, 1, 2, 3, 4


def new_phone_msg_id() -> str:
    """An id as a phone makes them (20 hex digits, upper case)."""
    return "3A" + secrets.token_hex(9).upper()


def cus(phone: str) -> str:
    return f"{phone}@c.us"


@dataclass(frozen=True)
class Media:
    """An encrypted file on the media store, as a message refers to it."""

    direct_path: str
    media_key: str  # base64
    filehash: str
    enc_filehash: str
    media_key_timestamp: int

    def wire(self) -> dict[str, Any]:
        return {
            "directPath": self.direct_path,
            "mediaKey": self.media_key,
            "filehash": self.filehash,
            "encFilehash": self.enc_filehash,
            "mediaKeyTimestamp": self.media_key_timestamp,
        }


@dataclass(frozen=True)
class Message:
    """One message from account `sender` to account `to`."""

    id: str
    sender: str
    to: str
    type: str
    body: str
    t: int
    caption: str | None = None
    mimetype: str | None = None
    filename: str | None = None
    size: int | None = None
    media: Media | None = None
    # The plain file, for the receiving phone's inbox (memory only).
    data: bytes | None = field(default=None, repr=False)

    def wire(self, *, from_me: bool) -> dict[str, Any]:
        """The message as a page of `sender` (from_me) or of `to` gets it."""
        out: dict[str, Any] = {
            "id": self.id,
            "fromMe": from_me,
            "remote": cus(self.to if from_me else self.sender),
            "from": cus(self.sender),
            "to": cus(self.to),
            "type": self.type,
            "body": self.body,
            "t": self.t,
        }
        for name in ("caption", "mimetype", "filename", "size"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.media is not None:
            out["media"] = self.media.wire()
        return out

    def inbox_view(self, ack: int) -> dict[str, Any]:
        """The message as the receiving phone shows it (`GET /phone/messages`)."""
        out: dict[str, Any] = {
            "id": self.id,
            "from": self.sender,
            "to": self.to,
            "type": self.type,
            "body": self.body,
            "t": self.t,
            "ack": ack,
        }
        for name in ("caption", "mimetype", "filename", "size"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode()
        return out

    def to_state(self) -> dict[str, Any]:
        out = self.wire(from_me=False)
        out["sender"], out["to"] = self.sender, self.to
        return out

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Message:
        media = data.get("media")
        return cls(
            id=str(data["id"]),
            sender=str(data["sender"]),
            to=str(data["to"]),
            type=str(data["type"]),
            body=str(data.get("body", "")),
            t=int(data["t"]),
            caption=data.get("caption"),
            mimetype=data.get("mimetype"),
            filename=data.get("filename"),
            size=data.get("size"),
            media=None
            if media is None
            else Media(
                direct_path=media["directPath"],
                media_key=media["mediaKey"],
                filehash=media["filehash"],
                enc_filehash=media["encFilehash"],
                media_key_timestamp=int(media["mediaKeyTimestamp"]),
            ),
        )


@dataclass
class Received:
    """A message in a phone's inbox, with the ack its sender sees."""

    message: Message
    ack: int = ACK_SERVER


class Mail:
    """Inboxes per phone and events waiting per offline device."""

    def __init__(self) -> None:
        self._inboxes: dict[str, deque[Received]] = {}
        self._pending: dict[str, deque[dict[str, Any]]] = {}

    def receive(self, message: Message) -> Received:
        box = self._inboxes.setdefault(message.to, deque(maxlen=INBOX_KEPT))
        item = Received(message)
        box.append(item)
        return item

    def set_ack(self, message: Message, ack: int) -> None:
        for item in reversed(self._inboxes.get(message.to, ())):
            if item.message.id == message.id and item.message.sender == message.sender:
                item.ack = ack
                return

    def inbox(self, phone: str) -> list[dict[str, Any]]:
        return [r.message.inbox_view(r.ack) for r in self._inboxes.get(phone, ())]

    def hold(self, wid: str, event: dict[str, Any]) -> None:
        """Keep an event for a device whose page is not connected."""
        self._pending.setdefault(wid, deque(maxlen=PENDING_KEPT)).append(event)

    def take(self, wid: str) -> list[dict[str, Any]]:
        """The events held for a device, oldest first; they are no longer held."""
        return list(self._pending.pop(wid, ()))

    def forget(self, wid: str) -> None:
        self._pending.pop(wid, None)

    def to_state(self) -> dict[str, Any]:
        return {
            "inboxes": {
                phone: [{**r.message.to_state(), "ack": r.ack} for r in box]
                for phone, box in self._inboxes.items()
            },
            "pending": {wid: list(events) for wid, events in self._pending.items()},
        }

    def load_state(self, data: dict[str, Any]) -> None:
        self._inboxes = {
            phone: deque(
                (Received(Message.from_state(m), int(m.get("ack", ACK_SERVER))) for m in box),
                maxlen=INBOX_KEPT,
            )
            for phone, box in data.get("inboxes", {}).items()
        }
        self._pending = {
            wid: deque(events, maxlen=PENDING_KEPT)
            for wid, events in data.get("pending", {}).items()
        }


def now() -> int:
    return int(time.time())
