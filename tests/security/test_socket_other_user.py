"""Another user cannot use the control socket (issue 10: "who can reach the socket").

A real second identity: a client process running as uid 65534 (no account needed:
the test runs it with `user=`/`group=`, as root only; skipped otherwise). It tries
the socket of a real `serve --detach` twice: as `serve` leaves it (a 0700 state
dir, a 0600 socket: the kernel refuses the connect), and after the modes were opened
up by hand (the server's own SO_PEERCRED check must refuse it, and keep serving).
The client is a few lines of the system Python, which that user can run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon, kill_daemon, sim_loops_toml, start_daemon

OTHER_UID = 65534
CLIENT = """\
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": exc.errno}))
    sys.exit(0)
try:  # a refused client may be hung up on before it has sent anything
    sock.sendall(b'{"id": 1, "op": "snapshot", "args": {}}\\n')
except BrokenPipeError:
    pass
data = b""
while chunk := sock.recv(65536):
    data += chunk
print(json.dumps({"lines": [json.loads(x) for x in data.splitlines() if x.strip()]}))
"""


def other_user_python() -> str:
    """An interpreter uid 65534 can run (the test's own may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            probe = subprocess.run(
                [candidate, "-c", "import os; print(os.getuid())"],
                user=OTHER_UID,
                group=OTHER_UID,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == str(OTHER_UID):
                return candidate
    pytest.skip("no Python interpreter here that uid 65534 may run")


@pytest.fixture
def served() -> Iterator[Daemon]:
    """`serve --detach` in a folder other users may traverse (0711), not under
    pytest's private tmp dir: only the state dir's own modes keep them out."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    base = Path(tempfile.mkdtemp(prefix="lv-other-user-"))
    base.chmod(0o711)
    d = start_daemon(base, sim_loops_toml())
    try:
        yield d
    finally:
        kill_daemon(d.pid)
        shutil.rmtree(base, ignore_errors=True)


def as_other_user(python: str, sock: Path) -> dict[str, object]:
    r = subprocess.run(
        [python, "-c", CLIENT, str(sock)],
        user=OTHER_UID,
        group=OTHER_UID,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


def test_another_user_cannot_connect_and_is_refused_by_uid_when_modes_are_opened(
    served: Daemon,
) -> None:
    python = other_user_python()
    sock = served.socket
    assert stat.S_IMODE(served.state.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    # As serve leaves it: the kernel refuses the other user (EACCES on the 0700 dir).
    assert as_other_user(python, sock) == {"connect": 13}

    # Modes opened up by hand: the connection is made, and the server refuses it.
    served.state.chmod(0o711)
    sock.chmod(0o666)
    seen = as_other_user(python, sock)
    lines = seen.get("lines")
    assert isinstance(lines, list), seen
    assert len(lines) == 1, lines  # one refusal, then the server hangs up
    [refusal] = lines
    assert refusal["ok"] is False
    assert refusal["kind"] == "permission"
    assert f"uid {OTHER_UID}" in refusal["error"]
    assert "hello" not in refusal  # not a word of the run
    assert "loops" not in refusal

    # ...and goes on serving its own user.
    served.state.chmod(0o700)
    assert served.status()["loops"]
    assert f"permission denied: uid {OTHER_UID}" in served.log
