"""Safe worktrees: `base`, `include_uncommitted`, the `setup` and `on_success` keys,
and a `clean` that refuses to lose work; real git repositories and real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli
from landrepo import commit_all, config_text, configure, git, make_repo

from supervisor.config.load import ConfigError, load_config
from supervisor.worktree import WorktreeError, prepare_worktrees, recorded_base


# -- base ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["branch", "tag", "commit", "remote branch"])
def test_base_chooses_where_the_branch_starts(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git("rev-parse", "HEAD", cwd=repo).strip()
    (repo / "app.py").write_text("print('v2')\n")
    commit_all(repo, "v2 on main")
    git("branch", "stable", old, cwd=repo)
    git("tag", "v1", old, cwd=repo)
    git("update-ref", "refs/remotes/origin/stable", old, cwd=repo)
    base = {"branch": "stable", "tag": "v1", "commit": old[:10], "remote branch": "origin/stable"}
    config = configure(tmp_path, f', base = "{base[kind]}"')
    prepare_worktrees(config)
    loop = config.loop("fix")
    assert (loop.workspace / "app.py").read_text() == "print('v1')\n"
    assert git("rev-parse", "HEAD", cwd=loop.workspace).strip() == old
    assert recorded_base(repo, "loopvisor/fix") == (base[kind], old)


def test_a_bad_base_is_a_config_error_that_names_it(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    cfg = tmp_path / "loops.toml"
    cfg.write_text(config_text(', base = "relase"'))
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    (issue,) = caught.value.issues
    text = cfg.read_text()
    line = text[: text.index("base =")].count("\n") + 1
    col = text.index("base =") - text.rfind("\n", 0, text.index("base =")) - 1 + 1
    assert (issue.line, issue.col) == (line, col)
    assert 'base "relase" is not a branch, tag or commit' in issue.message
    checked = run_cli("check", cfg, cwd=tmp_path)
    assert checked.returncode == 3
    assert f"loops.toml:{line}:{col}: " in checked.stderr


def test_a_base_gone_by_start_is_a_start_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git("branch", "gone", cwd=repo)
    config = configure(tmp_path, ', base = "gone"')
    git("branch", "-D", "gone", cwd=repo)
    with pytest.raises(WorktreeError, match='base "gone" is not a branch, tag or commit'):
        prepare_worktrees(config)
    run = run_cli("run", tmp_path / "loops.toml", "--headless", cwd=tmp_path)
    assert run.returncode == 3
    assert 'base "gone"' in run.stderr
    assert "Traceback" not in run.stderr


# -- uncommitted changes of the repo -------------------------------------------------
def test_a_dirty_repo_is_refused_by_default(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "app.py").write_text("print('work in progress')\n")
    with pytest.raises(WorktreeError, match=r"uncommitted changes .*include_uncommitted = true"):
        prepare_worktrees(configure(tmp_path))


def test_include_uncommitted_copies_them_in_as_the_first_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n", ".gitignore": "*.log\n"})
    (repo / "app.py").write_text("work in progress\n")
    git("add", "app.py", cwd=repo)
    (repo / "app.py").write_text("work in progress, more\n")  # staged and unstaged
    (repo / "notes.md").write_text("untracked\n")
    (repo / "debug.log").write_text("ignored\n")
    index_before = (repo / ".git" / "index").read_bytes()
    status_before = git("status", "--porcelain", cwd=repo)
    config = configure(tmp_path, ", include_uncommitted = true")
    prepare_worktrees(config)
    work = config.loop("fix").workspace
    assert (work / "app.py").read_text() == "work in progress, more\n"
    assert (work / "notes.md").read_text() == "untracked\n"
    assert not (work / "debug.log").exists()
    assert git("status", "--porcelain", cwd=work) == ""
    first = git("log", "-1", "--format=%an|%s", cwd=work).strip()
    assert first.startswith("loopvisor|fix: uncommitted changes of")
    assert git("rev-parse", "HEAD~1", cwd=work) == git("rev-parse", "HEAD", cwd=repo)
    assert (repo / ".git" / "index").read_bytes() == index_before  # the repo as it was
    assert git("status", "--porcelain", cwd=repo) == status_before


# -- setup and on_success in loops.toml -------------------------------------------
def test_setup_without_a_worktree_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "loops.toml"
    cfg.write_text(
        '[agents.a]\nkind = "sim"\n[[loop]]\nname = "x"\nagent = "a"\nprompt = "p"\n'
        'done_marker = "D"\nsetup = ["npm ci"]\non_success = "land"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    messages = [i.message for i in caught.value.issues]
    assert [i.line for i in caught.value.issues] == [8, 9]
    assert "setup: runs once in a new worktree" in messages[0]
    assert 'on_success: "land" lands the loop\'s branch' in messages[1]


def test_on_success_must_be_one_of_its_modes(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    cfg = tmp_path / "loops.toml"
    cfg.write_text(config_text(on_success='"merge"'))
    checked = run_cli("check", cfg, cwd=tmp_path)
    assert checked.returncode == 3
    line = cfg.read_text().splitlines().index('on_success = "merge"') + 1
    assert f'loops.toml:{line}:1: on_success: expected one of "keep", "land", "push", "pr"' in (
        checked.stderr
    )


def test_push_remote_is_validated_with_its_position(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    cfg = tmp_path / "loops.toml"
    cfg.write_text(config_text(on_success='"land"\npush_remote = "-upstream"'))
    checked = run_cli("check", cfg, cwd=tmp_path)
    assert checked.returncode == 3
    line = cfg.read_text().splitlines().index('push_remote = "-upstream"') + 1
    assert f"loops.toml:{line}:1: push_remote: " in checked.stderr
    assert "not a remote name" in checked.stderr
    assert 'push_remote: is for on_success = "push" or "pr"' in checked.stderr


# -- clean -----------------------------------------------------------------------------
def clean(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    out = run_cli("clean", "fix", "--config", tmp_path / "loops.toml", *args, cwd=tmp_path)
    return out.returncode, out.stdout, out.stderr


def test_clean_refuses_uncommitted_changes_and_force_removes_them(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    config = configure(tmp_path)
    prepare_worktrees(config)
    work = config.loop("fix").workspace
    (work / "app.py").write_text("the fix\n")
    (work / "new.py").write_text("new\n")
    code, _, err = clean(tmp_path)
    assert code == 1
    assert "not removed: uncommitted changes in 2 file(s) (app.py, new.py)" in err
    assert "--force" in err
    assert (work / "app.py").read_text() == "the fix\n"
    code, out, _ = clean(tmp_path, "--force")
    assert code == 0
    assert "removed worktree" in out
    assert not work.exists()


def test_clean_refuses_commits_merged_nowhere_and_says_which(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = configure(tmp_path)
    prepare_worktrees(config)
    work = config.loop("fix").workspace
    (work / "app.py").write_text("the fix\n")
    commit_all(work, "fix: iteration 1")
    code, _, err = clean(tmp_path, "--delete-branch")
    assert code == 1
    assert "1 commit(s) on loopvisor/fix merged into no other branch" in err
    assert "fix: iteration 1" in err
    assert "lost with the branch" in err
    code, _, err = clean(tmp_path)
    assert code == 1
    assert "only the branch loopvisor/fix would still hold them" in err
    git("merge", "-q", "loopvisor/fix", cwd=repo)  # landed by hand: nothing is lost now
    code, out, err = clean(tmp_path, "--delete-branch")
    assert code == 0, err
    assert "deleted branch loopvisor/fix" in out


def test_clean_after_a_successful_run_needs_force_for_its_unlanded_fix(
    tmp_path: Path,
) -> None:
    """Issue 14: a loop's fix was deleted silently by `clean`. Now its checkpoint commit
    holds it, and clean refuses a branch whose commits are merged nowhere."""
    make_repo(tmp_path / "repo")
    cfg = tmp_path / "loops.toml"
    cfg.write_text(config_text())
    run = run_cli("run", cfg, "--headless", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    code, _, err = clean(tmp_path)
    assert code == 1
    assert "merged into no other branch" in err
    assert "--force" in err
    assert (tmp_path / ".loopvisor" / "worktrees" / "fix" / "app.py").exists()
