"""Score races (best-of-N on a metric loop) with real agent processes and a real git
repository: once every attempt ended, the best score wins; at `race_deadline` the
attempts still going are stopped (their processes killed) and the best score so far
wins, or the race fails when nobody scored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gitrepo import git, make_repo
from helpers import PY, command_agent, load, loop, run_recorded, supervisor_table

from supervisor import events as ev
from supervisor.spec import Config
from supervisor.worktree import prepare_worktrees

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

# argv: the score per iteration ("-" hangs in that iteration), the marks folder, the
# iteration. It writes score.txt, which the check prints for the score pattern.
ATTEMPT = """
import json, os, pathlib, sys, time
scores, marks, iteration = sys.argv[1].split(","), pathlib.Path(sys.argv[2]), int(sys.argv[3])
sys.stdin.read()
marks.mkdir(exist_ok=True)
(marks / f"{sys.argv[1]}.pgid").write_text(str(os.getpgid(0)))
usage = {"input_tokens": 100, "output_tokens": 10, "usd": 0.001}
print(json.dumps({"loopvisor_usage": usage}), flush=True)
score = scores[min(iteration, len(scores)) - 1]
if score == "-":
    time.sleep(120)
pathlib.Path("score.txt").write_text(score + "\\n")
print(f"wrote {score}", flush=True)
"""

CHECK = "import pathlib; print('score:', pathlib.Path('score.txt').read_text().strip())"


def score_race(
    tmp_path: Path, plans: tuple[str, ...], direction: str = "max", **race: object
) -> Config:
    """A race of one attempt per plan (`"3,9"`: score 3, then 9; `"-"`: hang)."""
    make_repo(tmp_path / "repo")
    names = [f"a{n}" for n in range(1, len(plans) + 1)]
    agents = [
        command_agent(
            name,
            ATTEMPT,
            plan,
            str(tmp_path / "marks"),
            "$iteration",
            stdin=True,
            usage="json-lines",
        )
        for name, plan in zip(names, plans, strict=True)
    ]
    score = {"pattern": "score: ([0-9.]+)", "direction": direction}
    config = load(
        tmp_path,
        supervisor_table(4),
        *agents,
        loop(
            "fix",
            names[0],
            agents=names,
            workspace={"repo": "repo"},
            checks=[{"name": "eval", "run": [PY, "-c", CHECK], "score": score}],
            stuck=NO_STUCK,
            **race,
        ),
    )
    prepare_worktrees(config)
    return config


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.anyio
@pytest.mark.parametrize(("direction", "winner"), [("max", "fix.2"), ("min", "fix.3")])
async def test_once_every_attempt_ended_the_best_score_wins(
    tmp_path: Path, direction: str, winner: str
) -> None:
    config = score_race(tmp_path, ("5", "9", "3"), direction, max_iterations=1)
    rec = await run_recorded(config, timeout=30)
    assert rec.summary is not None
    results = {r.name: r for r in rec.summary.loops}
    fix = results["fix"]
    n = winner[-1]
    assert fix.state == "succeeded", fix.reason
    assert fix.reason.startswith(f"attempt {n} ({winner}, agent a{n}) won at ")
    assert f"best score {'9' if winner == 'fix.2' else '3'}; " in fix.reason
    # Nobody was cut off: every attempt ran its iteration and ended on its own.
    assert not any(r.reason.startswith("lost the race") for r in rec.summary.loops)
    repo = tmp_path / "repo"
    assert git("rev-parse", "loopvisor/fix", cwd=repo) == git(
        "rev-parse", f"loopvisor/{winner}", cwd=repo
    )
    assert (
        git("show", "loopvisor/fix:score.txt", cwd=repo) == {"fix.2": "9\n", "fix.3": "3\n"}[winner]
    )


@pytest.mark.anyio
async def test_at_the_deadline_the_best_score_so_far_wins_and_the_rest_is_stopped(
    tmp_path: Path,
) -> None:
    """fix.1 ends with 5; fix.2 scores 9 then hangs: the deadline stops it (its process
    group is killed) and its 9 wins; fix.3 hangs unscored and is stopped too."""
    config = score_race(tmp_path, ("5", "9,-", "-"), max_iterations=3, race_deadline="3s")
    rec = await run_recorded(config, timeout=30)
    assert rec.summary is not None
    results = {r.name: r for r in rec.summary.loops}
    deadline = [
        e.loop
        for e in rec.of(ev.LoopStateChanged)
        if e.state == "stopped" and e.reason == "race deadline (3s)"
    ]
    assert sorted(deadline) == ["fix.2", "fix.3"]
    assert results["fix.1"].state != "stopped"
    fix = results["fix"]
    assert fix.state == "succeeded", fix.reason
    assert fix.reason.startswith("attempt 2 (fix.2, agent a2) won at ")
    assert "best score 9; race deadline (3s)" in fix.reason
    assert rec.summary.exit_code == 0
    repo = tmp_path / "repo"
    assert git("show", "loopvisor/fix:score.txt", cwd=repo) == "9\n"
    marks = tmp_path / "marks"
    for plan in ("9,-", "-"):
        assert not group_alive(int((marks / f"{plan}.pgid").read_text()))


@pytest.mark.anyio
async def test_at_the_deadline_with_no_score_the_race_fails(tmp_path: Path) -> None:
    config = score_race(tmp_path, ("-", "-"), max_iterations=1, race_deadline="3s")
    rec = await run_recorded(config, timeout=30)
    assert rec.summary is not None
    fix = rec.summary.loops[0]
    assert fix.state == "failed"
    assert fix.reason.startswith("no attempt won: fix.1 stopped: race deadline (3s)")
    assert [r.state for r in rec.summary.loops[1:]] == ["stopped", "stopped"]
    assert rec.summary.exit_code == 1
