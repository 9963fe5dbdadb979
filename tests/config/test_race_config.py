"""Races in loops.toml: `race`, `agents`, `race_deadline`, read and expanded into the
attempt loops `NAME.1`…; each misuse is an error at its FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

from config_support import assert_issue, write
from gitrepo import make_repo

from supervisor.config.load import load_config

AGENTS = '[agents.sim]\nkind = "sim"\n[agents.other]\nkind = "sim"\n'
WT = 'workspace = { repo = "repo" }\n'


def loops(*bodies: str) -> str:
    return AGENTS + "".join(f'\n[[loop]]\nagent = "sim"\ndone_marker = "x"\n{b}' for b in bodies)


def test_a_race_of_agents_becomes_one_attempt_loop_per_agent(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    body = f'name = "fix"\nprompt = "p"\n{WT}agents = ["sim", "other"]\nrace_deadline = "20m"\n'
    config = load_config(write(tmp_path, loops(body)))
    assert [s.name for s in config.loops] == ["fix", "fix.1", "fix.2"]
    fix, one, two = config.loops
    assert (fix.race, fix.race_deadline) == (2, 1200.0)
    assert (one.agent, two.agent) == ("sim", "other")
    assert (one.attempt_of, one.race, one.on_success) == ("fix", 0, "keep")
    assert one.worktree is not None
    assert one.worktree.branch.format(loop=one.name) == "loopvisor/fix.1"
    assert one.workspace == fix.workspace.parent / "fix.1"


def test_race_below_two_is_an_error(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write(tmp_path, loops(f'name = "fix"\nprompt = "p"\n{WT}race = 1\n'))
    assert_issue(path, "race = 1", "race: a race needs at least 2 attempts, got 1")


def test_an_unknown_agent_is_an_error_at_its_element(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write(tmp_path, loops(f'name = "fix"\nprompt = "p"\n{WT}agents = ["sim", "othr"]\n'))
    assert_issue(path, '"othr"', 'agents[1]: unknown agent "othr" (did you mean "other"?)')


def test_a_race_without_a_worktree_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, loops('name = "fix"\nprompt = "p"\nrace = 3\n'))
    assert_issue(path, "race = 3", "race: a race needs a git worktree workspace")


def test_a_race_with_after_is_not_supported(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write(
        tmp_path,
        loops(
            'name = "a"\nprompt = "p"\n',
            f'name = "fix"\nprompt = "p"\n{WT}race = 2\nafter = ["a"]\n',
        ),
    )
    assert_issue(path, 'after = ["a"]', "after: a race cannot have after (not supported)")


def test_an_attempt_name_taken_by_a_loop_is_an_error(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write(
        tmp_path,
        loops(f'name = "fix"\nprompt = "p"\n{WT}race = 2\n', 'name = "fix.2"\nprompt = "p"\n'),
    )
    assert_issue(path, 'name = "fix"', 'its attempt 2 would be a loop "fix.2", which exists')
