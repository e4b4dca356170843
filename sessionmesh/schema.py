"""The Redis schema that nodes and routers share: key names, the directory entry, the heartbeat.

Both sides read and write these through this module only, so a field renamed or a state added
changes in one place (docs/remoteauth.md has the table). `P` = REDIS_SESSION_PREFIX,
`M` = MESH_REDIS_PREFIX, `K` = `tenant/session_id`::

    P{K}:snap, P{K}:snap:prev  encrypted snapshot and the previous copy    owner node
    P{K}:lease, P{K}:fence     ownership lease and its fencing counter     owner node
    P{K}:dir                   the directory entry (DirEntry)              owner node
    P{K}:events                the event stream, ids <seq>-0               owner node
    P{K}:sends                 the send log (sealed records, keyed names)  owner node
    M{nodes}                   set of node ids                             nodes
    M{node:ID}                 the heartbeat (Heartbeat), EX ttl           node
    M{node:ID}:sessions        set of K placed on the node                 node
    M{failover:ID:EPOCH}       one router's claim of a dead node           routers
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sessionmesh.v1 import common_pb2 as pb

LIVE_STATES = frozenset({pb.STARTING, pb.SCAN_QR_CODE, pb.AUTHENTICATED, pb.READY})
TERMINAL_STATES = frozenset({pb.STOPPED, pb.LOGGED_OUT, pb.FAILED})

_PART_RE = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")


def text(value: Any) -> str:
    """A Redis reply value (bytes with decode_responses=False) as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def session_member(tenant: str, session_id: str) -> str:
    """`tenant/session_id`: a session's name in sets, hash tags and sealed data."""
    return f"{tenant}/{session_id}"


def split_member(member: str) -> tuple[str, str] | None:
    """`tenant/session_id` -> (tenant, session_id); None when malformed."""
    tenant, sep, session_id = member.partition("/")
    return (tenant, session_id) if sep and tenant and session_id else None


@dataclass(frozen=True)
class SessionKeys:
    """The Redis keys of one session, all under one hash tag (one Cluster slot)."""

    tag: str

    @classmethod
    def of(cls, prefix: str, tenant: str, session_id: str) -> SessionKeys:
        for name, part in (("tenant", tenant), ("session_id", session_id)):
            if not _PART_RE.fullmatch(part):
                raise ValueError(
                    f"{name} {part[:70]!r} must be 1-128 of letters, digits, '_', '.', '@', ':', '-'"
                )
        return cls(f"{prefix}{{{session_member(tenant, session_id)}}}")

    @property
    def snap(self) -> str:
        return f"{self.tag}:snap"

    @property
    def prev(self) -> str:
        return f"{self.tag}:snap:prev"

    @property
    def lease(self) -> str:
        return f"{self.tag}:lease"

    @property
    def fence(self) -> str:
        return f"{self.tag}:fence"

    @property
    def dir(self) -> str:
        return f"{self.tag}:dir"

    @property
    def events(self) -> str:
        return f"{self.tag}:events"

    @property
    def sends(self) -> str:
        return f"{self.tag}:sends"


@dataclass(frozen=True)
class MeshKeys:
    """Cluster-wide keys: members, heartbeats, node session sets, failover claims."""

    prefix: str

    @property
    def nodes(self) -> str:
        return f"{self.prefix}{{nodes}}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}{{node:{node_id}}}"

    def node_sessions(self, node_id: str) -> str:
        return f"{self.node(node_id)}:sessions"

    def failover(self, node_id: str, epoch: str) -> str:
        return f"{self.prefix}{{failover:{node_id}:{epoch or 'unknown'}}}"


def _enum(value: str, names: Mapping[str, int]) -> int:
    """An enum field stored as its name (or its number); 0 when unreadable."""
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    return names.get(value.upper(), 0)


def timestamp_of(value: str) -> Timestamp | None:
    """Epoch seconds or ISO 8601 as a Timestamp; None when absent or unreadable."""
    if not value:
        return None
    ts = Timestamp()
    try:
        ts.FromDatetime(datetime.fromtimestamp(float(value), UTC))
    except (ValueError, OverflowError, OSError):
        try:
            ts.FromDatetime(datetime.fromisoformat(value))
        except ValueError:
            return None
    return ts


# Fields a reader should not learn: with a sealer they are stored in SEALED_FIELD only.
PRIVATE_FIELDS = ("phone", "labels", "last_error")
SEALED_FIELD = "sealed"


@dataclass(frozen=True)
class DirEntry:
    """One session's directory entry (`P{K}:dir`), as its owner node last wrote it.

    `handed_off` says the owner stopped it to be started elsewhere (drain, SIGTERM): routers
    and the node's boot resume read it, not the text of `last_error`."""

    node_id: str
    owner: str = ""
    address: str = ""
    auth_strategy: int = pb.AUTH_STRATEGY_UNSPECIFIED
    labels: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    state: int = pb.SESSION_STATE_UNSPECIFIED
    phone: str = ""
    last_error: str = ""
    last_seq: int = 0
    handed_off: bool = False

    @property
    def remote(self) -> bool:
        return self.auth_strategy == pb.REMOTE

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def private(self) -> dict[str, Any]:
        return {"phone": self.phone, "labels": self.labels, "last_error": self.last_error}

    def encode(self, seal: Any = None) -> dict[str, str]:
        """The hash fields. With `seal` (bytes -> bytes), the private fields are stored only
        sealed, in one field; routing fields stay readable to routers."""
        fields = {
            "node_id": self.node_id,
            "owner": self.owner,
            "address": self.address,
            "auth_strategy": pb.AuthStrategy.Name(self.auth_strategy),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "state": pb.SessionState.Name(self.state),
            "last_seq": str(self.last_seq),
            "handed_off": "1" if self.handed_off else "0",
        }
        if seal is None:
            fields.update(
                phone=self.phone,
                labels=json.dumps(self.labels, sort_keys=True),
                last_error=self.last_error,
            )
        else:
            plain = json.dumps(self.private(), sort_keys=True).encode()
            fields[SEALED_FIELD] = seal(plain).hex()
            fields.update(phone="", labels="", last_error="")  # overwrite older clear values
        return fields

    @classmethod
    def decode(cls, raw: Mapping[Any, Any], unseal: Any = None) -> DirEntry | None:
        """Parse a hash as read from Redis; None when it names no node. With `unseal`
        (bytes -> bytes, raising on forgery), private fields come from the sealed field only."""
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("node_id"):
            return None
        private: dict[str, Any] = {}
        sealed = fields.get(SEALED_FIELD, "")
        if unseal is not None and sealed:
            try:
                private = json.loads(unseal(bytes.fromhex(sealed)))
            except ValueError:
                private = {}
        elif unseal is None and not sealed:
            labels: Any = fields.get("labels") or "{}"
            try:
                labels = json.loads(labels)
            except ValueError:
                labels = {}
            private = {
                "phone": fields.get("phone", ""),
                "labels": labels,
                "last_error": fields.get("last_error", ""),
            }
        labels = private.get("labels")
        seq = fields.get("last_seq", "0")
        return cls(
            node_id=fields["node_id"],
            owner=fields.get("owner", ""),
            address=fields.get("address", ""),
            auth_strategy=_enum(fields.get("auth_strategy", "0"), dict(pb.AuthStrategy.items())),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            created_at=fields.get("created_at", ""),
            updated_at=fields.get("updated_at", ""),
            state=_enum(fields.get("state", "0"), dict(pb.SessionState.items())),
            phone=str(private.get("phone") or ""),
            last_error=str(private.get("last_error") or ""),
            last_seq=int(seq) if seq.isdigit() else 0,
            handed_off=fields.get("handed_off") == "1",
        )

    def to_session(self, session_id: str, **overrides: Any) -> pb.Session:
        """The session as the directory knows it; `overrides` replace fields (state, last_error)."""
        session = pb.Session(
            session_id=session_id,
            state=self.state,  # type: ignore[arg-type]
            node_id=self.node_id,
            auth_strategy=self.auth_strategy,  # type: ignore[arg-type]
            phone=self.phone,
            last_error=self.last_error,
            labels=self.labels,
            last_seq=self.last_seq,
        )
        created = timestamp_of(self.created_at)
        if created is not None:
            session.created_at.CopyFrom(created)
        for name, value in overrides.items():
            setattr(session, name, value)
        return session


@dataclass(frozen=True)
class Heartbeat:
    """What a node writes into `M{node:ID}` (the key exists while the node is alive)."""

    address: str
    epoch: str
    capacity: int = 0
    started_at: float = 0.0
    health: str = ""
    sessions: int = 0

    def encode(self) -> dict[str, str]:
        return {
            "address": self.address,
            "epoch": self.epoch,
            "capacity": str(self.capacity),
            "started_at": repr(self.started_at),
            "health": self.health,
            "sessions": str(self.sessions),
        }

    @classmethod
    def decode(cls, raw: Mapping[Any, Any]) -> Heartbeat | None:
        """None when the key is gone (or names no address)."""
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("address"):
            return None
        capacity, sessions = fields.get("capacity", "0"), fields.get("sessions", "0")
        try:
            started = float(fields.get("started_at") or 0)
        except ValueError:
            started = 0.0
        return cls(
            address=fields["address"],
            epoch=fields.get("epoch", ""),
            capacity=int(capacity) if capacity.isdigit() else 0,
            started_at=started,
            health=fields.get("health", ""),
            sessions=int(sessions) if sessions.isdigit() else 0,
        )
