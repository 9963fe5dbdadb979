"""The state dir is guarded like OpenSSH guards ~/.ssh (issue 10, items 1c and 2).

Real CLI subprocesses on real directories: a planted symlink (for the state dir
itself, and for each file loopvisor writes in it), a directory owned by another
user or writable by the group, and the modes every mode leaves behind. Every
refusal is exit 3 with a message naming the path, never a traceback, and the
target of a planted link is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    PY,
    alive,
    cli_env,
    loop,
    run_cli,
    sim_agent,
    supervisor_table,
    wait_gone,
    write_config,
)

NOBODY_UID = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def quick_config(tmp_path: Path) -> Path:
    """One sim loop of one iteration: a run that ends in well under a second."""
    return write_config(
        tmp_path,
        supervisor_table(2),
        sim_agent("fast"),
        loop("one", "fast", max_iterations=1, done_marker="NEVER"),
    )


def endless_config(tmp_path: Path) -> Path:
    """A sim loop that keeps going until `serve` is shut down."""
    return write_config(
        tmp_path,
        supervisor_table(2),
        sim_agent("slow", rate=40, reply_tokens=20),
        loop("l0", "slow", max_iterations=100_000, done_marker="NEVER", on_stuck="continue"),
    )


def finished(r: subprocess.CompletedProcess[str]) -> bool:
    """The run went through (its one loop ends failed: no done marker is ever said)."""
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)
    return True


def assert_refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    for word in words:
        assert word in r.stderr, r.stderr


@contextlib.contextmanager
def serving(tmp_path: Path, state: Path, *extra: str) -> Iterator[subprocess.CompletedProcess[str]]:
    """`serve --detach`; whatever it started is shut down and killed on the way out."""
    config = endless_config(tmp_path)
    r = run_cli("serve", config, "--state-dir", state, "--detach", *extra, cwd=tmp_path, timeout=45)
    try:
        yield r
    finally:
        pids = [int(w[:-1]) for w in r.stdout.split() if w.endswith(")") and w[:-1].isdigit()]
        if pids and alive(pids):
            run_cli("ctl", "shutdown", "--state-dir", state, cwd=tmp_path)
            if wait_gone(pids, timeout=10):
                for pid in alive(pids):
                    os.killpg(pid, signal.SIGKILL)


# -- modes ---------------------------------------------------------------------------
def test_run_makes_state_dir_0700_and_journal_lock_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = run_cli("run", quick_config(tmp_path), "--state-dir", state, "--quiet", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    assert mode(state) == 0o700
    files = [p for p in state.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"journal.sqlite3", "supervisor.lock"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_run_tightens_an_older_0755_dir_and_0644_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = quick_config(tmp_path)
    assert finished(run_cli("run", config, "--state-dir", state, "--quiet", cwd=tmp_path))
    state.chmod(0o755)
    for p in state.iterdir():
        p.chmod(0o644)
    assert finished(run_cli("run", config, "--state-dir", state, "--quiet", cwd=tmp_path))
    assert mode(state) == 0o700
    assert {p.name: mode(p) for p in state.iterdir()} == {p.name: 0o600 for p in state.iterdir()}


def test_resume_tightens_the_journal_too(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = quick_config(tmp_path)
    assert finished(run_cli("run", config, "--state-dir", state, "--quiet", cwd=tmp_path))
    (state / "journal.sqlite3").chmod(0o644)
    r = run_cli("run", config, "--state-dir", state, "--resume", "--quiet", cwd=tmp_path)
    assert_refused(r, "nothing to resume")
    assert mode(state / "journal.sqlite3") == 0o600


def test_serve_makes_socket_pid_log_and_journal_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(tmp_path, state) as r:
        assert r.returncode == 0, r.stderr
        assert mode(state) == 0o700
        for name in ("control.sock", "serve.pid", "serve.log", "journal.sqlite3"):
            assert mode(state / name) == 0o600, name
        assert stat.S_ISSOCK((state / "control.sock").lstat().st_mode)


def test_the_console_makes_its_state_dir_and_journal_private_too(tmp_path: Path) -> None:
    """`loopvisor run` on a terminal opens the console (Textual) with its own durable
    supervisor: the same modes as the headless run, an older 0755 dir tightened."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    config = endless_config(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", str(config), "--state-dir", str(state)],
        cwd=tmp_path,
        env=cli_env(TERM="xterm-256color", COLUMNS="100", LINES="30"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    shown = bytearray()

    def drain() -> None:  # the console must never block on a full terminal
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    files = [state / "journal.sqlite3", state / "supervisor.lock"]
    try:
        deadline = time.monotonic() + 30
        while not (all(f.exists() for f in files) and b"\x1b[?1049h" in shown):
            assert proc.poll() is None, bytes(shown[-2000:])
            assert time.monotonic() < deadline, bytes(shown[-2000:])
            time.sleep(0.05)
        modes = {p.name: mode(p) for p in state.iterdir() if p.is_file()}
        dir_mode = mode(state)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            os.close(master)
            reader.join(timeout=5)
    assert dir_mode == 0o700
    assert {"journal.sqlite3", "supervisor.lock"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)


# -- refusals ------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_symlinked_state_dir_is_refused_and_its_target_untouched(
    tmp_path: Path, command: str
) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o1777)
    state = tmp_path / "state"
    state.symlink_to(target)
    if command == "run":
        r = run_cli("run", quick_config(tmp_path), "--state-dir", state, cwd=tmp_path)
        assert_refused(r, str(state), "symbolic link")
    else:
        with serving(tmp_path, state) as r:
            assert_refused(r, str(state), "symbolic link")
    assert mode(target) == 0o1777
    assert list(target.iterdir()) == []


def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY_UID, NOBODY_UID)
    r = run_cli("run", quick_config(tmp_path), "--state-dir", state, cwd=tmp_path)
    assert_refused(r, str(state), f"uid {NOBODY_UID}")
    assert list(state.iterdir()) == []
    with serving(tmp_path, state) as r:
        assert_refused(r, str(state), f"uid {NOBODY_UID}")
    assert state.stat().st_uid == NOBODY_UID
    assert mode(state) == 0o700


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o1777])
def test_a_group_or_world_writable_state_dir_is_refused(tmp_path: Path, bits: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(bits)
    r = run_cli("run", quick_config(tmp_path), "--state-dir", state, cwd=tmp_path)
    assert_refused(r, str(state), "writable")
    assert mode(state) == bits
    assert list(state.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("journal.sqlite3", "run"),
        ("journal.sqlite3-wal", "run"),
        ("supervisor.lock", "run"),
        ("serve.pid", "serve"),
        ("serve.log", "serve"),
        ("journal.sqlite3", "serve"),
    ],
)
def test_a_planted_symlink_in_the_state_dir_is_refused_not_followed(
    tmp_path: Path, name: str, command: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"")  # empty: SQLite would happily make a journal of it
    victim.chmod(0o644)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / name).symlink_to(victim)
    before = victim.stat()
    if command == "run":
        r = run_cli("run", quick_config(tmp_path), "--state-dir", state, cwd=tmp_path)
        assert_refused(r, str(state / name), "symbolic link")
    else:
        with serving(tmp_path, state) as r:
            assert_refused(r, str(state / name), "symbolic link")
    after = victim.stat()
    assert (after.st_size, after.st_mode, after.st_mtime_ns) == (
        before.st_size,
        before.st_mode,
        before.st_mtime_ns,
    )
    assert (state / name).is_symlink()


def test_a_planted_control_socket_link_is_refused_not_followed(tmp_path: Path) -> None:
    """`control.sock -> somewhere`: serve neither binds through it nor unlinks it."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "control.sock").symlink_to(victim)
    before = victim.stat()
    # In the foreground, where the refusal is the exit code (3); `--detach` says 1,
    # "exited during start-up", and shows this same line from the log.
    r = run_cli("serve", endless_config(tmp_path), "--state-dir", state, cwd=tmp_path)
    assert_refused(r, str(state / "control.sock"), "not a socket")
    after = victim.stat()
    assert (after.st_size, after.st_mode, after.st_mtime_ns) == (
        before.st_size,
        before.st_mode,
        before.st_mtime_ns,
    )
    assert (state / "control.sock").is_symlink()


def test_a_symlinked_state_dir_gets_no_worktrees_either(tmp_path: Path) -> None:
    """`run` makes loops' git worktrees in STATE_DIR/worktrees before anything else."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    target = tmp_path / "shared"
    target.mkdir(mode=0o700)
    state = tmp_path / "state"
    state.symlink_to(target)
    config = write_config(
        tmp_path,
        supervisor_table(2),
        sim_agent("fast"),
        loop("one", "fast", max_iterations=1, done_marker="NEVER", workspace={"repo": "repo"}),
    )
    r = run_cli("run", config, "--state-dir", state, cwd=tmp_path)
    assert_refused(r, str(state), "symbolic link")
    assert list(target.iterdir()) == []


def test_a_hard_link_in_place_of_the_journal_is_refused(tmp_path: Path) -> None:
    """A second name for some other file: written through, it would change that file."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    os.link(victim, state / "journal.sqlite3")
    r = run_cli("run", quick_config(tmp_path), "--state-dir", state, cwd=tmp_path)
    assert_refused(r, str(state / "journal.sqlite3"), "regular file")
    assert victim.stat().st_size == 0
