"""The rules for a SendMessage request, checked the same way by the router and the node."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sessionmesh.v1 import mesh_pb2
from sessionmesh.validation import InvalidArgument, check_session_id

MAX_TEXT = 4096  # characters, as WhatsApp's own limit for a text message
MAX_CAPTION = 1024
MAX_FILENAME = 255
MAX_URL = 2048
MAX_KEY = 128
PHONE_RE = re.compile(r"[0-9]{6,15}")
CHAT_RE = re.compile(r"[0-9]{6,15}@c\.us|[0-9]{6,20}-?[0-9]{0,12}@g\.us|[0-9]{6,20}@lid")
MESSAGE_ID_RE = re.compile(
    r"(true|false)_[0-9A-Za-z@.:_-]{1,120}_[0-9A-Za-z]{4,64}(_[0-9A-Za-z@.:_-]+)?"
)
KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")
MIMETYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
MEDIA_KINDS = {"image": "image", "document": "document"}


@dataclass(frozen=True)
class Media:
    mimetype: str
    filename: str
    caption: str
    data: bytes = b""  # the bytes, when given inline
    url: str = ""  # else where to fetch them (by the node)

    @property
    def kind(self) -> str:
        """How WhatsApp shows it: image for images it can display, else a document."""
        if self.mimetype in ("image/jpeg", "image/png", "image/webp", "image/gif"):
            return "image"
        return "document"


@dataclass(frozen=True)
class Send:
    """A checked SendMessage: the chat, the content, and a digest of both for the key."""

    session_id: str
    chat_id: str
    key: str
    text: str
    media: Media | None
    reply_to: str

    @property
    def digest(self) -> str:
        """Same for the same message; an idempotency key reused for another one is refused."""
        h = hashlib.sha256()
        for part in (self.chat_id, self.text, self.reply_to):
            h.update(part.encode() + b"\0")
        if self.media is not None:
            m = self.media
            for part in (m.mimetype, m.filename, m.caption, m.url):
                h.update(part.encode() + b"\0")
            h.update(hashlib.sha256(m.data).digest())
        return h.hexdigest()


def chat_id(to: str) -> str:
    """A phone number (digits, country code first; '+', spaces and dashes ignored) or a chat id
    (`...@c.us`, `...@g.us`, `...@lid`) as the chat id WhatsApp Web uses."""
    value = to
    if "@" in value:
        if CHAT_RE.fullmatch(value) is None:
            raise InvalidArgument("to", f"{to[:80]!r} is not a chat id (digits@c.us, ...@g.us)")
        return value
    digits = re.sub(r"[ +()-]", "", value)
    if PHONE_RE.fullmatch(digits) is None:
        raise InvalidArgument(
            "to", f"{to[:80]!r} must be a phone number of 6-15 digits, country code first"
        )
    return f"{digits}@c.us"


def check_send(request: mesh_pb2.SendMessageRequest, *, max_media_bytes: int) -> Send:
    """The request's fields checked; InvalidArgument names the first bad one."""
    check_session_id(request.session_id)
    if not request.to:
        raise InvalidArgument("to", "is required: a phone number or a chat id")
    chat = chat_id(request.to)
    if KEY_RE.fullmatch(request.idempotency_key) is None:
        raise InvalidArgument(
            "idempotency_key",
            f"must be 1-{MAX_KEY} printable ASCII characters without spaces (a retry reuses it)",
        )
    if request.reply_to and MESSAGE_ID_RE.fullmatch(request.reply_to) is None:
        raise InvalidArgument("reply_to", "is not a message id (true_<chat>_<id> or false_...)")
    content = request.WhichOneof("content")
    if content is None:
        raise InvalidArgument("text", "give the message: text, or media")
    if content == "text":
        text = request.text
        if not text.strip():
            raise InvalidArgument("text", "is empty")
        if len(text) > MAX_TEXT:
            raise InvalidArgument("text", f"is {len(text)} characters; at most {MAX_TEXT}")
        return Send(request.session_id, chat, request.idempotency_key, text, None, request.reply_to)
    return Send(
        request.session_id,
        chat,
        request.idempotency_key,
        "",
        _media(request.media, max_media_bytes),
        request.reply_to,
    )


def _media(media: mesh_pb2.MediaUpload, max_bytes: int) -> Media:
    source = media.WhichOneof("source")
    if source is None:
        raise InvalidArgument("media.url", "give the media as url or data")
    mimetype = media.mimetype.strip().lower()
    if mimetype and MIMETYPE_RE.fullmatch(mimetype) is None:
        raise InvalidArgument("media.mimetype", f"{media.mimetype[:80]!r} is not a MIME type")
    if len(media.caption) > MAX_CAPTION:
        raise InvalidArgument(
            "media.caption", f"is {len(media.caption)} characters; at most {MAX_CAPTION}"
        )
    if len(media.filename) > MAX_FILENAME or any(c in media.filename for c in "/\\\0\r\n"):
        raise InvalidArgument(
            "media.filename", f"must be at most {MAX_FILENAME} characters, without / \\ or newlines"
        )
    if source == "data":
        if not media.data:
            raise InvalidArgument("media.data", "is empty")
        if len(media.data) > max_bytes:
            raise InvalidArgument(
                "media.data", f"is {len(media.data)} bytes; at most {max_bytes} (or give a url)"
            )
        if not mimetype:
            raise InvalidArgument("media.mimetype", "is required with media.data")
        return Media(mimetype, media.filename, media.caption, data=media.data)
    url = media.url
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port out of range raises here
    except ValueError:
        parts = None
    if (
        parts is None
        or len(url) > MAX_URL
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c in url for c in " \r\n\t")
    ):
        raise InvalidArgument(
            "media.url", f"must be an http(s) URL of at most {MAX_URL} characters"
        )
    return Media(mimetype, media.filename, media.caption, url=url)
