"""kill -9 between a checkpoint commit and its journal row: the resumed run neither
loses the commit's changes nor commits the iteration twice.

The moment is made exact with a `git` on the supervisor's PATH that runs the real git
and then, after the commit of iteration 2 (once), records its pid and sleeps: the
commit is in the repo, the supervisor is waiting for git, and the journal has no
outcome for iteration 2. The test waits for that pid file, then SIGKILLs the
supervisor and resumes it. The sleeping git carries the run's `LOOPVISOR_*` tags, so
the resume kills it before anything runs.
"""

from __future__ import annotations

import os
import shutil

from gitrepo import commits, git, make_repo
from helpers import alive, command_agent, loop, wait_gone
from resume_support import Harness

AGENT = """
import os, pathlib
n = os.environ["LOOPVISOR_ITERATION"]
pathlib.Path(f"f{n}.txt").write_text(f"iteration {n}\\n")
with open("log.txt", "a") as log:
    log.write(f"attempt of iteration {n}\\n")
print("wrote", n)
"""

HOLDING_GIT = """#!/bin/sh
"{real}" "$@"
rc=$?
case " $* " in
*" commit "*)
  if [ "$LOOPVISOR_ITERATION" = 2 ] && mkdir "{hold}" 2>/dev/null; then
    echo $$ > "{hold}/pid"
    exec sleep 300
  fi;;
esac
exit $rc
"""


def test_a_commit_the_crash_kept_out_of_the_journal_is_folded_into_the_rerun(
    harness: Harness,
) -> None:
    h = harness
    repo = make_repo(h.tmp_path / "repo")
    hold = h.tmp_path / "held"
    bin_dir = h.tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(HOLDING_GIT.format(real=shutil.which("git"), hold=hold))
    wrapper.chmod(0o755)
    h.config.write_text(
        "\n".join(
            (
                command_agent("edit", AGENT),
                loop(
                    "fix",
                    "edit",
                    workspace={"repo": "repo", "worktree": True},
                    checks=[{"run": "test -e f3.txt"}],
                    max_iterations=5,
                    stuck={"same_failure": 0, "same_output": 0, "oscillation": False},
                ),
            )
        )
    )
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    first = h.start(env={"PATH": path})
    first.until("iteration 2's commit", lambda: (hold / "pid").exists(), timeout=60)
    held_git = int((hold / "pid").read_text())
    orphan = commits(repo, "loopvisor/fix")[-1]
    assert orphan["Loopvisor-Iteration"] == "2"
    first.kill9()
    assert [(i["iteration"], i["outcome"], i["commit"]) for i in h.history("fix")] == [
        (1, "continue", commits(repo, "loopvisor/fix")[0]["sha"]),
        (2, "interrupted", None),  # the commit is in the repo, its row never came
    ]

    second, summary = h.resume_to_end(env={"PATH": path}, timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    assert wait_gone([held_git]) == []
    assert not alive([held_git])

    made = commits(repo, "loopvisor/fix")
    assert [c["Loopvisor-Iteration"] for c in made] == ["1", "2", "3"]  # no duplicate
    assert orphan["sha"] not in {c["sha"] for c in made}
    history = h.history("fix")
    assert [(i["iteration"], i["outcome"]) for i in history] == [
        (1, "continue"),
        (2, "interrupted"),
        (2, "continue"),
        (3, "succeeded"),
    ]
    assert [i["commit"] for i in history if i["commit"]] == [c["sha"] for c in made]
    # Nothing the crashed attempt wrote was lost: its line and the re-run's are both in.
    log = git("show", f"{made[1]['sha']}:log.txt", cwd=repo).splitlines()
    assert log == [
        "attempt of iteration 1",
        "attempt of iteration 2",
        "attempt of iteration 2",
    ]
    notices = [n["message"] for n in second.of("notice", "fix")]
    undone = [message for message in notices if "never journalled" in message]
    assert len(undone) == 1
    assert orphan["sha"][:12] in undone[0]
