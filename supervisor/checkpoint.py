"""Checkpoint commits: what each iteration of a worktree loop changed, committed to the
loop's branch before its outcome is journalled.

A loop that fixed its bug and then ended must not leave the fix as an uncommitted
change in a worktree that `loopvisor clean` deletes: so after every iteration that
reaches an outcome (`succeeded`, `continue`, `failed`, `exhausted`, `stuck`,
`stopped`), `Checkpointer.commit` stages everything with `git add -A` (the repo's own
`.gitignore` keeps out what must never be committed: secrets, build output, caches)
and commits it as::

    fix-auth: iteration 3 — continue: exit 1 (expected 0); 1 failed, 4 passed

    Loopvisor-Run: 0123456789ab
    Loopvisor-Loop: fix-auth
    Loopvisor-Iteration: 3
    Loopvisor-Outcome: continue
    Loopvisor-Tokens: 5210
    Loopvisor-USD: 0.015630

(git's trailer format: `git log --format='%(trailers)'` reads them). The author and
committer are `loopvisor <loopvisor@localhost>` unless the loop sets `commit_author`.
An iteration that changed nothing makes no commit. An interrupted attempt and an
agent error that is retried make none either: the same iteration runs again, and its
commit takes what the earlier attempt changed. An iteration cut off mid-turn (an
operator stop, a loop or global budget, the run shut down by Ctrl-C or SIGTERM) is
committed as `stopped` with why (`loop_worktree.finish_cut_off`), after its agent's
processes are gone. A kill -9 of the supervisor commits nothing: `--resume` runs that
iteration again in the same worktree, and the re-run's one commit holds what the dead
attempt left there together with its own changes. Git runs with `gitexec`'s safe options
(no hooks, no signing, no prompts), in the loop's process environment
(`childenv` and the `LOOPVISOR_*` tags), bounded by a timeout; a failure is a
warning notice and the loop goes on (its changes stay in the worktree).

The iteration's `commit` is the branch's HEAD after the checkpoint when HEAD moved
during the iteration (by this commit, or by commits the agent made itself), and its
`parent` is HEAD when the iteration began: `loopvisor diff --iteration N` shows
parent..commit. Both go into the `iteration_finished` event, so they reach the
journal in the same row as the outcome.

A kill -9 between the commit and that row: the journal never saw the outcome, so
`--resume` runs the iteration again. `begin` (before the re-run's agent turn) finds
HEAD to be a commit of this run, loop and iteration that the journal does not know
(`known`: the commits it recorded) and undoes it with `git reset --soft`, keeping its
changes in the worktree: the re-run's commit then holds them, so the iteration ends
with exactly one commit, and nothing the crashed attempt changed is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from supervisor.gitexec import GitError, GitResult, git_async
from supervisor.gitident import author_env
from supervisor.textsafe import for_terminal, for_terminal_line

COMMITTED_OUTCOMES = frozenset({"succeeded", "continue", "failed", "exhausted", "stuck", "stopped"})
"""Outcomes that end an iteration for good (`interrupted` and `error` run it again)."""
TRAILER_RUN = "Loopvisor-Run"
TRAILER_LOOP = "Loopvisor-Loop"
TRAILER_ITERATION = "Loopvisor-Iteration"
SUBJECT_REASON_CHARS = 200
BODY_REASON_CHARS = 4000
_FILES_CHANGED = re.compile(r"(\d+) files? changed")
CHECKPOINT_TIMEOUT_S = 120.0
"""A checkpoint that takes longer (a huge tree on a slow disk) is given up with a notice."""
COMMIT_OPTIONS: tuple[str, ...] = ("-c", "core.safecrlf=false")
"""`git add` may not refuse a file over its line endings: the checkpoint is a snapshot."""

Notice = Callable[[str, str], None]
"""(level, message): how the checkpointer tells the loop's transcript."""


def commit_message(
    *, loop: str, run_id: str, iteration: int, outcome: str, reason: str, tokens: int, usd: float
) -> str:
    """The subject `LOOP: iteration N — outcome: reason`, the whole reason when the
    subject had to cut it, then the trailers. Control characters are shown as `\\x1b`
    (a `git log` in a terminal must not obey an agent's escape sequences)."""
    one_line = " ".join(for_terminal_line(reason).split())
    short = one_line
    if len(short) > SUBJECT_REASON_CHARS:
        short = short[: SUBJECT_REASON_CHARS - 1] + "…"
    subject = f"{loop}: iteration {iteration} — {outcome}"
    if short:
        subject += f": {short}"
    parts = [subject]
    if short != reason.strip():
        body = for_terminal(reason.strip())[:BODY_REASON_CHARS]
        parts.append(body)
    parts.append(
        "\n".join(
            (
                f"{TRAILER_RUN}: {run_id}",
                f"{TRAILER_LOOP}: {loop}",
                f"{TRAILER_ITERATION}: {iteration}",
                f"Loopvisor-Outcome: {outcome}",
                f"Loopvisor-Tokens: {tokens}",
                f"Loopvisor-USD: {usd:.6f}",
            )
        )
    )
    return "\n\n".join(parts) + "\n"


def trailers(message: str) -> dict[str, str]:
    """The `Key: value` lines of a commit message's last paragraph."""
    last = message.strip().rsplit("\n\n", 1)[-1]
    found = {}
    for line in last.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key:
            found[key] = value.strip()
    return found


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One iteration's place on the branch."""

    commit: str | None = None
    """HEAD after the checkpoint, when HEAD moved during the iteration; else None."""
    parent: str | None = None
    """HEAD when the iteration began."""
    files: int = 0
    """Files the checkpoint commit changed (0: it made none)."""


class Checkpointer:
    """Commits one worktree loop's iterations (see the module docstring)."""

    def __init__(
        self,
        loop: str,
        workspace: Path,
        *,
        run_id: str,
        author: str | None = None,
        known: Iterable[str] = (),
        notice: Notice = lambda level, message: None,
        redact: Callable[[str], str] = lambda text: text,
        timeout: float = CHECKPOINT_TIMEOUT_S,
    ) -> None:
        self.loop = loop
        self.workspace = workspace
        self.run_id = run_id
        self.author = author
        self.known: set[str] = set(known)
        """Commits the journal has recorded for this loop in this run (and this process's)."""
        self.commits: dict[int, Checkpoint] = {}
        """Each iteration's latest checkpoint in this process (the journal has them all)."""
        self.timeout = timeout
        """The whole checkpoint (add, commit, rev-parse); past it the loop goes on without."""
        self._notice = notice
        self._redact = redact
        self._began: tuple[int, str | None] | None = None

    async def _git(self, args: list[str], env: Mapping[str, str]) -> GitResult:
        return await git_async(args, cwd=self.workspace, env=env)

    async def _head(self, env: Mapping[str, str]) -> str | None:
        found = await self._git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], env)
        return found.out.strip() or None if found.ok else None

    async def begin(self, iteration: int, env: Mapping[str, str]) -> None:
        """Before the iteration's agent turn: note HEAD (the iteration's parent) and undo
        a commit of this iteration that a crash kept out of the journal."""
        try:
            head = await self._git(["log", "-1", "--format=%H%x00%P%x00%B", "HEAD"], env)
            if not head.ok:
                raise head.error(["log"])
            sha, parents, message = [*head.out.split("\0", 2), "", ""][:3]
            sha = sha.strip()
            found = trailers(message)
            orphan = (
                sha not in self.known
                and found.get(TRAILER_RUN) == self.run_id
                and found.get(TRAILER_LOOP) == self.loop
                and found.get(TRAILER_ITERATION) == str(iteration)
                and parents.split()
            )
            if orphan:
                undone = await self._git(["reset", "--soft", "HEAD^"], env)
                if not undone.ok:
                    raise undone.error(["reset"])
                self._notice(
                    "warning",
                    f"iteration {iteration}'s checkpoint commit {sha[:12]} was made before the"
                    " supervisor died and never journalled: undone with its changes kept, so"
                    " that this attempt's commit holds them",
                )
                sha = parents.split()[0]
        except GitError as exc:
            self._notice("warning", f"checkpoint: cannot read the branch's HEAD: {exc}")
            self._began = (iteration, None)
            return
        self._began = (iteration, sha or None)

    async def commit(
        self,
        iteration: int,
        outcome: str,
        reason: str,
        *,
        tokens: int,
        usd: float,
        env: Mapping[str, str],
    ) -> Checkpoint:
        """Commit what the iteration changed (see the module docstring); a failure is a
        warning notice and an empty `Checkpoint`, never an exception."""
        if outcome not in COMMITTED_OUTCOMES:
            return Checkpoint()
        began = self._began
        self._began = None
        parent = began[1] if began is not None and began[0] == iteration else None
        done: Checkpoint | None = None
        failure = f"no answer from git within {self.timeout:.0f}s"
        with anyio.move_on_after(self.timeout):
            try:
                done = await self._checkpoint(iteration, outcome, reason, tokens, usd, parent, env)
            except GitError as exc:
                failure = str(exc)
        if done is None:
            self._notice(
                "warning",
                f"checkpoint commit of iteration {iteration} failed: {failure}; its changes"
                " stay in the worktree and go into the next iteration's commit",
            )
            return Checkpoint()
        if done.commit is not None:
            self.known.add(done.commit)
            self.commits[iteration] = done
        return done

    async def revert(self, to: str, env: Mapping[str, str]) -> bool:
        """Put the loop's own branch and worktree back at `to` (`git reset --hard`: a
        metric loop's iteration that did not improve the score, `score.py`); its commit
        stays in the journal and the reflog. False, with a notice, when git failed."""
        failure = f"no answer from git within {self.timeout:.0f}s"
        with anyio.move_on_after(self.timeout):
            reset = await self._git(["reset", "--quiet", "--hard", to], env)
            if reset.ok:
                return True
            failure = str(reset.error(["reset"]))
        self._notice("warning", f"cannot revert to the best commit {to[:12]}: {failure}")
        return False

    async def _checkpoint(
        self,
        iteration: int,
        outcome: str,
        reason: str,
        tokens: int,
        usd: float,
        parent: str | None,
        env: Mapping[str, str],
    ) -> Checkpoint:
        if parent is None:
            parent = await self._head(env)
        # One scan of the worktree (`add -A`); whether anything is staged is then a
        # compare of the index with HEAD's tree, which reads no file.
        added = await self._git([*COMMIT_OPTIONS, "add", "-A"], env)
        if not added.ok:
            raise added.error(["add"])
        staged = await self._git(["diff", "--cached", "--quiet", "--no-ext-diff"], env)
        if staged.code not in (0, 1):
            raise staged.error(["diff"])
        files = 0
        if staged.code == 1:
            author = {**env, **author_env(self.author)}
            files = await self._commit_all(iteration, outcome, reason, tokens, usd, author)
        head = await self._head(env)
        moved = head is not None and head != parent
        return Checkpoint(head if moved else None, parent, files if moved else 0)

    async def _commit_all(
        self,
        iteration: int,
        outcome: str,
        reason: str,
        tokens: int,
        usd: float,
        env: Mapping[str, str],
    ) -> int:
        """Commit what is staged; the number of files the commit changed."""
        message = commit_message(
            loop=self.loop,
            run_id=self.run_id,
            iteration=iteration,
            outcome=outcome,
            reason=self._redact(reason),
            tokens=tokens,
            usd=usd,
        )
        made = await git_async(
            ["commit", "--no-verify", "--allow-empty-message", "--cleanup=whitespace", "-F", "-"],
            cwd=self.workspace,
            env=env,
            stdin=message.encode("utf-8", "replace"),
        )
        if not made.ok and "nothing to commit" not in made.out + made.err:
            raise made.error(["commit"])
        changed = _FILES_CHANGED.search(made.out)
        return int(changed.group(1)) if made.ok and changed else 0
