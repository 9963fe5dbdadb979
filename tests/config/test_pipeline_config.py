"""Pipelines in loops.toml: `after`, `on_failure` and a worktree `base = "loop:NAME"`;
unknown names and cycles are errors at their FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

from config_support import assert_issue, issues_of, where, write
from gitrepo import make_repo

from supervisor.config.load import load_config

AGENT = '[agents.sim]\nkind = "sim"\n'


def loops(*bodies: str) -> str:
    return AGENT + "".join(f'\n[[loop]]\nagent = "sim"\ndone_marker = "x"\n{b}' for b in bodies)


def test_after_and_a_loop_base_are_read(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write(
        tmp_path,
        loops(
            'name = "lint-fix"\nprompt = "p"\nworkspace = { repo = "repo" }\n',
            'name = "docs"\nprompt = "p"\n',
            'name = "build"\nprompt = "p: $after_output"\nafter = ["docs"]\n'
            'on_failure = "run"\nworkspace = { repo = "repo", base = "loop:lint-fix" }\n',
        ),
    )
    build = load_config(path).loop("build")
    assert build.after == ("docs", "lint-fix")  # the base's loop is implied
    assert build.on_failure == "run"
    assert build.worktree is not None
    assert (build.worktree.base, build.worktree.after_loop) == ("loopvisor/lint-fix", "lint-fix")


def test_an_unknown_loop_in_after_is_an_error_at_its_element(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loops(
            'name = "lint-fix"\nprompt = "p"\n', 'name = "b"\nprompt = "p"\nafter = ["lint-fx"]\n'
        ),
    )
    assert_issue(path, '"lint-fx"', 'after[0]: unknown loop "lint-fx" (did you mean "lint-fix"?)')


def test_a_cycle_is_an_error_at_the_after_that_closes_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loops(
            'name = "a"\nprompt = "p"\nafter = ["c"]\n',
            'name = "b"\nprompt = "p"\nafter = ["a"]\n',
            'name = "c"\nprompt = "p"\nafter = ["b"]\n',
        ),
    )
    (issue,) = issues_of(path)
    assert (issue.line, issue.col) == where(path, "after", 1)  # b's: it closes the walk from a
    assert issue.message == "after: a cycle never starts: a -> c -> b -> a"


def test_a_loop_base_must_name_a_worktree_loop(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    body = 'name = "b"\nprompt = "p"\nworkspace = { repo = "repo", base = "loop:%s" }\n'
    path = write(tmp_path, loops('name = "plain"\nprompt = "p"\n', body % "plain"))
    assert_issue(path, 'base = "loop:plain"', 'loop "plain" has no git worktree')
    path = write(tmp_path, loops('name = "plain"\nprompt = "p"\n', body % "nope"))
    assert_issue(path, 'base = "loop:nope"', 'workspace.base: unknown loop "nope"')


def test_on_failure_takes_skip_or_run(tmp_path: Path) -> None:
    path = write(tmp_path, loops('name = "a"\nprompt = "p"\non_failure = "ignore"\n'))
    assert_issue(path, "on_failure", 'expected one of "skip", "run"')
