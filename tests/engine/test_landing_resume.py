"""kill -9 during or before an `on_success` landing: `run --resume` lands it then, once.

The moment is made exact by wrappers on the supervisor's PATH: a `git` that runs the
real git and then (or before it) records its pid and sleeps on the landing's own
command (`merge --ff-only`, `merge-tree`, `push`), and a fake `gh` that opens its
pull request and then sleeps. The test waits for that pid file and for the journal to
show the loop succeeded, SIGKILLs the supervisor, kills the held wrapper, and
resumes. The journal then holds a `landing_finished` record saying what was done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys

from gitrepo import git, make_repo
from resume_support import Harness, Session

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

HOLDING_GIT = """#!/bin/sh
hold() {{
  if mkdir "{hold}" 2>/dev/null; then echo $$ > "{hold}/pid"; exec sleep 300; fi
}}
case " $* " in *" {before} "*) hold;; esac
"{real}" "$@"
rc=$?
case " $* " in *" {after} "*) hold;; esac
exit $rc
"""

FAKE_GH = """#!{python}
import json, os, sys, time
here = {here!r}
argv = sys.argv[1:]
with open(os.path.join(here, "gh-calls.jsonl"), "a") as fh:
    fh.write(json.dumps(argv) + "\\n")
prs = os.path.join(here, "prs.json")
opened = json.load(open(prs)) if os.path.exists(prs) else []
if argv[:2] == ["pr", "list"]:
    head = argv[argv.index("--head") + 1]
    print(json.dumps([{{"url": p["url"]}} for p in opened if p["head"] == head]))
elif argv[:2] == ["pr", "create"]:
    sys.stdin.read()
    url = "https://github.example/o/r/pull/%d" % (len(opened) + 1)
    opened.append({{"head": argv[argv.index("--head") + 1], "url": url}})
    json.dump(opened, open(prs, "w"))
    print(url, flush=True)
    hold = os.path.join(here, "held")
    if not os.path.exists(hold):
        os.mkdir(hold)
        open(os.path.join(hold, "pid"), "w").write(str(os.getpid()))
        time.sleep(300)
"""


def setup(
    h: Harness, mode: str, *, before: str = "=none=", after: str = "=none="
) -> dict[str, str]:
    """The repo (with a bare origin), loops.toml and a PATH whose git holds as asked."""
    repo = make_repo(h.tmp_path / "repo")
    git("init", "-q", "--bare", str(h.tmp_path / "origin.git"), cwd=h.tmp_path)
    git("remote", "add", "origin", str(h.tmp_path / "origin.git"), cwd=repo)
    check = "import sys; sys.exit('fixed' not in open('app.py').read())"
    h.config.write_text(CONFIG.format(mode=mode, py=json.dumps(sys.executable), check=check))
    bin_dir = h.tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    real = shutil.which("git")
    hold = h.tmp_path / "held"
    wrapper.write_text(HOLDING_GIT.format(real=real, hold=hold, before=before, after=after))
    wrapper.chmod(0o755)
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable, here=str(h.tmp_path)))
    gh.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def kill_while_held(h: Harness, session: Session) -> None:
    """Wait until the wrapper holds and the journal shows the loop succeeded; kill -9
    the supervisor, then the held wrapper (the test started it)."""
    pid_file = h.tmp_path / "held" / "pid"
    session.until("the landing's held command", pid_file.exists, timeout=60)
    succeeded = "SELECT state FROM loops WHERE name = 'fix'"
    session.until("the journal's succeeded", lambda: h.query(succeeded) == [("succeeded",)])
    session.kill9()
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def landings(h: Harness) -> list[dict[str, object]]:
    rows = h.query("SELECT json FROM events WHERE type = 'landing_finished' ORDER BY seq")
    return [json.loads(r[0]) for r in rows]


def test_a_merge_the_kill_cut_off_before_its_record_is_found_done_on_resume(
    harness: Harness,
) -> None:
    h = harness
    env = setup(h, "land", after="merge --ff-only")
    first = h.start(env=env)
    kill_while_held(h, first)
    repo = h.tmp_path / "repo"
    merged = git("rev-parse", "main", cwd=repo).strip()
    assert (repo / "app.py").read_text() == "print('fixed')\n"  # the merge was done
    assert landings(h) == []

    second, summary = h.resume_to_end(env=env, timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    (result,) = summary["loops"]
    assert result["state"] == "succeeded"
    assert "already merged into main" in result["reason"]
    assert git("rev-parse", "main", cwd=repo).strip() == merged  # not merged twice
    (done,) = landings(h)
    assert (done["mode"], done["landed"], done["commit"]) == ("land", True, merged)


def test_a_kill_before_the_landing_began_lands_on_resume(harness: Harness) -> None:
    h = harness
    env = setup(h, "land", before="merge --ff-only")
    first = h.start(env=env)
    kill_while_held(h, first)
    repo = h.tmp_path / "repo"
    assert (repo / "app.py").read_text() == "print('v1')\n"  # nothing landed yet

    second, summary = h.resume_to_end(env=env, timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    (result,) = summary["loops"]
    assert "merged loopvisor/fix into main" in result["reason"]
    assert (repo / "app.py").read_text() == "print('fixed')\n"
    (done,) = landings(h)
    assert done["commit"] == git("rev-parse", "main", cwd=repo).strip()


def test_a_push_the_kill_cut_off_is_pushed_again_as_the_same_commit(harness: Harness) -> None:
    h = harness
    env = setup(h, "push", after="push")
    first = h.start(env=env)
    kill_while_held(h, first)
    origin = h.tmp_path / "origin.git"
    tip = git("rev-parse", "refs/heads/loopvisor/fix", cwd=origin).strip()

    second, summary = h.resume_to_end(env=env, timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    (result,) = summary["loops"]
    assert "pushed loopvisor/fix to origin" in result["reason"]
    assert git("rev-parse", "refs/heads/loopvisor/fix", cwd=origin).strip() == tip
    (done,) = landings(h)
    assert (done["mode"], done["ref"], done["commit"]) == ("push", "origin/loopvisor/fix", tip)


def test_a_pull_request_opened_before_the_kill_is_found_not_opened_twice(
    harness: Harness,
) -> None:
    h = harness
    env = setup(h, "pr")
    first = h.start(env=env)
    kill_while_held(h, first)

    second, summary = h.resume_to_end(env=env, timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    (result,) = summary["loops"]
    url = "https://github.example/o/r/pull/1"
    assert f"the pull request was already open: {url}" in result["reason"]
    calls = [json.loads(x) for x in (h.tmp_path / "gh-calls.jsonl").read_text().splitlines()]
    assert [c[:2] for c in calls].count(["pr", "create"]) == 1
    (done,) = landings(h)
    assert (done["mode"], done["url"]) == ("pr", url)


def test_a_run_killed_after_its_landing_was_recorded_resumes_to_its_end_at_once(
    harness: Harness,
) -> None:
    """What a kill -9 after the last record leaves (the run row never ended) is made
    by hand: the resumed run lands nothing again and ends, instead of waiting for a
    change that never comes."""
    h = harness
    env = setup(h, "land")
    first = h.start(env=env)
    assert first.finish(60)["exit_code"] == 0, first.stderr()
    repo = h.tmp_path / "repo"
    merged = git("rev-parse", "main", cwd=repo).strip()
    journal = h.state / "journal.sqlite3"
    conn = sqlite3.connect(journal)
    with conn:
        conn.execute("UPDATE runs SET ended = NULL, exit_code = NULL")
    conn.close()

    second, summary = h.resume_to_end(env=env, timeout=30)
    assert summary["exit_code"] == 0, second.stderr()
    (result,) = summary["loops"]
    assert "merged loopvisor/fix into main" in result["reason"]
    assert git("rev-parse", "main", cwd=repo).strip() == merged
    assert len(landings(h)) == 1
    assert second.of("landing_started") == []
