"""A session's current QR code, from its latest QR event, and as a PNG image."""

from __future__ import annotations

import asyncio
import base64
import io

import qrcode

from gateway.deps import Mesh
from gateway.errors import NoQrCode
from gateway.models import QrImage, QrRaw, when
from sessionmesh.v1 import common_pb2, mesh_pb2

# Events read back from the newest to find the QR (a QR is followed by few events while the
# session waits for a scan); the whole log is read only if the window holds none.
WINDOW = 32


async def latest_qr(mesh: Mesh, session_id: str) -> QrRaw:
    """The newest QR event of a session showing a QR; NoQrCode (409) in any other state."""
    current: common_pb2.Session = await mesh.call(
        "GetSession", mesh_pb2.GetSessionRequest(session_id=session_id)
    )
    if current.state != common_pb2.SCAN_QR_CODE:
        state = common_pb2.SessionState.Name(current.state)
        raise NoQrCode(f"session {session_id!r} is {state}: it shows no QR code now")
    last = current.last_seq
    found: common_pb2.SessionEvent | None = None
    for after in dict.fromkeys((max(0, last - WINDOW), 0)):
        async for event in mesh.router.events_between(session_id, after, last, mesh.token):
            if event.WhichOneof("event") == "qr":
                found = event
        if found is not None:
            break
    if found is None:
        raise NoQrCode(f"session {session_id!r} has shown no QR code yet")
    return QrRaw(
        code=found.qr.code,
        attempt=found.qr.attempt,
        expires_at=when(found.qr.expires_at),
        seq=found.seq,
    )


def _png(code: str) -> bytes:
    qr = qrcode.QRCode(border=2, box_size=8)
    qr.add_data(code)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out)  # Pillow's image: PNG by default
    return out.getvalue()


async def png(code: str) -> bytes:
    """The QR drawn as a PNG (off the event loop: it takes a few milliseconds)."""
    return await asyncio.to_thread(_png, code)


async def png_base64(code: str) -> QrImage:
    return QrImage(mimetype="image/png", data=base64.b64encode(await png(code)).decode())
