"""Sandbox settings from the environment, and the `mesh-sandbox` command's lifecycle."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.app import Sandbox, SandboxSettings
from sessionmesh.config import ConfigError
from tests.helpers import DEADLINE, free_port, wait_for


def test_from_env_reads_every_knob() -> None:
    env = {
        "SANDBOX_FIRST_QR_TTL": "30",
        "SANDBOX_QR_TTL": "10.5",
        "SANDBOX_QR_COUNT": "3",
        "SANDBOX_LOAD_DELAY": "1",
        "SANDBOX_QR_DELAY": "0.5",
        "SANDBOX_SYNC_DELAY": "2",
        "SANDBOX_ACK_DELAY": "0.1",
        "SANDBOX_REFUSE_WEBDRIVER": "true",
        "SANDBOX_LEGACY_QR_DOM": "1",
        "SANDBOX_PASSKEY": "yes",
        "SANDBOX_INITIAL_STATE": "DEPRECATED_VERSION",
        "SANDBOX_PAGE_WEIGHT": "light",
        "SANDBOX_HEAP_MB": "50",
        "SANDBOX_VERSION": "2.3000.5",
    }
    s = SandboxSettings.from_env(env)
    assert (s.first_qr_ttl, s.qr_ttl, s.qr_count) == (30.0, 10.5, 3)
    assert (s.load_delay, s.qr_delay, s.sync_delay, s.ack_delay) == (1.0, 0.5, 2.0, 0.1)
    assert (s.refuse_webdriver, s.legacy_qr_dom, s.passkey) == (True, True, True)
    assert (s.initial_state, s.page_weight, s.version) == (
        "DEPRECATED_VERSION",
        "light",
        "2.3000.5",
    )
    assert (s.weight.heap_mb, s.weight.script_mb) == (50.0, 0.25)
    assert SandboxSettings.from_env({}) == SandboxSettings()


def test_defaults_are_the_hard_page() -> None:
    s = SandboxSettings()
    assert (s.refuse_webdriver, s.legacy_qr_dom, s.passkey, s.initial_state) == (
        False, False, False, ""
    )  # fmt: skip
    assert s.page_weight == "calibrated" and s.weight.heap_mb >= 100


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SANDBOX_QR_TTL", "soon"),
        ("SANDBOX_QR_TTL", "0"),
        ("SANDBOX_QR_COUNT", "0"),
        ("SANDBOX_QR_COUNT", "2.5"),
        ("SANDBOX_SYNC_DELAY", "-1"),
        ("SANDBOX_LOAD_DELAY", "inf"),
        ("SANDBOX_PASSKEY", "maybe"),
        ("SANDBOX_PAGE_WEIGHT", "heavy"),
        ("SANDBOX_INITIAL_STATE", "CONNECTED"),
        ("SANDBOX_IDB_MB", "-2"),
    ],
)
def test_bad_env_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        SandboxSettings.from_env({var: value})


async def test_configure_validates_and_close_is_final() -> None:
    async with Sandbox(SandboxSettings(), port=0) as sb:
        with pytest.raises(ConfigError, match="qr_count"):
            sb.configure(qr_count=0)
        with pytest.raises(ConfigError, match="bogus"):
            sb.configure(bogus=1)
        assert sb.configure(qr_ttl=3.0).qr_ttl == 3.0 == sb.settings.qr_ttl
    await sb.aclose()
    with pytest.raises(RuntimeError):
        await sb.start()


async def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "sandbox.log"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandbox.cli", "--port", str(port), "--qr-count", "2",
            "--passkey", "--page-weight", "light", "--state", str(tmp_path / "state.json"),
            stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"

        async def healthy() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(url + "healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(healthy, what="mesh-sandbox to answer /healthz")
        async with aiohttp.ClientSession() as http, http.get(url + "sandbox/config") as resp:
            config: dict[str, Any] = await resp.json()
        assert config["qr_count"] == 2 and config["passkey"] is True
        assert config["page_weight"] == "light"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
        assert (tmp_path / "state.json").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert f"serving on {url}" in out.read_text(), out.read_text()


def test_cli_rejects_bad_env(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from sandbox import cli

    monkeypatch.setenv("SANDBOX_QR_COUNT", "many")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--port", "0"])
    assert "SANDBOX_QR_COUNT" in str(exit_info.value.code)
