"""Streamlit helpers every page uses: the cached client, error boxes, QR images, times."""

from __future__ import annotations

import datetime as dt
import io

import qrcode
import streamlit as st

from console.auth import OPERATOR, ROLE_KEY
from console.client import MeshClient
from console.errors import ApiError
from console.metrics import seconds
from console.settings import ConsoleSettings


@st.cache_resource(show_spinner=False)
def _client(settings: ConsoleSettings) -> MeshClient:
    return MeshClient(settings)


def settings() -> ConsoleSettings:
    return ConsoleSettings.from_env()


def client() -> MeshClient:
    """The one client for these settings; its channel lives as long as the server."""
    return _client(settings())


def require_login() -> None:
    """Stop the page unless someone logged in (app.py shows the login)."""
    if ROLE_KEY not in st.session_state:
        st.stop()


def is_operator() -> bool:
    return bool(st.session_state.get(ROLE_KEY) == OPERATOR)


def show_error(error: ApiError) -> None:
    st.error(f"The router refused **{error.method}**: `{error.code}`: {error.details}")


def qr_png(code: str) -> bytes:
    """The QR payload drawn as a PNG, as WhatsApp Web shows it."""
    qr = qrcode.QRCode(border=2, box_size=8)
    qr.add_data(code)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image().save(buf, format="PNG")
    return buf.getvalue()


def when(ts: object) -> str:
    """A protobuf Timestamp as local time; '-' when unset."""
    value = seconds(ts)
    if not value:
        return "-"
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"
