"""What the simulated server knows of accounts: phones, their linked devices, their states."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import LimitReached, NotFound

MAX_DEVICES = 4
PHONE_RE = re.compile(r"[0-9]{6,15}")
WID_RE = re.compile(r"([0-9]{6,15}):([0-9]{1,9})@c\.us")
KEY_BYTES = 32


@dataclass(frozen=True)
class Device:
    """One linked device: a browser's login to a phone's account, known by the keys its QR
    code showed. The noise key is what the page proves it still holds on every connection."""

    phone: str
    number: int
    noise_pub: bytes = field(repr=False)
    identity_pub: bytes = field(repr=False)
    linked_at: float

    @property
    def wid(self) -> str:
        """The id WhatsApp Web stores as `last-wid-md`: `<phone>:<device>@c.us`."""
        return f"{self.phone}:{self.number}@c.us"

    def to_state(self) -> dict[str, Any]:
        return {
            "phone": self.phone,
            "number": self.number,
            "noise_pub": base64.b64encode(self.noise_pub).decode(),
            "identity_pub": base64.b64encode(self.identity_pub).decode(),
            "linked_at": self.linked_at,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Device:
        return cls(
            phone=str(data["phone"]),
            number=int(data["number"]),
            noise_pub=base64.b64decode(data["noise_pub"]),
            identity_pub=base64.b64decode(data["identity_pub"]),
            linked_at=float(data["linked_at"]),
        )


def key_bytes(b64: str) -> bytes | None:
    """A 32-byte public key from its base64 form, or None."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES else None


def parse_wid(wid: object) -> tuple[str, int] | None:
    """(phone, device number) of a `<phone>:<device>@c.us` id, or None."""
    if not isinstance(wid, str):
        return None
    match = WID_RE.fullmatch(wid)
    return None if match is None else (match[1], int(match[2]))


class Accounts:
    """Phones, their devices and their states; device numbers count up per phone and are never
    reused. `on_change` is called after every change worth saving."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._devices: dict[str, dict[int, Device]] = {}
        self._last_number: dict[str, int] = {}
        self._conflicts: dict[str, int] = {}
        self._states: dict[str, str] = {}
        self.on_change = on_change

    def link(self, phone: str, noise_pub: bytes, identity_pub: bytes) -> Device:
        """Create a device for these keys; LimitReached past MAX_DEVICES."""
        devices = self._devices.setdefault(phone, {})
        if len(devices) >= MAX_DEVICES:
            raise LimitReached(
                "phone", f"already has {MAX_DEVICES} linked devices; log one out first"
            )
        number = self._last_number.get(phone, 0) + 1
        self._last_number[phone] = number
        device = Device(phone, number, noise_pub, identity_pub, time.time())
        devices[number] = device
        self.on_change()
        return device

    def unlink(self, phone: str, number: int | None = None) -> list[Device]:
        """Remove one device, or all of the phone's; NotFound if there is nothing to remove."""
        devices = self._devices.get(phone)
        if not devices:
            raise NotFound("phone", "has no linked devices")
        if number is None:
            removed = list(devices.values())
            devices.clear()
        else:
            if number not in devices:
                raise NotFound("device", f"phone has no linked device {number}")
            removed = [devices.pop(number)]
        if not devices:
            del self._devices[phone]
        self.on_change()
        return removed

    def devices(self, phone: str) -> list[Device]:
        return sorted(self._devices.get(phone, {}).values(), key=lambda d: d.number)

    def device(self, wid: object) -> Device | None:
        """The linked device with this `last-wid-md` id, or None (never linked, or unlinked)."""
        parsed = parse_wid(wid)
        if parsed is None:
            return None
        return self._devices.get(parsed[0], {}).get(parsed[1])

    def state(self, phone: str) -> str | None:
        """The end state the account is in (TOS_BLOCK...), or None."""
        return self._states.get(phone)

    def set_state(self, phone: str, state: str | None) -> None:
        if state is None:
            self._states.pop(phone, None)
        else:
            self._states[phone] = state
        self.on_change()

    def record_conflict(self, phone: str) -> None:
        self._conflicts[phone] = self._conflicts.get(phone, 0) + 1

    def conflicts(self) -> dict[str, int]:
        return dict(self._conflicts)

    def to_state(self) -> dict[str, Any]:
        return {
            "devices": [d.to_state() for phone in self._devices for d in self.devices(phone)],
            "last_number": dict(self._last_number),
            "states": dict(self._states),
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take over a saved state (at start, before any page connects)."""
        self._devices.clear()
        for item in data.get("devices", []):
            device = Device.from_state(item)
            self._devices.setdefault(device.phone, {})[device.number] = device
        self._last_number = {str(k): int(v) for k, v in data.get("last_number", {}).items()}
        self._states = {str(k): str(v) for k, v in data.get("states", {}).items()}
