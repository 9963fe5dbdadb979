"""`loopvisor diff` against a real run of a real worktree loop: the whole diff and one
iteration's apply with `git apply` in a fresh clone (binary files, CRLF and control
characters byte for byte), the base stays put when the repo's branch moves on (or
merges the loop's branch), a terminal gets colours and escaped control characters,
and the console's copy is bounded with a marker."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from gitrepo import commits, git, make_repo
from helpers import PY, cli_env, command_agent, loop, run_cli, sim_agent, write_config

from supervisor.api import LoopDiff
from supervisor.config.load import load_config
from supervisor.control import bounds
from supervisor.difflines import DiffKind, line_kinds
from supervisor.gitdiff import DiffError, loop_diff

AGENT = """
import os, pathlib
n = int(os.environ["LOOPVISOR_ITERATION"])
p = pathlib.Path
if n == 1:
    p("notes.txt").write_text("one\\n")
    p("blob.bin").write_bytes(bytes(range(256)))
    p("crlf.txt").write_bytes(b"a\\r\\nb\\r\\n")
    p("esc.txt").write_text("colour \\x1b[31mred\\x1b[0m\\n")
    p("app.py").write_text("print('v2')\\n")
elif n == 3:
    with open("notes.txt", "a") as f:
        f.write("three\\n")
    p("old.txt").unlink()
    p("done.txt").write_text("done\\n")
print("iteration", n)
"""


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A finished run of `fix` (3 iterations; the 2nd changed nothing) and `plain`, a
    loop without a worktree. Returns the config's folder."""
    make_repo(tmp_path / "repo", {"old.txt": "old\n"})
    (tmp_path / "ws").mkdir()
    config = write_config(
        tmp_path,
        command_agent("edit", AGENT),
        sim_agent("quick", converge_after=1),
        loop(
            "fix",
            "edit",
            workspace={"repo": "repo", "worktree": True},
            checks=[{"run": "test -e done.txt"}],
            stuck={"same_failure": 0, "same_output": 0, "oscillation": False},
        ),
        loop("plain", "quick", workspace="ws", done_marker="DONE", max_iterations=1),
    )
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 1, run.stderr  # `plain` fails; `fix` succeeds
    return tmp_path


def diff_bytes(where: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`loopvisor diff ARGS` with stdout a pipe, as bytes."""
    return subprocess.run(
        [PY, "-m", "supervisor", "diff", *args],
        cwd=where,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )


def fresh_clone(repo: Path, at: str, where: Path) -> Path:
    git("clone", "-q", "--no-checkout", repo, where, cwd=repo.parent)
    git("checkout", "-q", "--detach", at, cwd=where)
    return where


def applies(patch: bytes, clone: Path, tree_of: str) -> None:
    """`git apply --index` of `patch` in `clone` yields exactly `tree_of`'s tree."""
    done = subprocess.run(
        ["git", "apply", "--index", "-"], cwd=clone, input=patch, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (
        git("write-tree", cwd=clone).strip()
        == git("rev-parse", f"{tree_of}^{{tree}}", cwd=clone).strip()
    )


def test_the_whole_diff_applies_in_a_fresh_clone_of_the_base(ran: Path) -> None:
    repo = ran / "repo"
    base = git("rev-parse", "main", cwd=repo).strip()
    # The repo's branch moves on, then even merges the loop's work: the base does not.
    (repo / "later.txt").write_text("later\n")
    git("add", "later.txt", cwd=repo)
    git("commit", "-qm", "later", cwd=repo)
    git("merge", "-q", "--no-edit", "loopvisor/fix", cwd=repo)

    out = diff_bytes(ran, "fix")
    assert out.returncode == 0, out.stderr
    assert b"\x1b[1m" not in out.stdout.split(b"\x1b[31mred")[0]  # no colour when piped
    assert b"GIT binary patch" in out.stdout
    assert b"\n+a\r\n+b\r\n" in out.stdout  # CRLF kept byte for byte
    assert b"deleted file mode" in out.stdout
    assert b"later.txt" not in out.stdout
    assert git("rev-parse", "refs/loopvisor/base/loopvisor/fix", cwd=repo).strip() == base
    clone = fresh_clone(repo, base, ran / "clone")
    applies(out.stdout, clone, "origin/loopvisor/fix")


def test_an_iterations_diff_is_its_commit_against_its_parent(ran: Path) -> None:
    repo = ran / "repo"
    made = commits(repo, "loopvisor/fix")
    assert [c["Loopvisor-Iteration"] for c in made] == ["1", "3"]
    out = diff_bytes(ran, "fix", "--iteration", "3")
    assert out.returncode == 0, out.stderr
    assert b"+three" in out.stdout
    assert b"deleted file mode" in out.stdout
    assert b"blob.bin" not in out.stdout  # iteration 1's work is not in iteration 3's diff
    clone = fresh_clone(repo, made[0]["sha"], ran / "clone")
    applies(out.stdout, clone, made[1]["sha"])

    empty = diff_bytes(ran, "fix", "--iteration", "2")
    assert (empty.returncode, empty.stdout) == (0, b"")
    assert b"iteration 2 made no checkpoint commit" in empty.stderr


def test_on_a_terminal_it_is_coloured_and_control_characters_are_shown(ran: Path) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [PY, "-m", "supervisor", "diff", "fix", "--iteration", "1"],
            cwd=ran,
            env={k: v for k, v in cli_env().items() if k != "NO_COLOR"},
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    text = shown.decode().replace("\r\n", "\n")
    assert "\x1b[1mdiff --git a/app.py b/app.py\x1b[0m" in text
    assert "\x1b[36m@@ -1 +1 @@\x1b[0m" in text
    assert "\x1b[31m-print('v1')\x1b[0m" in text
    assert "\x1b[32m+print('v2')\x1b[0m" in text
    assert "\x1b[32m+colour \\x1b[31mred\\x1b[0m\x1b[0m" in text  # the agent's ESC: shown
    assert "GIT binary patch" not in text  # binary data is not for a terminal


def test_what_cannot_be_diffed_says_why(ran: Path) -> None:
    for args, message in (
        (("nope",), "no loop named 'nope'"),
        (("plain",), "loop 'plain' has no git worktree"),
        (("fix", "--iteration", "9"), "has no iteration 9"),
    ):
        out = run_cli("diff", *args, cwd=ran)
        assert out.returncode == 3, (args, out.stdout, out.stderr)
        assert message in out.stderr
        assert "Traceback" not in out.stderr


def test_the_consoles_copy_is_bounded_with_a_marker(ran: Path) -> None:
    spec = load_config(ran / "loops.toml").loop("fix")
    whole = loop_diff(spec)
    assert not whole.truncated
    assert whole.base is not None
    assert whole.head is not None
    shortstat = git("diff", "--shortstat", whole.base, whole.head, cwd=ran / "repo").strip()
    assert whole.stat == shortstat
    assert shortstat.startswith("7 files changed")
    assert "Binary files /dev/null and b/blob.bin differ" in whole.text
    cut = loop_diff(spec, limit=300)
    assert cut.truncated
    assert cut.text.splitlines()[-1].startswith("✂ the rest of this diff is left out here")
    assert "`loopvisor diff fix` prints all of it" in cut.text
    assert len(cut.text.encode()) < 300 + 200
    assert whole.text.startswith(cut.text.rsplit("✂", 1)[0])

    # Over the socket: JSON within the line budget, escapes counted (an agent's file of
    # control characters costs 6 bytes each on the wire).
    big = dataclasses.replace(whole, text=(whole.text + "+\x01\x02\x03\n" * 2000) * 3)
    for limit in (4096, 16384):
        wire = bounds.loop_diff(big, limit)
        assert len(json.dumps(wire, ensure_ascii=False).encode()) <= limit
        assert wire["truncated"] is True
        assert wire["text"].splitlines()[-1].startswith("✂ ")
        assert "`loopvisor diff fix` on the server's machine prints all of it" in wire["text"]
        assert big.text.startswith(wire["text"].rsplit("✂", 1)[0])
        assert LoopDiff.from_dict(wire).stat == whole.stat
    assert bounds.loop_diff(whole, 1 << 20)["text"] == whole.text

    none = loop_diff(spec, iteration=2, commit=None)
    assert (none.base, none.head, none.text) == (None, None, "")
    with pytest.raises(DiffError, match="no git worktree"):
        loop_diff(load_config(ran / "loops.toml").loop("plain"))


def test_line_kinds_read_a_removed_line_that_looks_like_a_header_as_a_removal() -> None:
    patch = [
        "diff --git a/x b/x",
        "index 1..2 100644",
        "--- a/x",
        "+++ b/x",
        "@@ -1,2 +1,2 @@",
        "--- not a header",
        "+++ nor this",
        " same",
        "✂ cut",
    ]
    assert [kind for kind, _ in line_kinds(patch)] == [
        DiffKind.FILE,
        DiffKind.FILE,
        DiffKind.FILE,
        DiffKind.FILE,
        DiffKind.HUNK,
        DiffKind.DEL,
        DiffKind.ADD,
        DiffKind.CONTEXT,
        DiffKind.MARKER,
    ]
