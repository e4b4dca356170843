"""`meshctl`: a command line over the public SessionMesh API.

Router address from `--router` or `MESH_ROUTER` (default 127.0.0.1:50051); token from
`--token` or `MESH_TOKEN`. TLS: `--ca FILE` or `MESH_TLS_CA` verifies the router with that CA,
`--tls` with the system's roots; without either, a router off loopback is refused unless
MESH_ALLOW_INSECURE=true (the token would cross the network in clear). Errors print the gRPC status and message and exit 1.
`watch` exits 0 on READY (unless --follow), 3 on FAILED, 4 on LOGGED_OUT, 5 on STOPPED
(unless --follow). `drain` (admin tenants only) exits 0 when every RemoteAuth session moved,
1 when some failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import mimetypes
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
import qrcode

from sessionmesh.config import ConfigError, env_bool, parse_address
from sessionmesh.tls import client_channel_security
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from webhooks import ctl as webhook_ctl

DEFAULT_ROUTER = "127.0.0.1:50051"
DRAIN_TIMEOUT = 600.0  # a drain moves many sessions; each may wait out a lease
SEND_TIMEOUT = 300.0  # a send may wait behind others in its session's queue
ACK_NAMES = {-1: "ERROR", 0: "PENDING", 1: "SERVER", 2: "DEVICE", 3: "READ", 4: "PLAYED"}
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_LOGGED_OUT = 4
EXIT_STOPPED = 5
EXIT_INTERRUPTED = 130

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
]


class Usage(Exception):
    """A usage problem: printed, exit 2."""


class Api:
    """The SessionMesh stub with the bearer token and a deadline on unary calls."""

    def __init__(self, channel: grpc.Channel, token: str, timeout: float) -> None:
        self.stub = mesh_pb2_grpc.SessionMeshStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout)

    def watch(self, session_id: str, after_seq: int) -> Iterable[pb.SessionEvent]:
        request = mesh_pb2.WatchSessionRequest(session_id=session_id, after_seq=after_seq)
        events: Iterable[pb.SessionEvent] = self.stub.WatchSession(request, metadata=self.metadata)
        return events


def state_name(state: int) -> str:
    return str(pb.SessionState.Name(state))


def when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return str(ts.ToDatetime(tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S"))


def print_session(s: pb.Session, out: TextIO) -> None:
    rows = [
        ("session", s.session_id),
        ("state", state_name(s.state)),
        ("node", s.node_id or "-"),
        ("auth", pb.AuthStrategy.Name(s.auth_strategy)),
        ("phone", s.phone or "-"),
        ("created", when(s.created_at)),
        ("updated", when(s.updated_at)),
        ("ready", when(s.ready_at)),
        ("last seq", str(s.last_seq)),
    ]
    if s.labels:
        rows.append(("labels", ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))))
    if s.last_error:
        rows.append(("last error", s.last_error))
    for key, value in rows:
        print(f"{key + ':':<12}{value}", file=out)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print(
            "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip(), file=out
        )


def draw_qr(code: str, out: TextIO) -> None:
    qr = qrcode.QRCode(border=2)
    qr.add_data(code)
    qr.make(fit=True)
    qr.print_ascii(out=out, invert=True)


class Watcher:
    """Prints a session's events; decides the exit status from its state."""

    def __init__(self, follow: bool, out: TextIO) -> None:
        self.follow = follow
        self.out = out
        self.state = pb.SESSION_STATE_UNSPECIFIED
        self.percent = -1

    def verdict(self) -> int | None:
        """The exit status the current state calls for, or None to keep watching."""
        if self.state == pb.READY and not self.follow:
            return 0
        if self.state == pb.FAILED:
            return EXIT_FAILED
        if self.state == pb.LOGGED_OUT:
            return EXIT_LOGGED_OUT
        if self.state == pb.STOPPED and not self.follow:
            return EXIT_STOPPED
        return None

    def show(self, ev: pb.SessionEvent, now: dt.datetime) -> None:
        kind = ev.WhichOneof("event")
        if kind == "qr":
            expires = (
                ev.qr.expires_at.ToDatetime(tzinfo=dt.UTC) if ev.qr.HasField("expires_at") else None
            )
            if expires is not None and expires <= now:
                print(f"[{ev.seq}] QR attempt {ev.qr.attempt} (expired)", file=self.out)
                return
            left = f", expires in {(expires - now).total_seconds():.0f}s" if expires else ""
            print(
                f"[{ev.seq}] QR attempt {ev.qr.attempt}{left}: scan it with WhatsApp", file=self.out
            )
            draw_qr(ev.qr.code, self.out)
            print(f"payload: {ev.qr.code}", file=self.out)
        elif kind == "loading":
            if ev.loading.percent != self.percent:
                self.percent = ev.loading.percent
                print(f"[{ev.seq}] loading {ev.loading.percent}%", file=self.out)
        elif kind == "state":
            self.state = ev.state.state
            reason = f" ({ev.state.reason})" if ev.state.reason else ""
            print(f"[{ev.seq}] {state_name(ev.state.state)}{reason}", file=self.out)
        elif kind == "message":
            m = ev.message
            arrow = "->" if m.direction == pb.OUTBOUND else "<-"
            who = m.chat_id if m.direction == pb.OUTBOUND else (m.sender or m.chat_id)
            what = pb.MessageType.Name(m.type).lower()
            media = ""
            if m.HasField("media"):
                media = f" [{m.media.mimetype or what}{' ' + m.media.filename if m.media.filename else ''}]"
            text = f" {m.text!r}" if m.text else ""
            print(f"[{ev.seq}] message {arrow} {who} {what}{media}{text} ({m.id})", file=self.out)
        elif kind == "ack":
            print(
                f"[{ev.seq}] ack {ACK_NAMES.get(ev.ack.ack, str(ev.ack.ack))} {ev.ack.message_id}",
                file=self.out,
            )
        self.out.flush()


def watch(api: Api, session_id: str, after: int, follow: bool, out: TextIO) -> int:
    """Print events; stop at READY (unless `follow`: then messages and acks too), or at an end."""
    current: pb.Session = api.call("GetSession", mesh_pb2.GetSessionRequest(session_id=session_id))
    watcher = Watcher(follow, out)
    if after >= current.last_seq:
        watcher.state = current.state
        print(f"{session_id}: {state_name(current.state)}", file=out)
        verdict = watcher.verdict()
        if verdict is not None:
            if current.state == pb.READY:
                print("(--follow to see its messages and acks)", file=out)
            return verdict
    for ev in api.watch(session_id, after):
        watcher.show(ev, dt.datetime.now(dt.UTC))
        if ev.seq >= current.last_seq:
            verdict = watcher.verdict()
            if verdict is not None:
                return verdict
    print("meshctl: the router closed the stream", file=sys.stderr)
    return EXIT_ERROR


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"--label must be key=value, got {item!r}")
        labels[key] = value
    return labels


def run(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if args.command == "webhook":
        return webhook_ctl.run(args, api, out)
    if args.command == "create":
        try:
            before = api.call("GetSession", mesh_pb2.GetSessionRequest(session_id=args.id)).last_seq
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            before = 0
        request = mesh_pb2.CreateSessionRequest(
            session_id=args.id,
            auth_strategy=pb.REMOTE if args.remote else pb.LOCAL,
            labels=parse_labels(args.label),
        )
        print_session(api.call("CreateSession", request), out)
        if args.watch:
            return watch(api, args.id, before, args.follow, out)
    elif args.command == "watch":
        return watch(api, args.id, args.after, args.follow, out)
    elif args.command == "send":
        sending = mesh_pb2.SendMessageRequest(
            session_id=args.id,
            to=args.to,
            idempotency_key=args.key or f"meshctl-{uuid.uuid4().hex}",
            reply_to=args.reply_to or "",
        )
        if args.file:
            path = Path(args.file)
            sending.media.data = path.read_bytes()
            sending.media.mimetype = args.mimetype or (
                mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            )
            sending.media.filename = path.name
            sending.media.caption = args.text or ""
        else:
            if not args.text:
                raise Usage("give the message text, or --file")
            sending.text = args.text
        reply = api.stub.SendMessage(
            sending, metadata=api.metadata, timeout=max(api.timeout, SEND_TIMEOUT)
        )
        again = " (already sent under this key; nothing new was sent)" if reply.duplicate else ""
        print(f"{reply.message_id} {ACK_NAMES.get(reply.ack, str(reply.ack))}{again}", file=out)
    elif args.command == "media":
        chunks = api.stub.GetMessageMedia(
            mesh_pb2.GetMessageMediaRequest(session_id=args.id, message_id=args.message_id),
            metadata=api.metadata,
            timeout=max(api.timeout, SEND_TIMEOUT),
        )
        first: mesh_pb2.MediaChunk | None = None
        data = bytearray()
        for chunk in chunks:
            first = first or chunk
            data += chunk.data
        name = args.output or (first.filename if first and first.filename else "media.bin")
        Path(name).write_bytes(bytes(data))
        mimetype = first.mimetype if first else ""
        print(f"{name}: {len(data)} bytes {mimetype}", file=out)
    elif args.command == "get":
        print_session(api.call("GetSession", mesh_pb2.GetSessionRequest(session_id=args.id)), out)
    elif args.command in ("stop", "logout"):
        method, kind = (
            ("StopSession", mesh_pb2.StopSessionRequest)
            if args.command == "stop"
            else ("LogoutSession", mesh_pb2.LogoutSessionRequest)
        )
        print_session(api.call(method, kind(session_id=args.id)), out)
    elif args.command == "list":
        rows: list[list[str]] = []
        token = ""
        while True:
            page = api.call("ListSessions", mesh_pb2.ListSessionsRequest(page_token=token))
            rows += [
                [
                    s.session_id,
                    state_name(s.state),
                    s.node_id or "-",
                    s.phone or "-",
                    when(s.updated_at),
                ]
                for s in page.sessions
            ]
            token = page.next_page_token
            if not token:
                break
        print_table(["SESSION", "STATE", "NODE", "PHONE", "UPDATED"], rows, out)
    elif args.command == "drain":
        drain = mesh_pb2.DrainNodeRequest(node_id=args.node_id, parallelism=args.parallelism)
        reply = api.stub.DrainNode(
            drain, metadata=api.metadata, timeout=max(api.timeout, DRAIN_TIMEOUT)
        )
        print(
            f"node {reply.node_id}: {reply.moved} moved, {reply.stayed} stayed (LocalAuth), "
            f"{len(reply.failed)} failed",
            file=out,
        )
        for line in reply.failed:
            print(f"  failed: {line}", file=out)
        return EXIT_ERROR if reply.failed else 0
    elif args.command == "cluster":
        status = api.call("GetClusterStatus", mesh_pb2.GetClusterStatusRequest())
        print_table(
            ["NODE", "ADDRESS", "HEALTH", "SESSIONS", "MEMORY"],
            [
                [
                    n.node_id or "-",
                    n.address,
                    pb.NodeHealth.Name(n.health),
                    f"{n.sessions}/{n.capacity}",
                    f"{n.memory_bytes / 2**20:.0f} MiB",
                ]
                for n in status.nodes
            ],
            out,
        )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshctl", description="Control Session Mesh sessions.")
    p.add_argument(
        "--router",
        default=os.environ.get("MESH_ROUTER", DEFAULT_ROUTER),
        help="router host:port (MESH_ROUTER; default %(default)s)",
    )
    p.add_argument("--token", default=os.environ.get("MESH_TOKEN"), help="API token (MESH_TOKEN)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (not watch)")
    p.add_argument(
        "--ca",
        default=os.environ.get("MESH_TLS_CA") or None,
        metavar="FILE",
        help="verify the router's TLS certificate with this CA (MESH_TLS_CA)",
    )
    p.add_argument("--tls", action="store_true", help="TLS, verified with the system's roots")
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create (or restart) a session")
    create.add_argument("id")
    create.add_argument("--remote", action="store_true", help="keep the login in Redis")
    create.add_argument("--label", action="append", default=[], metavar="K=V")
    create.add_argument("--watch", action="store_true", help="then watch it (QR, states)")
    create.add_argument(
        "--follow", action="store_true", help="with --watch: keep going after READY"
    )
    w = sub.add_parser("watch", help="print QR codes, loading and states as they happen")
    w.add_argument("id")
    w.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    w.add_argument(
        "--follow", action="store_true", help="keep watching after READY (messages and acks)"
    )
    snd = sub.add_parser("send", help="send a message from a READY session")
    snd.add_argument("id")
    snd.add_argument("text", nargs="?", help="the text (the caption with --file)")
    snd.add_argument("--to", required=True, help="phone number (country code first) or chat id")
    snd.add_argument("--file", help="send this file as an image or document")
    snd.add_argument("--mimetype", help="the file's MIME type (default: guessed from its name)")
    snd.add_argument("--reply-to", help="id of the message to quote")
    snd.add_argument(
        "--key", help="idempotency key (default: a new one); the same key never sends twice"
    )
    med = sub.add_parser("media", help="save a media message's file")
    med.add_argument("id")
    med.add_argument("message_id")
    med.add_argument("-o", "--output", help="where to write it (default: its file name)")
    for name, text in (
        ("get", "show a session"),
        ("stop", "stop, keeping the login"),
        ("logout", "unlink and delete the login"),
    ):
        sub.add_parser(name, help=text).add_argument("id")
    sub.add_parser("list", help="list your sessions")
    sub.add_parser("cluster", help="show the nodes")
    drain = sub.add_parser(
        "drain", help="move a node's RemoteAuth sessions elsewhere, then stop it serving (admin)"
    )
    drain.add_argument("node_id")
    drain.add_argument(
        "--parallelism",
        type=int,
        default=0,
        metavar="N",
        help="sessions moved at once, 1-32 (default: 4)",
    )
    webhook_ctl.add_parser(sub)
    return p


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to the router: TLS when asked for, plaintext only to loopback (or when
    MESH_ALLOW_INSECURE=true)."""
    ca: bytes | None = None
    if args.ca:
        try:
            ca = Path(args.ca).read_bytes()
        except OSError as e:
            raise ConfigError(f"--ca/MESH_TLS_CA: cannot read {args.ca!r}: {e.strerror}") from None
    credentials = client_channel_security(
        parse_address(args.router, "--router/MESH_ROUTER"),
        ca=ca,
        use_system_roots=args.tls,
        allow_insecure=env_bool(os.environ, "MESH_ALLOW_INSECURE", False),
        var="--router/MESH_ROUTER",
    )
    if credentials is None:
        return grpc.insecure_channel(args.router, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(args.router, credentials, options=CHANNEL_OPTIONS)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    p = parser()
    # argparse gives a positional after an option to nobody: `send ID --to N "text"` leaves
    # the text over, so send takes it from what is left.
    args, rest = p.parse_known_args(argv)
    if rest:
        if args.command != "send" or args.text is not None or len(rest) != 1 or rest[0][:1] == "-":
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        args.text = rest[0]
    if not args.token:
        print("meshctl: no token: pass --token or set MESH_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "watch" and args.after < 0:
        print("meshctl: --after must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "drain" and not 0 <= args.parallelism <= 32:
        print("meshctl: --parallelism must be 1-32", file=sys.stderr)
        return EXIT_USAGE
    try:
        channel = open_channel(args)
    except ConfigError as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with channel:
            return run(args, Api(channel, args.token, args.timeout), out)
    except (Usage, webhook_ctl.Usage) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as e:
        code = e.code()
        print(f"meshctl: {code.name if code else 'UNKNOWN'}: {e.details()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
