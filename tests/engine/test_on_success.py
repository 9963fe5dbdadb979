"""Landing from a running supervisor: `on_success` for unattended runs, and the `land`
control op (the console's `L`, `loopvisor land` beside a served run). Real git, real
sim loops, a real control socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from helpers import Recorded, run_cli, run_recorded, wait_for
from landrepo import checkout_picture, commit_all, git, make_repo

from supervisor import events as ev
from supervisor.config.load import load_config
from supervisor.control.server import ControlServer
from supervisor.runtime import EXIT_ATTENTION, Supervisor
from supervisor.spec import Config
from supervisor.worktree import prepare_worktrees

CONFIG = """
[agents.a]
kind = "sim"
rate = 0
converge_after = 2
files = {{ "app.py" = "print('fixed')\\n" }}

[[loop]]
name = "fix"
agent = "a"
prompt = "Fix app.py"
workspace = {{ repo = "repo", worktree = true }}
checks = [{{ name = "tests", run = [{py}, "-c", "{check}"] }}]
on_success = "{mode}"
"""


def configure(tmp_path: Path, mode: str) -> tuple[Path, Config]:
    repo = make_repo(tmp_path / "repo", {"app.py": "print('v1')\n"})
    cfg = tmp_path / "loops.toml"
    check = "import sys; sys.exit('fixed' not in open('app.py').read())"
    cfg.write_text(CONFIG.format(mode=mode, py=json.dumps(sys.executable), check=check))
    config = load_config(cfg)
    prepare_worktrees(config)
    return repo, config


def conflicting_main(repo: Path) -> None:
    (repo / "app.py").write_text("print('main moved')\n")
    commit_all(repo, "main moved meanwhile")


def test_on_success_land_merges_when_the_loop_succeeds(tmp_path: Path) -> None:
    repo, config = configure(tmp_path, "land")
    run = run_cli("run", config.path, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    (result,) = summary["loops"]
    assert result["state"] == "succeeded"
    assert "merged loopvisor/fix into main" in result["reason"]
    assert (repo / "app.py").read_text() == "print('fixed')\n"
    assert git("status", "--porcelain", cwd=repo) == ""


def test_a_failing_landing_is_a_notice_and_needs_attention_never_a_crash(
    tmp_path: Path,
) -> None:
    repo, config = configure(tmp_path, "land")
    conflicting_main(repo)
    before = checkout_picture(repo, but_loop_refs=True)
    run = run_cli("run", config.path, "--json", cwd=tmp_path)
    assert run.returncode == EXIT_ATTENTION, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    notices = [e["message"] for e in lines if e["type"] == "notice" and e.get("level") == "error"]
    assert any('on_success = "land" failed: merging' in m and "app.py" in m for m in notices)
    (result,) = lines[-1]["loops"]
    assert result["state"] == "paused"
    assert result["reason"].startswith("the check passed in iteration 2, but on_success")
    assert checkout_picture(repo, but_loop_refs=True) == before
    assert "Traceback" not in run.stderr


def test_resume_retries_the_landing_and_stop_leaves_it_unlanded(tmp_path: Path) -> None:
    repo, config = configure(tmp_path, "land")
    conflicting_main(repo)

    async def during(rec: Recorded) -> None:
        sup, runner = rec.supervisor, rec.supervisor.runners["fix"]
        await wait_for(lambda: runner.state == "paused")
        git("reset", "-q", "--hard", "HEAD~1", cwd=repo)  # the person undid the conflict
        await sup.resume("fix")
        await wait_for(lambda: runner.done)

    rec = anyio.run(lambda: run_recorded(config, exit_when_idle=False, during=during))
    runner = rec.supervisor.runners["fix"]
    assert runner.state == "succeeded"
    assert "merged loopvisor/fix into main" in runner.reason
    assert (repo / "app.py").read_text() == "print('fixed')\n"

    repo2, config2 = configure(tmp_path / "again", "land")
    conflicting_main(repo2)

    async def stop(rec: Recorded) -> None:
        runner = rec.supervisor.runners["fix"]
        await wait_for(lambda: runner.state == "paused")
        await rec.supervisor.stop("fix")

    rec = anyio.run(lambda: run_recorded(config2, exit_when_idle=False, during=stop))
    runner = rec.supervisor.runners["fix"]
    assert runner.state == "succeeded"
    assert runner.reason.endswith("not landed: stopped by the operator")


def test_the_land_op_settles_a_failed_landing(tmp_path: Path) -> None:
    """`L` / the op lands it by hand (here into another branch): the paused loop ends
    succeeded with what was done."""
    repo, config = configure(tmp_path, "land")
    conflicting_main(repo)
    git("branch", "side", "HEAD~1", cwd=repo)

    async def during(rec: Recorded) -> None:
        runner = rec.supervisor.runners["fix"]
        await wait_for(lambda: runner.state == "paused")
        message = await rec.supervisor.land("fix", into="side")
        assert "merged loopvisor/fix into side" in message
        await wait_for(lambda: runner.done)

    rec = anyio.run(lambda: run_recorded(config, exit_when_idle=False, during=during))
    runner = rec.supervisor.runners["fix"]
    assert runner.state == "succeeded"
    assert "merged loopvisor/fix into side" in runner.reason
    assert [e.op for e in rec.of(ev.ControlApplied)] == ["land"]


def test_on_success_pr_opens_a_pull_request_whose_body_is_the_loops_history(
    tmp_path: Path,
) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    repo, config = configure(tmp_path, "pr")
    git("remote", "add", "origin", str(remote), cwd=repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = bin_dir / "calls.jsonl"
    gh = bin_dir / "gh"
    gh.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "body = sys.stdin.read() if '--body-file' in sys.argv else ''\n"
        f"open({str(record)!r}, 'a').write(json.dumps([sys.argv[1:], body]) + '\\n')\n"
        "print('https://github.example/pull/1')\n"
    )
    gh.chmod(0o755)
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    run = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", str(config.path), "--json"],
        cwd=tmp_path,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (result,) = json.loads(run.stdout.splitlines()[-1])["loops"]
    assert "opened a pull request: https://github.example/pull/1" in result["reason"]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    argv, body = calls[-1]
    assert argv[argv.index("--title") + 1] == "fix: Fix app.py"
    assert "| 1 | continue |" in body
    assert "| 2 | succeeded |" in body
    assert "✔ `tests`: exit 0" in body
    assert "loopvisor/fix" in git("branch", "-r", cwd=repo)


def test_on_success_push_pushes_to_the_remote_the_loop_names(tmp_path: Path) -> None:
    """`push_remote = "upstream"`: the branch goes there, and no `origin` is needed."""
    remote = tmp_path / "upstream.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    repo, config = configure(tmp_path, "push")
    config.path.write_text(
        config.path.read_text().replace(
            'on_success = "push"', 'on_success = "push"\npush_remote = "upstream"'
        )
    )
    git("remote", "add", "upstream", str(remote), cwd=repo)
    run = run_cli("run", config.path, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (result,) = json.loads(run.stdout.splitlines()[-1])["loops"]
    assert "upstream" in result["reason"]
    assert git("rev-parse", "loopvisor/fix", cwd=repo) == git(
        "rev-parse", "refs/heads/loopvisor/fix", cwd=remote
    )


def test_on_success_pr_without_gh_needs_attention(tmp_path: Path) -> None:
    repo, config = configure(tmp_path, "pr")
    git("init", "-q", "--bare", str(tmp_path / "remote.git"), cwd=tmp_path)
    git("remote", "add", "origin", str(tmp_path / "remote.git"), cwd=repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    run = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", str(config.path), "--json"],
        cwd=tmp_path,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == EXIT_ATTENTION
    (result,) = json.loads(run.stdout.splitlines()[-1])["loops"]
    assert result["state"] == "paused"
    assert "the GitHub CLI `gh` is not installed" in result["reason"]
    assert "loopvisor/fix" not in git("branch", "-r", cwd=repo)  # nothing was pushed


@pytest.mark.anyio
async def test_loopvisor_land_goes_through_a_served_supervisor(tmp_path: Path) -> None:
    """Beside `serve`, the command is the `land` op over the socket (as `L` attached)."""
    repo, config = configure(tmp_path, "keep")
    sup = Supervisor(config, exit_when_idle=False)
    seen: list[ev.Event] = []
    sup.add_sink(seen.append)
    config.supervisor.state_dir.mkdir(parents=True, exist_ok=True)
    server = ControlServer(sup, config.supervisor.state_dir / "control.sock")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await tg.start(server.serve)
            await wait_for(lambda: sup.runners["fix"].state == "succeeded")
            out = await anyio.to_thread.run_sync(
                lambda: run_cli("land", "fix", "--config", config.path, cwd=tmp_path)
            )
            assert out.returncode == 0, out.stderr
            assert "merged loopvisor/fix into main" in out.stdout
            assert [e.op for e in seen if isinstance(e, ev.ControlApplied)] == ["land"]
            tg.cancel_scope.cancel()
    finally:
        await sup.aclose()
    assert (repo / "app.py").read_text() == "print('fixed')\n"


def test_land_pr_after_the_run_tells_the_history_from_the_journal(tmp_path: Path) -> None:
    """`loopvisor land --pr` beside no supervisor: the body comes from the journal."""
    repo, config = configure(tmp_path, "keep")
    git("init", "-q", "--bare", str(tmp_path / "remote.git"), cwd=tmp_path)
    git("remote", "add", "origin", str(tmp_path / "remote.git"), cwd=repo)
    run = run_cli("run", config.path, "--headless", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = bin_dir / "body.md"
    gh = bin_dir / "gh"
    gh.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"if '--body-file' in sys.argv: open({str(record)!r}, 'w').write(sys.stdin.read())\n"
        "print('https://github.example/pull/2')\n"
    )
    gh.chmod(0o755)
    out = subprocess.run(
        [sys.executable, "-m", "supervisor", "land", "fix", "--pr", "--config", str(config.path)],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    body = record.read_text()
    assert "2 iteration(s)" in body
    assert "| 2 | succeeded |" in body
    assert "✔ `tests`: exit 0" in body
