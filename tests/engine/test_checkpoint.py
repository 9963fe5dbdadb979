"""Checkpoint commits of worktree loops, against real git repositories and real runs:
one commit per iteration that changed something, with the documented message and
trailers, none for an iteration that changed nothing, .gitignore honoured, the user's
hooks and signing never run, a failing commit a notice (the loop goes on), and the
journal, `history` and the transcript showing each iteration's commit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest
from gitrepo import commits, git, make_repo, tracked
from helpers import json_lines, load, loop, run_cli, run_recorded, sim_agent, write_config

from supervisor import events as ev
from supervisor.checkpoint import commit_message, trailers
from supervisor.config.load import ConfigError, load_config
from supervisor.journal.reader import JournalReader
from supervisor.journal.schema import APPLICATION_ID, JOURNAL_NAME, MIGRATIONS, SCHEMA_VERSION
from supervisor.journal.writer import Journal
from supervisor.worktree import prepare_worktrees

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}


def hostile_git_setup(repo: Path, tmp_path: Path) -> None:
    """What a user's config may hold that must not touch a checkpoint: a pre-commit
    hook that rejects everything, a post-commit hook that hangs, commit signing with
    a signer that fails, and no identity at all (`user.useConfigOnly`)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name, body in (("pre-commit", "exit 1"), ("post-commit", "sleep 300")):
        (hooks / name).write_text(f"#!/bin/sh\n{body}\n")
        (hooks / name).chmod(0o755)
    for key, value in (
        ("core.hooksPath", str(hooks)),
        ("commit.gpgSign", "true"),
        ("gpg.program", "/bin/false"),
        ("user.useConfigOnly", "true"),
    ):
        git("config", key, value, cwd=repo)


def worktree_toml(tmp_path: Path) -> Path:
    """`fix`: iteration 1 writes a draft (plus an ignored secret and cache), iteration 2
    writes the same draft (no change), iteration 3 the fix. `other`: one iteration,
    committed as its configured author."""
    check = {"name": "fixed", "run": "grep -q fixed app.py"}
    return write_config(
        tmp_path,
        sim_agent(
            "fixer",
            converge_after=3,
            draft_files={"app.py": "draft\n", "secret.env": "TOKEN=hunter2\n", "cache/x": "j"},
            files={"app.py": "fixed\n"},
        ),
        sim_agent("quick", converge_after=1, files={"app.py": "fixed\n", "notes.md": "hi\n"}),
        loop(
            "fix",
            "fixer",
            workspace={"repo": "repo", "worktree": True},
            checks=[check],
            stuck=NO_STUCK,
        ),
        loop(
            "other",
            "quick",
            workspace={"repo": "repo", "worktree": True},
            checks=[check],
            commit_author="Jane Doe <jane@example.com>",
        ),
    )


def test_each_changing_iteration_is_one_commit_with_its_trailers(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    hostile_git_setup(repo, tmp_path)
    config = worktree_toml(tmp_path)
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    events = json_lines(run.stdout)
    run_id = next(e["run_id"] for e in events if e["type"] == "run_started")
    finished = {(e["loop"], e["iteration"]): e for e in events if e["type"] == "iteration_finished"}

    made = commits(repo, "loopvisor/fix")
    assert [c["Loopvisor-Iteration"] for c in made] == ["1", "3"]  # 2 changed nothing
    assert finished[("fix", 2)]["commit"] is None
    for c in made:
        n = int(c["Loopvisor-Iteration"])
        event = finished[("fix", n)]
        assert event["commit"] == c["sha"]
        assert c["subject"] == (f"fix: iteration {n} — {event['outcome']}: {event['reason']}")
        assert c["author"] == c["committer"] == "loopvisor <loopvisor@localhost>"
        assert c["Loopvisor-Run"] == run_id
        assert c["Loopvisor-Loop"] == "fix"
        assert c["Loopvisor-Outcome"] == event["outcome"]
        assert int(c["Loopvisor-Tokens"]) == event["tokens"] > 0
        assert float(c["Loopvisor-USD"]) == pytest.approx(event["usd"], abs=1e-6)
    assert [finished[("fix", n)]["outcome"] for n in (1, 3)] == ["continue", "succeeded"]
    assert finished[("fix", 3)]["commit_parent"] == made[0]["sha"]
    assert finished[("fix", 1)]["commit_parent"] == git("rev-parse", "main", cwd=repo).strip()

    # .gitignore kept the secret and the cache out; they are still in the worktree.
    assert tracked(repo, "loopvisor/fix") == {".gitignore", "app.py"}
    worktree = tmp_path / ".loopvisor" / "worktrees" / "fix"
    assert (worktree / "secret.env").exists()
    assert (worktree / "cache" / "x").exists()
    assert "hunter2" not in git("log", "-p", "loopvisor/fix", cwd=repo)
    assert git("status", "--porcelain", cwd=worktree) == ""  # nothing left uncommitted

    (other,) = commits(repo, "loopvisor/other")
    assert other["author"] == other["committer"] == "Jane Doe <jane@example.com>"
    assert tracked(repo, "loopvisor/other") == {".gitignore", "app.py", "notes.md"}

    # The journal has each iteration's commit: history's table and its JSON show it.
    table = run_cli("history", "fix", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "COMMIT" in lines[1]
    assert made[1]["sha"][:10] in next(line for line in lines if line.split()[0] == "3")
    data = json.loads(run_cli("history", "fix", "--json", cwd=tmp_path).stdout)
    assert [i["commit"] for i in data["iterations"]] == [made[0]["sha"], None, made[1]["sha"]]
    detail = run_cli("history", "fix", "--iteration", "3", cwd=tmp_path).stdout
    assert f"commit {made[1]['sha'][:10]}" in detail
    # Skipped, not changed: the repo's hooks and signing are as the user set them.
    assert git("config", "commit.gpgSign", cwd=repo).strip() == "true"
    assert git("config", "core.hooksPath", cwd=repo).strip() == str(tmp_path / "hooks")


def test_a_failing_commit_is_a_notice_and_the_loop_goes_on(tmp_path: Path) -> None:
    """The worktree's index is locked (another git holds it): the checkpoint fails with
    git's reason, the loop runs to its end, and its changes stay in the worktree."""
    make_repo(tmp_path / "repo")
    config = load(
        tmp_path,
        sim_agent("quick", converge_after=2, files={"app.py": "fixed\n"}, draft_files={"d": "1"}),
        loop(
            "fix",
            "quick",
            workspace={"repo": "repo", "worktree": True},
            checks=[{"run": "grep -q fixed app.py"}],
            stuck=NO_STUCK,
        ),
    )
    prepare_worktrees(config)
    worktree = config.loops[0].workspace
    gitdir = Path(git("rev-parse", "--absolute-git-dir", cwd=worktree).strip())
    (gitdir / "index.lock").write_text("")
    rec = anyio.run(run_recorded, config)
    assert rec.result("fix").state == "succeeded"
    failures = [
        n.message for n in rec.of(ev.Notice, "fix") if "checkpoint commit of iteration" in n.message
    ]
    assert len(failures) == 2, failures
    assert "index.lock" in failures[0]
    assert "stay in the worktree" in failures[0]
    assert [f.commit for f in rec.of(ev.IterationFinished, "fix")] == [None, None]
    assert (worktree / "app.py").read_text() == "fixed\n"


def test_commit_author_is_validated_with_its_position(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    path = write_config(
        tmp_path,
        sim_agent("a"),
        loop("x", "a", done_marker="DONE", commit_author="no email here"),
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(
        i for i, text in enumerate(path.read_text().splitlines(), 1) if "commit_author" in text
    )
    assert f"loops.toml:{line}:1: commit_author: " in str(caught.value)
    assert '"no email here" is not "Name <email>"' in str(caught.value)
    ok = write_config(
        tmp_path, sim_agent("a"), loop("x", "a", done_marker="D", commit_author="A B <a@b.c>")
    )
    assert load_config(ok).loops[0].commit_author == "A B <a@b.c>"


def test_the_message_escapes_control_characters_and_keeps_a_long_reason_whole() -> None:
    reason = "exit 1: \x1b[31mred\x1b[0m " + "x" * 300 + "\nsecond line"
    message = commit_message(
        loop="fix", run_id="r1", iteration=4, outcome="stuck", reason=reason, tokens=7, usd=0.5
    )
    subject, body, footer = message.split("\n\n")
    assert subject.startswith("fix: iteration 4 — stuck: exit 1: \\x1b[31mred")
    assert subject.endswith("…")
    assert len(subject) < 260
    assert "\x1b" not in message
    assert body.endswith("second line")
    assert trailers(message) == {
        "Loopvisor-Run": "r1",
        "Loopvisor-Loop": "fix",
        "Loopvisor-Iteration": "4",
        "Loopvisor-Outcome": "stuck",
        "Loopvisor-Tokens": "7",
        "Loopvisor-USD": "0.500000",
    }
    assert footer.endswith("\n")


def test_a_version_2_journal_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    """A journal written before checkpoints: `history` reads it without upgrading it
    (no commits), a supervisor opening it upgrades it in place and resumes from it."""
    path = tmp_path / JOURNAL_NAME
    with sqlite3.connect(path) as conn:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO runs (id, config_path, config_hash, config_text, started)"
            " VALUES ('old', 'loops.toml', 'h', 'text', 1.0)"
        )
        conn.execute("INSERT INTO loops (run_id, name, state) VALUES ('old', 'a', 'running')")
        conn.execute(
            "INSERT INTO iterations (run_id, loop, iteration, outcome, reason, tokens, started,"
            " ended) VALUES ('old', 'a', 1, 'continue', 'r', 5, 1.0, 2.0)"
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 2")
    with JournalReader(tmp_path) as reader:
        rows = reader.loop_iterations("a")
        assert [(r.iteration, r.outcome, r.commit) for r in rows] == [(1, "continue", None)]
        assert reader.history_json("a")["iterations"][0]["commit"] is None
        assert reader.iteration_commit("a", 1) is None
        assert reader.status_json()["loops"][0]["name"] == "a"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # readers never upgrade
    journal = Journal.open(tmp_path)
    resume = journal.load_resume("old")
    journal.close()
    assert (resume.loops["a"].next_iteration, resume.loops["a"].commits) == (2, ())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        columns = {row[1] for row in conn.execute("PRAGMA table_info(iterations)")}
    assert {"git_commit", "git_parent"} <= columns
