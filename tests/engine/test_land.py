"""`loopvisor land`: a loop's branch merged into its target in real git repositories.

The conflict and refusal cases compare a byte-for-byte picture of the target's
checkout (HEAD, every ref, the index file, every file of the working tree) taken
before and after: nothing may change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli
from landrepo import checkout_picture, commit_all, git, make_repo

from supervisor.config.load import load_config
from supervisor.land import LandError, LandRequest, land
from supervisor.spec import LoopSpec
from supervisor.worktree import prepare_worktrees, remove_worktree, unmerged_commits

CONFIG = """
[agents.a]
kind = "sim"

[[loop]]
name = "fix"
agent = "a"
prompt = "fix it"
workspace = {{ repo = "repo", worktree = true{extra} }}
done_marker = "DONE"
"""


def setup_loop(tmp_path: Path, extra: str = "") -> tuple[Path, LoopSpec, Path]:
    """(repo, the loop's spec, loops.toml) with the loop's worktree made."""
    repo = make_repo(tmp_path / "repo", {"app.py": "print('v1')\n", "lib.py": "x = 1\n"})
    cfg = tmp_path / "loops.toml"
    cfg.write_text(CONFIG.format(extra=extra))
    config = load_config(cfg)
    prepare_worktrees(config)
    return repo, config.loop("fix"), cfg


def head(path: Path, ref: str = "HEAD") -> str:
    return git("rev-parse", ref, cwd=path).strip()


def test_land_fast_forwards_the_checked_out_base_with_its_files(tmp_path: Path) -> None:
    repo, loop, cfg = setup_loop(tmp_path)
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    tip = commit_all(loop.workspace, "fix: iteration 1")
    result = run_cli("land", "fix", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "merged loopvisor/fix into main (fast-forward, 1 commit(s))" in result.stdout
    assert head(repo) == tip  # main moved, and its checkout with it
    assert (repo / "app.py").read_text() == "print('fixed')\n"
    assert git("status", "--porcelain", cwd=repo) == ""


def test_uncommitted_changes_of_the_worktree_are_committed_then_landed(tmp_path: Path) -> None:
    """A loop that left its fix uncommitted (no checkpoint commits): land commits it
    (as loopvisor, untracked files included, ignored ones not) and says so."""
    repo, loop, _ = setup_loop(tmp_path)
    (loop.workspace / ".gitignore").write_text("*.log\n")
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    (loop.workspace / "new.py").write_text("y = 2\n")
    (loop.workspace / "debug.log").write_text("noise\n")
    message = land(loop, LandRequest())
    assert "committed its worktree's uncommitted changes (3 file(s))" in message
    assert "merged loopvisor/fix into main" in message
    assert (repo / "new.py").read_text() == "y = 2\n"
    assert not (repo / "debug.log").exists()
    author = git("log", "-1", "--format=%an <%ae>", "loopvisor/fix", cwd=repo).strip()
    assert author == "loopvisor <loopvisor@localhost>"
    assert "debug.log" not in git("ls-files", cwd=loop.workspace)
    assert git("status", "--porcelain", cwd=loop.workspace) == ""  # its index follows


def test_land_makes_a_merge_commit_when_the_base_moved(tmp_path: Path) -> None:
    repo, loop, _ = setup_loop(tmp_path)
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    tip = commit_all(loop.workspace, "fix")
    (repo / "lib.py").write_text("x = 2\n")
    before = commit_all(repo, "meanwhile on main")
    message = land(loop, LandRequest())
    assert "(merge commit, 1 commit(s))" in message
    parents = git("rev-list", "--parents", "-n", "1", "main", cwd=repo).split()[1:]
    assert parents == [before, tip]
    assert (repo / "app.py").read_text() == "print('fixed')\n"
    assert (repo / "lib.py").read_text() == "x = 2\n"
    assert git("status", "--porcelain", cwd=repo) == ""


def test_squash_lands_one_commit_and_clean_knows_it_is_merged(tmp_path: Path) -> None:
    repo, loop, _ = setup_loop(tmp_path)
    for n in (1, 2, 3):
        (loop.workspace / "app.py").write_text(f"print({n})\n")
        commit_all(loop.workspace, f"fix: iteration {n}")
    before = head(repo)
    message = land(loop, LandRequest(squash=True))
    assert "squashed 3 commit(s) into one" in message
    assert git("rev-list", "--parents", "-n", "1", "main", cwd=repo).split()[1:] == [before]
    assert (repo / "app.py").read_text() == "print(3)\n"
    assert unmerged_commits(repo, "loopvisor/fix") == []
    assert "removed worktree" in remove_worktree(loop, delete_branch=True)


def test_a_conflict_names_the_files_and_changes_nothing_byte_for_byte(tmp_path: Path) -> None:
    repo, loop, cfg = setup_loop(tmp_path)
    (loop.workspace / "app.py").write_text("print('loop')\n")
    (loop.workspace / "lib.py").write_text("x = 'loop'\n")
    commit_all(loop.workspace, "fix")
    (loop.workspace / "notes.txt").write_text("uncommitted in the worktree\n")
    (repo / "app.py").write_text("print('main')\n")
    (repo / "lib.py").write_text("x = 'main'\n")
    commit_all(repo, "main moved")
    (repo / "scratch.txt").write_text("an untracked file of the user\n")
    target_before = checkout_picture(repo)
    loop_before = checkout_picture(loop.workspace)
    result = run_cli("land", "fix", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "conflicts in app.py, lib.py" in result.stderr
    assert "nothing was changed" in result.stderr
    assert checkout_picture(repo) == target_before
    assert checkout_picture(loop.workspace) == loop_before  # its changes stay uncommitted


def test_a_target_checked_out_with_uncommitted_changes_is_refused(tmp_path: Path) -> None:
    repo, loop, _ = setup_loop(tmp_path)
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    commit_all(loop.workspace, "fix")
    (repo / "lib.py").write_text("x = 'editing'\n")
    git("add", "lib.py", cwd=repo)
    (repo / "lib.py").write_text("x = 'editing more'\n")
    before = checkout_picture(repo)
    with pytest.raises(LandError, match=r"main is checked out in .* with uncommitted changes"):
        land(loop, LandRequest())
    assert checkout_picture(repo) == before


def test_untracked_files_in_the_way_are_refused(tmp_path: Path) -> None:
    repo, loop, _ = setup_loop(tmp_path)
    (loop.workspace / "new.py").write_text("from the loop\n")
    commit_all(loop.workspace, "fix")
    (repo / "new.py").write_text("the user's own, untracked\n")
    before = checkout_picture(repo)
    with pytest.raises(LandError, match=r"would be overwritten by the merge \(new.py\)"):
        land(loop, LandRequest())
    assert checkout_picture(repo) == before


def test_into_a_branch_nobody_has_checked_out(tmp_path: Path) -> None:
    repo, loop, _ = setup_loop(tmp_path)
    git("branch", "release", cwd=repo)
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    tip = commit_all(loop.workspace, "fix")
    before = checkout_picture(repo)
    message = land(loop, LandRequest(into="release"))
    assert "merged loopvisor/fix into release" in message
    assert head(repo, "release") == tip
    after = checkout_picture(repo)
    assert {k: v for k, v in after.items() if k != "refs"} == {
        k: v for k, v in before.items() if k != "refs"
    }  # main's checkout untouched
    with pytest.raises(LandError, match="no branch 'nope'"):
        land(loop, LandRequest(into="nope"))


def test_the_default_target_is_the_recorded_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git("branch", "dev", cwd=repo)
    cfg = tmp_path / "loops.toml"
    cfg.write_text(CONFIG.format(extra=', base = "dev"'))
    config = load_config(cfg)
    prepare_worktrees(config)
    loop = config.loop("fix")
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    tip = commit_all(loop.workspace, "fix")
    assert "merged loopvisor/fix into dev" in land(loop, LandRequest())
    assert head(repo, "dev") == tip
    assert (repo / "app.py").read_text() == "print('v1')\n"  # main untouched


def test_nothing_to_land_is_said_and_is_not_an_error(tmp_path: Path) -> None:
    _, _, cfg = setup_loop(tmp_path)
    result = run_cli("land", "fix", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nothing to land: loopvisor/fix is already merged into main" in result.stdout


def test_a_base_that_is_not_a_local_branch_needs_into(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git("tag", "v1", cwd=repo)
    cfg = tmp_path / "loops.toml"
    cfg.write_text(CONFIG.format(extra=', base = "v1"'))
    config = load_config(cfg)
    prepare_worktrees(config)
    loop = config.loop("fix")
    (loop.workspace / "app.py").write_text("print('fixed')\n")
    with pytest.raises(LandError, match=r"made from v1, which is not a local branch.*--into"):
        land(loop, LandRequest())
    assert "merged loopvisor/fix into main" in land(loop, LandRequest(into="main"))


def test_cli_usage_errors(tmp_path: Path) -> None:
    _, _, cfg = setup_loop(tmp_path)
    unknown = run_cli("land", "nope", "--config", cfg, cwd=tmp_path)
    assert unknown.returncode == 3
    assert "no loop named 'nope'" in unknown.stderr
    squash = run_cli("land", "fix", "--squash", "--push", "--config", cfg, cwd=tmp_path)
    assert squash.returncode == 3
    assert "--squash is for merging here" in squash.stderr
    assert "Traceback" not in unknown.stderr + squash.stderr


def test_a_loop_without_a_worktree_has_nothing_to_land(tmp_path: Path) -> None:
    cfg = tmp_path / "loops.toml"
    cfg.write_text('[agents.a]\nkind = "sim"\n[[loop]]\nname = "x"\nagent = "a"\n'
                   'prompt = "p"\ndone_marker = "D"\n')  # fmt: skip
    result = run_cli("land", "x", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 1
    assert "has no worktree" in result.stderr
