"""The loop-pattern examples under examples/ run offline, as README shows them: copied
to a scratch folder made a git repository, then `loopvisor run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gitrepo import git
from helpers import json_lines, run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def scratch_repo(example: str, tmp_path: Path) -> Path:
    """The example's folder as the first commit of a new repository."""
    folder = tmp_path / example
    shutil.copytree(EXAMPLES / example, folder)
    git("init", "-q", "-b", "main", cwd=folder)
    git("add", "-A", cwd=folder)
    git("commit", "-qm", "start", cwd=folder)
    return folder


def test_the_metric_example_keeps_improvements_and_stops_on_its_target(tmp_path: Path) -> None:
    folder = scratch_repo("metric", tmp_path)
    assert run_cli("check", "loops.toml", cwd=folder).returncode == 0
    run = run_cli("run", "--json", cwd=folder, timeout=120)
    assert run.returncode == 0, run.stderr
    (tune,) = json_lines(run.stdout)[-1]["loops"]
    assert (tune["state"], tune["reason"]) == (
        "succeeded",
        "score 1 reached target 1 in iteration 4",
    )
    history = json.loads(run_cli("history", "tune", "--json", cwd=folder).stdout)
    assert [(i["score"], i["kept"]) for i in history["iterations"]] == [
        (0.875, True),
        (0.75, False),
        (0.625, False),
        (1.0, True),
    ]
    assert json.loads(git("show", "loopvisor/tune:params.json", cwd=folder)) == {"threshold": 0.45}


def test_the_pipeline_example_builds_from_the_linted_branch(tmp_path: Path) -> None:
    folder = scratch_repo("pipeline", tmp_path)
    assert run_cli("check", "loops.toml", cwd=folder).returncode == 0
    run = run_cli("run", "--json", cwd=folder, timeout=120)
    assert run.returncode == 0, run.stderr
    events = json_lines(run.stdout)
    waiting = next(e for e in events if e["type"] == "state" and e["loop"] == "build")
    assert (waiting["state"], waiting["reason"]) == ("waiting", "after lint-fix")
    assert [loop["state"] for loop in events[-1]["loops"]] == ["succeeded", "succeeded"]
    build = git("show", "loopvisor/build:BUILD.txt", cwd=folder)
    assert "x = 1" in build  # lint-fix's change, on the branch build started from
    assert "## lint-fix: succeeded — the check passed in iteration 1" in build


def test_the_race_example_takes_the_quick_attempts_branch(tmp_path: Path) -> None:
    folder = scratch_repo("race", tmp_path)
    assert run_cli("check", "loops.toml", cwd=folder).returncode == 0
    run = run_cli("run", "--json", cwd=folder, timeout=120)
    assert run.returncode == 0, run.stderr
    loops = {loop["name"]: loop for loop in json_lines(run.stdout)[-1]["loops"]}
    assert [(n, loop["state"]) for n, loop in loops.items()] == [
        ("fix", "succeeded"),
        ("fix.1", "stopped"),
        ("fix.2", "succeeded"),
        ("fix.3", "stopped"),
    ]
    assert loops["fix"]["reason"].startswith("attempt 2 (fix.2, agent quick) won at ")
    assert loops["fix"]["tokens"] == 4500  # each attempt reported 1,500 before it ended
    assert git("show", "loopvisor/fix:answer.txt", cwd=folder) == "6765\n"
    # The attempts are alternatives (and the race takes the winner's tip): no
    # "expect merge conflicts" between them, nor between the race and an attempt.
    assert "merge conflicts" not in run.stdout
    # The race's own row in status and history: its attempts' sum, and each attempt.
    status = json.loads(run_cli("status", "--json", cwd=folder).stdout)
    rows = {loop["name"]: loop for loop in status["loops"]}
    assert (rows["fix"]["tokens"], rows["fix"]["usd"]) == (4500, 0.006)
    assert status["budget"]["tokens"] == 4500  # not counted twice
    attempts = [(a["name"], a["state"], a["tokens"]) for a in rows["fix"]["attempts"]]
    assert attempts == [
        ("fix.1", "stopped", 1500),
        ("fix.2", "succeeded", 1500),
        ("fix.3", "stopped", 1500),
    ]
    assert rows["fix.1"]["attempts"] == []
    history = json.loads(run_cli("history", "fix", "--json", cwd=folder).stdout)
    assert history["total"] == {"tokens": 4500, "usd": 0.006}
    assert [(a["name"], a["state"], a["reason"], a["tokens"]) for a in history["attempts"]] == [
        ("fix.1", "stopped", "lost the race: fix.2 won", 1500),
        ("fix.2", "succeeded", "the check passed in iteration 1", 1500),
        ("fix.3", "stopped", "lost the race: fix.2 won", 1500),
    ]
