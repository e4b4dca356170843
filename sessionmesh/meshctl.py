"""`meshctl`: a command line over the public SessionMesh API.

Router address from `--router` or `MESH_ROUTER` (default 127.0.0.1:50051); token from
`--token` or `MESH_TOKEN`. Errors print the gRPC status and message and exit 1.
`watch` exits 0 on READY (unless --follow), 3 on FAILED, 4 on LOGGED_OUT, 5 on STOPPED
(unless --follow). `drain` (admin tenants only) exits 0 when every RemoteAuth session moved,
1 when some failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import grpc
import qrcode

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc

DEFAULT_ROUTER = "127.0.0.1:50051"
DRAIN_TIMEOUT = 600.0  # a drain moves many sessions; each may wait out a lease
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
        self.out.flush()


def watch(api: Api, session_id: str, after: int, follow: bool, out: TextIO) -> int:
    current: pb.Session = api.call("GetSession", mesh_pb2.GetSessionRequest(session_id=session_id))
    watcher = Watcher(follow, out)
    if after >= current.last_seq:
        watcher.state = current.state
        print(f"{session_id}: {state_name(current.state)}", file=out)
        verdict = watcher.verdict()
        if verdict is not None:
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
    w.add_argument("--follow", action="store_true", help="keep watching after READY")
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
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
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
        with grpc.insecure_channel(args.router, options=CHANNEL_OPTIONS) as channel:
            return run(args, Api(channel, args.token, args.timeout), out)
    except Usage as e:
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
