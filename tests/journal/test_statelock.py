"""One supervisor per state dir: a real second process is refused, a dead one's lock is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.journal.statelock import StateLock, StateLocked, lock_holder, lock_path

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from supervisor.journal.statelock import StateLock

    with StateLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
    """
)
_TRY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from supervisor.journal.statelock import StateLock, StateLocked

    try:
        with StateLock(Path(sys.argv[1])):
            print("acquired")
    except StateLocked as exc:
        print(exc)
        sys.exit(3)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real supervisor-like process holding the lock on tmp_path/state."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _try_in_subprocess(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _TRY, str(state)], capture_output=True, text=True, timeout=30
    )


def test_second_supervisor_is_refused_naming_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    other = _try_in_subprocess(state)
    assert other.returncode == 3
    assert other.stdout.strip() == f"another loopvisor (pid {holder.pid}) is using {state}"
    with pytest.raises(StateLocked) as caught:
        StateLock(state).acquire()
    assert caught.value.pid == holder.pid
    assert lock_holder(state) == holder.pid


def test_lock_of_a_killed_supervisor_is_taken_over(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(state).read_text().strip() == str(holder.pid)  # stale PID left behind
    assert lock_holder(state) is None
    with StateLock(state) as lock:
        assert lock.locked
        assert lock_path(state).read_text().strip() == str(os.getpid())
        assert lock_holder(state) == os.getpid()
        other = _try_in_subprocess(state)
        assert other.returncode == 3
        assert f"(pid {os.getpid()})" in other.stdout
    assert lock_holder(state) is None
    assert _try_in_subprocess(state).stdout.strip() == "acquired"


def test_released_lock_can_be_taken_again_in_process(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    with lock, pytest.raises(StateLocked):
        StateLock(tmp_path).acquire()
    with StateLock(tmp_path):
        pass
    assert lock_path(tmp_path).read_text() == ""
