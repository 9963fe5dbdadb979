"""What a checkpoint commit costs a worktree loop per iteration (`supervisor/checkpoint.py`).

A repo of `--files` small files (in 20 folders) gets a worktree; then `--iterations`
iterations alternate between changing one file and changing nothing, each run as the
loop runs it: `Checkpointer.begin` before the turn (one `git log`), `commit` after
it (`add -A`, `diff --cached --quiet`, `commit` when something is staged, `rev-parse`), every
git in its own process group with the loop's tags (`gitexec.git_async`). The baseline
is the same work by hand: `git add -A && git commit -q` in a plain subprocess (and
nothing for an iteration without changes, which a person would not commit).

Prints one JSON object (medians in milliseconds). Run:
`.venv/bin/python benchmarks/checkpoint_cost.py` (`--files N`, `--iterations N`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, median, metric

from supervisor.checkpoint import Checkpointer

IDENTITY = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@example.invalid",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@example.invalid",
}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **IDENTITY}
    )


def make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    for i in range(files):
        folder = repo / f"pkg{i % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"m{i}.py").write_text(f"VALUE = {i}\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    return repo


def worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    git("worktree", "add", "-q", "-b", name, str(path), "HEAD", cwd=repo)
    return path


async def loopvisor_side(path: Path, iterations: int) -> dict[str, list[float]]:
    cp = Checkpointer("bench", path, run_id="bench")
    env = {"LOOPVISOR_LOOP": "bench"}
    out: dict[str, list[float]] = {"begin": [], "commit_change": [], "commit_none": []}
    for n in range(1, iterations + 1):
        start = time.perf_counter()
        await cp.begin(n, env)
        out["begin"].append((time.perf_counter() - start) * 1000)
        changed = n % 2 == 1
        if changed:
            (path / "pkg0" / "m0.py").write_text(f"VALUE = {n}\n")
        start = time.perf_counter()
        point = await cp.commit(n, "continue", "bench", tokens=1, usd=0.0, env=env)
        out["commit_change" if changed else "commit_none"].append(
            (time.perf_counter() - start) * 1000
        )
        assert (point.commit is not None) == changed, point
    return out


def by_hand(path: Path, iterations: int) -> list[float]:
    samples = []
    for n in range(1, iterations + 1, 2):
        (path / "pkg0" / "m0.py").write_text(f"VALUE = {n}\n")
        start = time.perf_counter()
        git("add", "-A", cwd=path)
        git("commit", "-q", "--no-verify", "-m", f"iteration {n}", cwd=path)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    started = machine()
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp), args.files)
        ours = anyio.run(loopvisor_side, worktree(repo, "lv"), args.iterations)
        floor = by_hand(worktree(repo, "hand"), args.iterations)
    per_change = median(ours["begin"]) + median(ours["commit_change"])
    metrics = [
        metric("begin_ms", median(ours["begin"]), "ms"),
        metric("commit_with_change_ms", median(ours["commit_change"]), "ms"),
        metric("commit_without_change_ms", median(ours["commit_none"]), "ms"),
        metric("iteration_with_change_ms", per_change, "ms", baseline=median(floor)),
        metric(
            "iteration_without_change_ms",
            median(ours["begin"]) + median(ours["commit_none"]),
            "ms",
        ),
    ]
    details = {"files": args.files, "iterations": args.iterations, **ours, "by_hand": floor}
    emit("checkpoint_cost", started, metrics, details, save=False)


if __name__ == "__main__":
    main()
