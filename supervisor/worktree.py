"""A git worktree per loop: loops that edit one repo each get their own checkout.

`workspace = { repo = ".", worktree = true, branch = "loopvisor/{loop}" }` makes the
loop's workspace `STATE_DIR/worktrees/LOOP`, a `git worktree` on its own branch,
created before the first iteration and kept after the loop ends so that a person
can review it, land it (`land.py`: `loopvisor land LOOP`) or discard it
(`loopvisor clean LOOP`).

The branch starts from `base` (a branch, tag, commit or `origin/...`), else from the
repo's HEAD; what it was made from is recorded in the repo's config with the branch
(`branch.<name>.loopvisorbase`), so `land` knows where the work goes back to and git
forgets it when the branch is deleted. Uncommitted changes of the repo would be
silently missing from a worktree made at its HEAD: such a repo is refused, unless
`include_uncommitted = true` copies them into the worktree as its first commit.

`setup` commands run once after the worktree is created: a marker file in the
worktree's own git dir says they are still due (it goes with the worktree, and only
a setup that succeeded removes it), so a crash or a failed setup runs them again.

Removing a worktree never loses work silently: `clean` refuses uncommitted changes
and commits merged nowhere else, says what would be lost, and needs `force`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from pathlib import Path

import anyio.to_thread

from supervisor.gitbase import base_ref, record_base
from supervisor.gitident import author_env
from supervisor.spec import Config, LoopSpec

IDENTITY: Mapping[str, str] = author_env(None)
"""Who commits what a loop produced (a loop's work is not the operator's commit):
the checkpoint commits' default identity (`gitident`)."""
BASE_KEY = "loopvisorbase"
"""`branch.<loop branch>.loopvisorbase`: the ref the branch was made from."""
LANDED_KEY = "loopvisorlanded"
"""The branch tip a squash landing put on its target: merged, though not an ancestor."""
SETUP_PENDING = "loopvisor-setup-pending"
"""In the worktree's git dir while its `setup` commands have not succeeded yet."""
_SHOWN = 5


class WorktreeError(Exception):
    """A worktree cannot be created or removed (not a repo, dirty, git failed)."""


class WorktreeRefused(WorktreeError):
    """`clean` without `force` on a worktree whose removal would lose work."""


def git(
    args: list[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    ok: Iterable[int] = (0,),
) -> str:
    """`git ARGS` in `cwd`; its stdout, or WorktreeError with what git said."""
    return git_run(args, cwd, env=env, stdin=stdin, timeout=timeout, ok=ok).stdout


def git_run(
    args: list[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    ok: Iterable[int] = (0,),
) -> subprocess.CompletedProcess[str]:
    """`git ARGS` run to its end (exit codes in `ok` are fine; others raise). Never
    prompts: a push that wants a password fails instead of waiting for a terminal."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            env=full_env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorktreeError(f"git {' '.join(args)}: {exc}") from exc
    if out.returncode not in tuple(ok):
        said = out.stderr.strip() or out.stdout.strip() or f"exit {out.returncode}"
        raise WorktreeError(f"git {' '.join(args)} in {cwd}: {said}")
    return out


def has_ref(repo: Path, ref: str) -> bool:
    return git_run(["rev-parse", "--verify", "--quiet", ref], repo, ok=(0, 1)).returncode == 0


def branch_name(loop: LoopSpec) -> str:
    assert loop.worktree is not None
    return loop.worktree.branch.format(loop=loop.name)


def resolve_base(repo: Path, base: str) -> str:
    """The commit `base` names in `repo`, or WorktreeError naming it."""
    if base.startswith("-"):
        raise WorktreeError(f'base "{base}" is not a branch, tag or commit')
    out = git_run(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{base}^{{commit}}"],
        repo,
        ok=(0, 1, 128),
    )
    if out.returncode != 0:
        hint = " (a remote branch: run `git fetch` first?)" if "/" in base else ""
        raise WorktreeError(f'base "{base}" is not a branch, tag or commit in {repo}{hint}')
    return out.stdout.strip()


def ensure_worktree(loop: LoopSpec) -> bool:
    """Create the loop's worktree if it is missing; True when it was created now."""
    wt = loop.worktree
    if wt is None:
        return False
    path = loop.workspace
    if (path / ".git").exists():
        return False
    try:
        git(["rev-parse", "--show-toplevel"], wt.repo)
    except WorktreeError:
        raise WorktreeError(f"loop {loop.name!r}: {wt.repo} is not a git repository") from None
    branch = branch_name(loop)
    path.parent.mkdir(parents=True, exist_ok=True)
    if has_ref(wt.repo, f"refs/heads/{branch}"):  # kept by an earlier `clean`: reuse it
        git(["worktree", "add", str(path), branch], wt.repo)
    else:
        start, base = _start_point(loop)
        git(["worktree", "add", "--no-track", "-b", branch, str(path), start], wt.repo)
        git(["config", f"branch.{branch}.{BASE_KEY}", base], wt.repo)
        # Its commit, as the ref `loopvisor diff` and `land` read (`gitbase`): one record.
        record_base(wt.repo, branch)
    if loop.setup:
        mark_setup_pending(path)
    return True


def mark_setup_pending(path: Path) -> None:
    """A new worktree at `path` waits for its loop's `setup` commands."""
    (_git_dir(path) / SETUP_PENDING).write_text("setup not run yet\n", encoding="utf-8")


def _start_point(loop: LoopSpec) -> tuple[str, str]:
    """(the commit the new branch starts at, the ref it is made from, as recorded)."""
    wt = loop.worktree
    assert wt is not None
    repo = wt.repo
    head = git(["rev-parse", "HEAD"], repo).strip()
    if wt.base is not None:
        start, base = resolve_base(repo, wt.base), wt.base
    else:
        current = git_run(["symbolic-ref", "--quiet", "--short", "HEAD"], repo, ok=(0, 1))
        start, base = head, current.stdout.strip() or head
    if start != head:  # the repo's checkout is elsewhere: its changes are not in question
        if wt.include_uncommitted:
            raise WorktreeError(
                f"loop {loop.name!r}: include_uncommitted copies the uncommitted changes of "
                f"{repo}, whose checkout is at {head[:12]}, not at base {wt.base!r}: drop one"
            )
        return start, base
    if wt.include_uncommitted:
        return _snapshot_commit(loop) or start, base
    dirty = git(["status", "--porcelain", "--untracked-files=no"], repo).strip()
    if dirty:
        first = dirty.splitlines()[0].strip()
        raise WorktreeError(
            f"loop {loop.name!r}: {repo} has uncommitted changes ({first} …) that its new "
            "worktree would not contain; commit or stash them first, or set "
            "include_uncommitted = true in its workspace to copy them in"
        )
    return start, base


def _snapshot_commit(loop: LoopSpec) -> str | None:
    """The repo's uncommitted changes as a commit on its HEAD (the state dir left out)."""
    wt = loop.worktree
    assert wt is not None
    repo, state_dir = wt.repo.resolve(), loop.workspace.parent.parent.resolve()
    exclude = [state_dir.relative_to(repo)] if state_dir.is_relative_to(repo) else []
    message = f"{loop.name}: uncommitted changes of {wt.repo} when its worktree was made"
    return snapshot_commit(wt.repo, message, exclude=exclude)


def snapshot_commit(path: Path, message: str, *, exclude: Iterable[Path] = ()) -> str | None:
    """A commit on top of HEAD holding a checkout's uncommitted changes: tracked ones
    and untracked files that are not ignored (`exclude` left out), by loopvisor.
    Built in a private index: the checkout's own index, files and refs stay as they
    are. None when there is nothing uncommitted."""
    import tempfile  # here, not at every start of `run` (issue 12)

    pathspec = [".", *(f":(exclude){p}" for p in exclude)]
    with tempfile.TemporaryDirectory(prefix="loopvisor-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(["read-tree", "HEAD"], path, env=env)
        git(["add", "-A", "--", *pathspec], path, env=env, timeout=600)
        tree = git(["write-tree"], path, env=env).strip()
    if tree == git(["rev-parse", "HEAD^{tree}"], path).strip():
        return None
    return git(["commit-tree", tree, "-p", "HEAD", "-m", message], path, env=IDENTITY).strip()


def _git_dir(path: Path) -> Path:
    """The worktree's own git dir (`.git/worktrees/NAME` of the repo)."""
    return Path(git(["rev-parse", "--absolute-git-dir"], path).strip())


def recorded_base(repo: Path, branch: str) -> tuple[str | None, str | None]:
    """(the ref the loop's branch was made from, its commit then), as recorded when its
    worktree was created; (None, None) for a branch loopvisor did not record."""

    ref = git_run(["config", "--get", f"branch.{branch}.{BASE_KEY}"], repo, ok=(0, 1))
    commit = git_run(
        ["rev-parse", "--verify", "--quiet", f"{base_ref(branch)}^{{commit}}"], repo, ok=(0, 1)
    )
    return ref.stdout.strip() or None, commit.stdout.strip() or None


def prepare_worktrees(config: Config) -> list[str]:
    """Create every missing worktree of the config; returns a line per creation."""
    created = []
    for loop in config.loops:
        if loop.worktree is not None and loop.worktree.after_loop is not None:
            continue  # made from that loop's branch once it ended (`pipeline.py`)
        if ensure_worktree(loop):
            created.append(f"{loop.name}: worktree {loop.workspace} on branch {branch_name(loop)}")
    return created


# -- setup ------------------------------------------------------------------------
def setup_pending(loop: LoopSpec) -> bool:
    """Whether the loop's worktree still waits for its `setup` commands."""
    if loop.worktree is None or not loop.setup or not (loop.workspace / ".git").exists():
        return False
    return (_git_dir(loop.workspace) / SETUP_PENDING).exists()


def setup_done(loop: LoopSpec) -> None:
    (_git_dir(loop.workspace) / SETUP_PENDING).unlink(missing_ok=True)


# -- what removing a worktree would lose --------------------------------------------
def uncommitted_files(path: Path) -> list[str]:
    """Files with changes not committed in a worktree: tracked, staged or untracked
    (ignored files are not the loop's work). Read without refreshing the index."""
    out = git(["--no-optional-locks", "status", "--porcelain", "-z", "--untracked-files=all"], path)
    names: list[str] = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if len(entry) < 4:
            continue
        names.append(entry[3:])
        if "R" in entry[:2] or "C" in entry[:2]:  # a rename's source follows on its own
            next(fields, None)
    return names


def unmerged_commits(repo: Path, branch: str) -> list[str]:
    """`SHA subject` of each commit on `branch` that no other branch, tag or remote
    branch holds, newest first (a squash landing counts as merged)."""
    landed = git_run(["config", "--get", f"branch.{branch}.{LANDED_KEY}"], repo, ok=(0, 1))
    tip = landed.stdout.strip()
    also = [f"^{tip}"] if tip and has_ref(repo, f"{tip}^{{commit}}") else []
    out = git(
        [
            "log",
            "--format=%h %s",
            f"refs/heads/{branch}",
            *also,
            "--not",
            f"--exclude={branch}",
            "--branches",
            "--tags",
            "--remotes",
        ],
        repo,
    )
    return out.splitlines()


def what_would_be_lost(loop: LoopSpec, *, delete_branch: bool) -> list[str]:
    """What removing the loop's worktree (and with `delete_branch` its branch) would
    lose, one phrase per kind; [] when nothing."""
    wt = loop.worktree
    assert wt is not None
    branch = branch_name(loop)
    lost: list[str] = []
    if (loop.workspace / ".git").exists():
        files = uncommitted_files(loop.workspace)
        if files:
            lost.append(
                f"uncommitted changes in {len(files)} file(s) ({_some(files)}): they would be lost"
            )
        detached = git(
            ["log", "--format=%h %s", "HEAD", "--not", "--branches", "--tags", "--remotes"],
            loop.workspace,
        ).splitlines()
        if detached:  # someone checked out a commit in the worktree and committed there
            lost.append(
                f"{len(detached)} commit(s) on the worktree's detached HEAD (newest: "
                f"{detached[0]}): they would be lost"
            )
    if has_ref(wt.repo, f"refs/heads/{branch}"):
        commits = unmerged_commits(wt.repo, branch)
        if commits:
            fate = (
                "they would be lost with the branch"
                if delete_branch
                else f"only the branch {branch} would still hold them"
            )
            lost.append(
                f"{len(commits)} commit(s) on {branch} merged into no other branch, tag or "
                f"remote (newest: {commits[0]}): {fate}"
            )
    return lost


def _some(names: list[str]) -> str:
    more = f", +{len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def remove_worktree(loop: LoopSpec, *, delete_branch: bool = False, force: bool = False) -> str:
    """Remove the loop's worktree (and with `delete_branch` its branch). Without
    `force`, refuses (WorktreeRefused, saying what would be lost) when that loses work."""
    wt = loop.worktree
    if wt is None:
        raise WorktreeError(f"loop {loop.name!r} has no worktree")
    branch = branch_name(loop)
    if not force:
        lost = what_would_be_lost(loop, delete_branch=delete_branch)
        if lost:
            land = f"loopvisor land {loop.name}"
            raise WorktreeRefused(
                f"{loop.name}: not removed: " + "; ".join(lost) + f". Land it first ({land}), "
                "or remove it anyway with --force"
            )
    if loop.workspace.exists():
        git(["worktree", "remove", "--force", str(loop.workspace)], wt.repo)
        msg = f"{loop.name}: removed worktree {loop.workspace}"
    else:
        git(["worktree", "prune"], wt.repo)
        msg = f"{loop.name}: no worktree at {loop.workspace} (pruned stale entries)"
    if not delete_branch:
        return f"{msg}; branch {branch} kept"
    if not git(["branch", "--list", branch], wt.repo).strip():
        return f"{msg}; no branch {branch} to delete"
    git(["branch", "-D", branch], wt.repo)
    return f"{msg}; deleted branch {branch}"


# -- overlapping changes -------------------------------------------------------------
def changed_files(loop: LoopSpec) -> set[str]:
    """Files a loop's worktree changed since it branched off its base: committed on
    its branch, staged, modified or untracked."""
    path = loop.workspace
    if loop.worktree is None or not (path / ".git").exists():
        return set()
    files = set(uncommitted_files(path))
    repo = loop.worktree.repo
    _, base_commit = recorded_base(repo, branch_name(loop))
    start = base_commit or git(["rev-parse", "HEAD"], repo).strip()
    base = git(["merge-base", "HEAD", start], path).strip()
    files.update(git(["diff", "--name-only", "-z", base, "HEAD"], path).split("\0"))
    files.discard("")
    return files


def overlaps(
    changes: dict[str, set[str]], races: Mapping[str, str] | None = None
) -> Iterable[tuple[str, str, set[str]]]:
    """Pairs of loops whose worktrees changed the same files. `races` maps a loop to
    its race (an attempt to the race loop, the race loop to itself): loops of one
    race are alternatives, only one of which is kept, so they never conflict."""
    race_of = races or {}
    for (a, fa), (b, fb) in combinations(sorted(changes.items()), 2):
        if a in race_of and race_of.get(a) == race_of.get(b):
            continue
        common = fa & fb
        if common:
            yield a, b, common


class OverlapChecker:
    """After each iteration of a worktree loop, warn (once per file) when two loops'
    worktrees changed the same file: their branches will conflict on merge. Not the
    attempts of one race (nor the race loop, which takes the winner's tip): they are
    alternatives, not parallel work to merge."""

    def __init__(self, loops: list[LoopSpec], notice: Callable[[str, str], None]) -> None:
        self.loops = [spec for spec in loops if spec.worktree is not None]
        self._races = {
            spec.name: spec.attempt_of or spec.name
            for spec in self.loops
            if spec.attempt_of or spec.race >= 2
        }
        """A race's loop and attempts, by race: never warned about against each other."""
        self._notice = notice
        self._warned: set[tuple[str, str, str]] = set()

    @property
    def active(self) -> bool:
        return len(self.loops) >= 2

    async def check(self, loop: str) -> None:
        if not self.active or loop not in {spec.name for spec in self.loops}:
            return
        try:
            changes = await anyio.to_thread.run_sync(
                lambda: {spec.name: changed_files(spec) for spec in self.loops}
            )
        except WorktreeError as exc:
            self._notice(loop, f"overlap check failed: {exc}")
            return
        for a, b, common in overlaps(changes, self._races):
            new = sorted(f for f in common if (a, b, f) not in self._warned)
            if new:
                self._warned.update((a, b, f) for f in new)
                more = f" (+{len(new) - 5} more)" if len(new) > 5 else ""
                self._notice(
                    loop,
                    f"worktrees of {a} and {b} both changed {', '.join(new[:5])}{more}: "
                    "expect merge conflicts",
                )
