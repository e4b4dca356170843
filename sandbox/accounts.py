"""Link state in memory: phones, their linked devices, the tokens those devices hold, conflicts."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from sandbox.errors import LimitReached, NotFound

MAX_DEVICES = 4
PHONE_RE = re.compile(r"[0-9]{6,15}")
WID_RE = re.compile(r"([0-9]{6,15}):([0-9]{1,9})@c\.us")


@dataclass(frozen=True)
class Device:
    """One linked device: a browser's login to a phone's account."""

    phone: str
    number: int
    token: str = field(repr=False)
    linked_at: float

    @property
    def wid(self) -> str:
        """The id WhatsApp Web stores as `last-wid-md`: `<phone>:<device>@c.us`."""
        return f"{self.phone}:{self.number}@c.us"


class Accounts:
    """Phones and their devices; device numbers count up per phone and are never reused."""

    def __init__(self) -> None:
        self._devices: dict[str, dict[int, Device]] = {}
        self._last_number: dict[str, int] = {}
        self._conflicts: dict[str, int] = {}

    def link(self, phone: str) -> Device:
        """Create a device with fresh credentials; LimitReached past MAX_DEVICES."""
        devices = self._devices.setdefault(phone, {})
        if len(devices) >= MAX_DEVICES:
            raise LimitReached(
                "phone", f"already has {MAX_DEVICES} linked devices; log one out first"
            )
        number = self._last_number.get(phone, 0) + 1
        self._last_number[phone] = number
        device = Device(phone, number, secrets.token_urlsafe(32), time.time())
        devices[number] = device
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
        return removed

    def devices(self, phone: str) -> list[Device]:
        return sorted(self._devices.get(phone, {}).values(), key=lambda d: d.number)

    def verify(self, wid: object, token: object) -> Device | None:
        """The device these stored credentials belong to, or None if they are not valid (any more)."""
        if not isinstance(wid, str) or not isinstance(token, str):
            return None
        match = WID_RE.fullmatch(wid)
        if match is None:
            return None
        device = self._devices.get(match[1], {}).get(int(match[2]))
        if device is None or not secrets.compare_digest(device.token, token):
            return None
        return device

    def record_conflict(self, phone: str) -> None:
        self._conflicts[phone] = self._conflicts.get(phone, 0) + 1

    def conflicts(self) -> dict[str, int]:
        return dict(self._conflicts)
