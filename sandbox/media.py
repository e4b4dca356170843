"""Media as WhatsApp's servers hold it: files encrypted with a per-message media key.

The scheme is the public one (Baileys, whatsmeow): HKDF-SHA-256 expands the 32-byte media key
to 112 bytes with an info string per media kind; bytes 0-16 are the IV, 16-48 the AES-256-CBC
key, 48-80 the HMAC-SHA-256 key. The file is the ciphertext followed by the first 10 bytes of
HMAC(iv + ciphertext). `filehash` is the base64 SHA-256 of the plain file, `encFilehash` that of
the stored file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = {
    "image": b"WhatsApp Image Keys",
    "sticker": b"WhatsApp Image Keys",
    "video": b"WhatsApp Video Keys",
    "gif": b"WhatsApp Video Keys",
    "audio": b"WhatsApp Audio Keys",
    "ptt": b"WhatsApp Audio Keys",
    "document": b"WhatsApp Document Keys",
}
MAC_BYTES = 10
MAX_STORED_BYTES = 256 * 1024 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024


class MediaError(ValueError):
    """A file that does not decrypt or verify under the key given."""


def _keys(media_key: bytes, kind: str) -> tuple[bytes, bytes, bytes]:
    info = INFO.get(kind)
    if info is None:
        raise MediaError(f"no media keys for kind {kind!r}")
    if len(media_key) != 32:
        raise MediaError("a media key is 32 bytes")
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=info).derive(media_key)
    return expanded[:16], expanded[16:48], expanded[48:80]


def encrypt(plain: bytes, media_key: bytes, kind: str) -> bytes:
    iv, cipher_key, mac_key = _keys(media_key, kind)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    enc = encryptor.update(padded) + encryptor.finalize()
    mac = hmac.new(mac_key, iv + enc, hashlib.sha256).digest()[:MAC_BYTES]
    return enc + mac


def decrypt(blob: bytes, media_key: bytes, kind: str) -> bytes:
    iv, cipher_key, mac_key = _keys(media_key, kind)
    enc, mac = blob[:-MAC_BYTES], blob[-MAC_BYTES:]
    if len(enc) == 0 or len(enc) % 16:
        raise MediaError("the file is not a whole number of AES blocks")
    if not hmac.compare_digest(mac, hmac.new(mac_key, iv + enc, hashlib.sha256).digest()[:10]):
        raise MediaError("the file's MAC does not verify under this media key")
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(enc) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as e:
        raise MediaError("bad padding") from e


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass(frozen=True)
class Uploaded:
    """Where an encrypted file lives and its hashes, as a message refers to it."""

    direct_path: str
    enc_filehash: str


class MediaStore:
    """Encrypted files by direct path, in memory, the oldest dropped past MAX_STORED_BYTES."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def put(self, kind: str, blob: bytes) -> Uploaded:
        direct_path = f"/v/t62.{kind}/{secrets.token_hex(16)}.enc"
        self._files[direct_path] = blob
        self._bytes += len(blob)
        while self._bytes > MAX_STORED_BYTES and len(self._files) > 1:
            _, dropped = self._files.popitem(last=False)
            self._bytes -= len(dropped)
        return Uploaded(direct_path, b64sha256(blob))

    def get(self, direct_path: str) -> bytes | None:
        return self._files.get(direct_path)

    def store_plain(self, kind: str, plain: bytes) -> tuple[Uploaded, bytes]:
        """Encrypt a file under a new media key and keep it; returns where, and the key."""
        media_key = secrets.token_bytes(32)
        return self.put(kind, encrypt(plain, media_key, kind)), media_key
