"""Metric loops against real git repositories and real agent processes: a check's
score decides which iterations are kept; a worse one is reverted to the best commit
(the worktree's file content says so), the loop ends on `target` and on `plateau`,
a check with no score in its output fails with why, and `--resume` after a kill -9
keeps the best score and its commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitrepo import commits, git, make_repo
from helpers import command_agent, json_lines, loop, run_cli, write_config
from resume_support import Harness

from supervisor.checks import run_check
from supervisor.spec import CheckSpec, ScoreSpec

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

AGENT = """
import os, pathlib, sys
n = int(os.environ["LOOPVISOR_ITERATION"])
scores = sys.argv[1].split(",")
hold = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None
if hold is not None and n == int(sys.argv[3]) and not hold.exists():
    hold.write_text(str(os.getpid()))
    import time
    time.sleep(300)
pathlib.Path("score.txt").write_text(f"accuracy: {scores[n - 1]}\\n")
pathlib.Path("work.txt").write_text(f"written by iteration {n}\\n")
print("iteration", n, "wrote", scores[n - 1])
"""


def metric_toml(tmp_path: Path, scores: str, *hold: str, **score: object) -> Path:
    return write_config(
        tmp_path,
        command_agent("tuner", AGENT, scores, *hold),
        loop(
            "tune",
            "tuner",
            prompt="Improve the score. So far:\n$score_history",
            workspace={"repo": "repo", "worktree": True},
            checks=[
                {
                    "name": "eval",
                    "run": "cat score.txt",
                    "score": {"pattern": "accuracy: ([0-9.]+)", **score},
                }
            ],
            max_iterations=8,
            stuck=NO_STUCK,
        ),
    )


def finished(events: list[dict[str, object]]) -> dict[int, dict[str, object]]:
    return {
        int(e["iteration"]): e  # type: ignore[call-overload]
        for e in events
        if e["type"] == "iteration_finished" and e["loop"] == "tune"
    }


def test_a_worse_iteration_is_reverted_and_the_target_ends_the_loop(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = metric_toml(tmp_path, "0.5,0.7,0.6,0.65,0.9", target=0.9)
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    events = json_lines(run.stdout)
    done = finished(events)
    assert [done[n]["kept"] for n in sorted(done)] == [True, True, False, False, True]
    assert [done[n]["score"] for n in sorted(done)] == [0.5, 0.7, 0.6, 0.65, 0.9]
    best_2 = done[2]["commit"]
    assert best_2 is not None
    assert done[3]["reverted_to"] == done[4]["reverted_to"] == best_2
    assert "not better than best 0.7 (iteration 2): not kept; reverted to" in str(done[3]["reason"])
    assert done[4]["commit_parent"] == best_2  # iteration 4 started from the best
    summary = events[-1]
    (tune,) = summary["loops"]
    assert tune["state"] == "succeeded"
    assert tune["reason"] == "score 0.9 reached target 0.9 in iteration 5"
    # The branch holds the kept iterations only: 3 and 4 are not on it.
    on_branch = [c["Loopvisor-Iteration"] for c in commits(repo, "loopvisor/tune")]
    assert on_branch == ["1", "2", "5"]
    assert git("show", "loopvisor/tune:work.txt", cwd=repo) == "written by iteration 5\n"
    # The prompt of iteration 5 had the history, with what was reverted.
    prompt = next(
        e["prompt"] for e in events if e["type"] == "iteration_started" and e["iteration"] == 5
    )
    assert "iteration 3: 0.6 (reverted)" in str(prompt)
    assert "best: 0.7 (iteration 2); higher is better" in str(prompt)
    # history: the scores, which were kept, and a SCORE column.
    data = json.loads(run_cli("history", "tune", "--json", cwd=tmp_path).stdout)
    assert [(i["score"], i["kept"]) for i in data["iterations"]] == [
        (0.5, True),
        (0.7, True),
        (0.6, False),
        (0.65, False),
        (0.9, True),
    ]
    table = run_cli("history", "tune", cwd=tmp_path).stdout
    assert "SCORE" in table.splitlines()[1]
    assert "reverted to" in table
    status = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    (row,) = status["loops"]
    assert row["scores"] == [0.5, 0.7, 0.6, 0.65, 0.9]
    assert (row["best_score"], row["best_iteration"]) == (0.9, 5)
    plain = run_cli("status", cwd=tmp_path).stdout  # the table shows the best too
    assert "best 0.9 · " in next(line for line in plain.splitlines() if line.startswith("tune"))


def test_a_worse_iteration_leaves_the_worktree_as_the_best_left_it(tmp_path: Path) -> None:
    """Between a reverted iteration and the next prompt, the worktree's files are
    the best commit's (the agent of iteration 3 would see iteration 1's work)."""
    make_repo(tmp_path / "repo")
    config = metric_toml(tmp_path, "0.5,0.2", plateau=1)
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    worktree = tmp_path / ".loopvisor" / "worktrees" / "tune"
    assert (worktree / "work.txt").read_text() == "written by iteration 1\n"
    assert (worktree / "score.txt").read_text() == "accuracy: 0.5\n"
    assert git("status", "--porcelain", cwd=worktree) == ""
    (tune,) = json_lines(run.stdout)[-1]["loops"]
    assert tune["state"] == "succeeded"
    assert tune["reason"] == (
        "plateau: no improvement in 1 iterations; best score 0.5 in iteration 1"
    )


def test_the_loop_ends_on_a_plateau_and_says_so(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = metric_toml(tmp_path, "10,8,9,8,9,1", direction="min", plateau=3)
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    events = json_lines(run.stdout)
    done = finished(events)
    assert sorted(done) == [1, 2, 3, 4, 5]  # 6 never ran: the plateau ended it
    assert [done[n]["kept"] for n in sorted(done)] == [True, True, False, False, False]
    (tune,) = events[-1]["loops"]
    assert tune["state"] == "succeeded"
    assert tune["reason"] == "plateau: no improvement in 3 iterations; best score 8 in iteration 2"
    assert git("show", "loopvisor/tune:score.txt", cwd=repo) == "accuracy: 8\n"


def test_a_loop_that_never_scores_fails_on_its_plateau(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    config = metric_toml(tmp_path, "n/a,n/a", plateau=2)
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    events = json_lines(run.stdout)
    checks = [e for e in events if e["type"] == "check"]
    assert [c["passed"] for c in checks] == [False, False]
    assert "no score: output did not match score pattern" in str(checks[0]["summary"])
    (tune,) = events[-1]["loops"]
    assert tune["state"] == "failed"
    assert tune["reason"] == "plateau: no score in 2 iterations"


@pytest.mark.anyio
async def test_a_check_without_a_score_in_its_output_fails_with_why(tmp_path: Path) -> None:
    pattern = ScoreSpec(pattern="accuracy: ([0-9.]+)")
    spec = CheckSpec(name="eval", run="echo all good", score=pattern)
    outcome = await run_check(spec, workspace=tmp_path, env={})
    assert not outcome.passed
    assert outcome.score is None
    assert outcome.summary == ("no score: output did not match score pattern 'accuracy: ([0-9.]+)'")
    (tmp_path / "m.json").write_text('{"eval": {"acc": 0.25}}')
    spec = CheckSpec(name="eval", run="true", score=ScoreSpec(json="m.json", key="eval.acc"))
    outcome = await run_check(spec, workspace=tmp_path, env={})
    assert (outcome.passed, outcome.score, outcome.summary) == (True, 0.25, "exit 0; score 0.25")
    spec = CheckSpec(name="eval", run="true", score=ScoreSpec(json="m.json", key="eval.f1"))
    outcome = await run_check(spec, workspace=tmp_path, env={})
    assert not outcome.passed
    assert outcome.summary == "no score: m.json has no key 'eval.f1'"
    spec = CheckSpec(name="eval", run="true", score=ScoreSpec(json="gone.json", key="a"))
    outcome = await run_check(spec, workspace=tmp_path, env={})
    assert outcome.summary.startswith("no score: cannot read gone.json: ")


def test_resume_after_kill_9_keeps_the_best_score_and_its_commit(harness: Harness) -> None:
    """Killed while iteration 3 runs: the resumed loop still knows 0.7 of iteration 2
    is the best, so iteration 3's 0.6 is reverted to iteration 2's commit (a loop that
    forgot would keep it as its first score)."""
    h = harness
    repo = make_repo(h.tmp_path / "repo")
    hold = h.tmp_path / "held"
    metric_toml(h.tmp_path, "0.5,0.7,0.6,0.8", str(hold), "3", target=0.8)
    first = h.start()
    first.until("iteration 3's agent", hold.exists, timeout=60)
    first.kill9()
    second, summary = h.resume_to_end(timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    history = [i for i in h.history("tune") if i["outcome"] != "interrupted"]
    assert [(i["iteration"], i["score"], i["kept"]) for i in history] == [
        (1, 0.5, True),
        (2, 0.7, True),
        (3, 0.6, False),
        (4, 0.8, True),
    ]
    best_2 = history[1]["commit"]
    (three,) = [e for e in second.of("iteration_finished", "tune") if e["iteration"] == 3]
    assert three["reverted_to"] == best_2
    assert [c["Loopvisor-Iteration"] for c in commits(repo, "loopvisor/tune")] == ["1", "2", "4"]
    status = h.status()
    (row,) = status["loops"]
    assert (row["best_score"], row["best_iteration"]) == (0.8, 4)
