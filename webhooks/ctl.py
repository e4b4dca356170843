"""`meshctl webhook ...`: add, list, update, rm, rotate, deliveries, dead, replay."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from sessionmesh.v1 import mesh_pb2
from webhooks.model import EVENTS

OUTCOMES = {
    mesh_pb2.DELIVERED: "delivered",
    mesh_pb2.RETRYING: "retrying",
    mesh_pb2.DEAD: "dead",
}


class Api(Protocol):
    def call(self, method: str, request: Any) -> Any: ...


class Usage(Exception):
    """A usage problem: printed, exit 2."""


def add_parser(sub: Any) -> None:
    hook = sub.add_parser("webhook", help="webhooks: add, list, update, rm, rotate, deliveries...")
    cmd = hook.add_subparsers(dest="webhook_command", required=True)
    events_help = f"events, comma-separated or repeated: {', '.join(EVENTS)}"
    add = cmd.add_parser("add", help="register a webhook (prints its secret, once)")
    add.add_argument("url")
    add.add_argument("--events", action="append", required=True, help=events_help)
    add.add_argument("--session", default="", help="only this session's (replaces the tenant's)")
    add.add_argument("--header", action="append", default=[], metavar="K=V")
    add.add_argument("--secret", default="", help="whsec_... (default: a new one)")
    ls = cmd.add_parser("list", help="list webhooks")
    ls.add_argument("--session", default="")
    up = cmd.add_parser("update", help="change a webhook's url, events, headers or state")
    up.add_argument("id")
    up.add_argument("--url")
    up.add_argument("--events", action="append", help=events_help)
    up.add_argument("--header", action="append", metavar="K=V", help="replaces all headers")
    up.add_argument("--clear-headers", action="store_true")
    state = up.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="deliver again (after a 410)")
    state.add_argument("--disable", action="store_true")
    for name, text in (("rm", "delete a webhook"), ("rotate", "new secret; the old stops now")):
        cmd.add_parser(name, help=text).add_argument("id")
    for name, text in (("deliveries", "recent deliveries"), ("dead", "dead letters")):
        p = cmd.add_parser(name, help=text)
        p.add_argument("--webhook", default="", metavar="ID")
        p.add_argument("--limit", type=int, default=50)
    replay = cmd.add_parser("replay", help="queue dead letters again (same webhook-id)")
    replay.add_argument("ids", nargs="*")
    replay.add_argument("--all", action="store_true", help="every dead letter (of --webhook)")
    replay.add_argument("--webhook", default="", metavar="ID")


def _events(values: Sequence[str]) -> list[str]:
    return [e.strip() for v in values for e in v.split(",") if e.strip()]


def _headers(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"--header must be K=V, got {item!r}")
        out[key] = value
    return out


def _when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return str(ts.ToDatetime(tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S"))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        line = "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False))
        print(line.rstrip(), file=out)


def _show(w: Any, out: TextIO) -> None:
    rows = [
        ("id", w.id),
        ("url", w.url),
        ("events", ",".join(w.events)),
        ("session", w.session_id or "(every session)"),
        ("enabled", "yes" if w.enabled else f"no ({w.disabled_reason})"),
    ]
    if w.headers:
        rows.append(("headers", ",".join(f"{k}={v}" for k, v in sorted(w.headers.items()))))
    if w.secret:
        rows.append(("secret", f"{w.secret}   (shown once: keep it)"))
    for key, value in rows:
        print(f"{key + ':':<10}{value}", file=out)


def _deliveries(items: Sequence[Any], out: TextIO) -> None:
    _table(
        ["ID", "WEBHOOK", "EVENT", "SESSION", "OUTCOME", "TRIES", "STATUS", "WHEN", "ERROR"],
        [
            [
                d.id,
                d.webhook_id,
                d.event,
                d.session_id,
                OUTCOMES.get(d.outcome, "-"),
                str(d.attempts),
                str(d.last_status or "-"),
                _when(d.finished_at if d.finished_at.seconds else d.created_at),
                d.last_error[:60] or "-",
            ]
            for d in items
        ],
        out,
    )


def run(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    c = args.webhook_command
    if c == "add":
        made = api.call(
            "CreateWebhook",
            mesh_pb2.CreateWebhookRequest(
                url=args.url,
                events=_events(args.events),
                session_id=args.session,
                headers=_headers(args.header),
                secret=args.secret,
            ),
        )
        _show(made, out)
    elif c == "list":
        found = api.call("ListWebhooks", mesh_pb2.ListWebhooksRequest(session_id=args.session))
        _table(
            ["ID", "URL", "EVENTS", "SESSION", "ENABLED"],
            [
                [
                    w.id,
                    w.url,
                    ",".join(w.events),
                    w.session_id or "*",
                    "yes" if w.enabled else f"no: {w.disabled_reason}",
                ]
                for w in found.webhooks
            ],
            out,
        )
    elif c == "update":
        mask: list[str] = []
        request = mesh_pb2.UpdateWebhookRequest(id=args.id)
        if args.url is not None:
            mask.append("url")
            request.url = args.url
        if args.events:
            mask.append("events")
            request.events.extend(_events(args.events))
        if args.header or args.clear_headers:
            mask.append("headers")
            request.headers.update(_headers(args.header or []))
        if args.enable or args.disable:
            mask.append("enabled")
            request.enabled = bool(args.enable)
        if not mask:
            raise Usage("say what to change: --url, --events, --header, --enable or --disable")
        request.update_mask.extend(mask)
        _show(api.call("UpdateWebhook", request), out)
    elif c == "rm":
        api.call("DeleteWebhook", mesh_pb2.DeleteWebhookRequest(id=args.id))
        print(f"deleted {args.id}", file=out)
    elif c == "rotate":
        _show(api.call("RotateWebhookSecret", mesh_pb2.RotateWebhookSecretRequest(id=args.id)), out)
    elif c == "deliveries":
        found = api.call(
            "ListDeliveries",
            mesh_pb2.ListDeliveriesRequest(webhook_id=args.webhook, page_size=args.limit),
        )
        _deliveries(found.deliveries, out)
    elif c == "dead":
        found = api.call(
            "ListDeadLetters",
            mesh_pb2.ListDeadLettersRequest(webhook_id=args.webhook, page_size=args.limit),
        )
        _deliveries(found.dead_letters, out)
        if found.next_page_token:
            print("(more: raise --limit, at most 1000)", file=out)
    elif c == "replay":
        if not args.all and not args.ids:
            raise Usage("name dead letters to replay, or --all")
        reply = api.call(
            "ReplayDeadLetters",
            mesh_pb2.ReplayDeadLettersRequest(
                ids=args.ids, all=args.all, webhook_id=args.webhook if args.all else ""
            ),
        )
        print(f"replayed {reply.replayed} (under their original webhook-id)", file=out)
    return 0
