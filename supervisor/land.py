"""Landing what a loop produced: merge its branch into a target branch, push it, or
open a pull request with the GitHub CLI. `loopvisor land`, the console's `L` (the
`land` control op) and `on_success` all come here.

What a careful user expects, and what is promised:

- Uncommitted changes in the loop's worktree are part of what the loop produced: they
  are made into a commit (by `loopvisor`, in a private index) that joins its branch
  when the landing happens, and the output says so; refused or in conflict, they
  stay uncommitted where they were.
- A merge is computed without touching any working tree (`git merge-tree`). On a
  conflict nothing changes: the target branch, its checkout's HEAD, index, working
  files and untracked files stay byte for byte as they were; the message names the
  files. A target checked out somewhere with uncommitted changes is refused before
  anything is done; a checked-out target is moved by `git merge --ff-only` to the
  computed commit (which git refuses rather than overwrite a file), one that is
  not checked out by a compare-and-swap of its ref.
- Without `squash`, a target the branch is ahead of fast-forwards (as `git merge`
  would), else a merge commit is made; `squash` makes one commit of the branch's
  changes and records the tip it landed, so `clean` knows those commits are merged.
- `push` pushes the branch (not the target) to a remote; `pr` pushes it and opens
  a pull request against the target with `gh`, checked (installed, logged in)
  before anything is pushed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from supervisor.ghpr import PullRequestError, gh_problem, open_pull_request
from supervisor.spec import LoopSpec, OnSuccess
from supervisor.worktree import (
    IDENTITY,
    LANDED_KEY,
    WorktreeError,
    branch_name,
    git,
    git_run,
    has_ref,
    recorded_base,
    snapshot_commit,
)

DEFAULT_REMOTE = "origin"
PUSH_TIMEOUT_S = 300.0
_SHOWN = 10

PrText = Callable[[str], tuple[str, str]]
"""The pull request's (title, body) for a target branch."""


class LandError(Exception):
    """Landing was refused or failed; the message says why and what stayed as it was."""


@dataclass(frozen=True, slots=True)
class Landed:
    """What a landing did: its message, and for the journal (`on_success` after a kill
    -9 is repeated from this record): the commit the target (merge) or the pushed
    branch now points to, the ref pushed ("origin/loopvisor/fix") and the pull
    request's URL."""

    message: str
    commit: str = ""
    ref: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class LandRequest:
    """What to do with a loop's branch: merge it here (default), or push / PR it."""

    squash: bool = False
    into: str | None = None
    """The target branch; None: the branch the worktree was made from."""
    push: str | None = None
    """Push the branch to this remote instead of merging it here."""
    pr: bool = False
    """Push the branch (to `push`, else origin) and open a pull request against the target."""

    @classmethod
    def on_success(cls, mode: OnSuccess, remote: str | None = None) -> LandRequest | None:
        """What `on_success = MODE` does (None for "keep"); `remote` is the loop's
        `push_remote` (None: origin)."""
        if mode == "land":
            return cls()
        if mode == "push":
            return cls(push=remote or DEFAULT_REMOTE)
        if mode == "pr":
            return cls(pr=True, push=remote)
        return None

    def problem(self) -> str | None:
        if self.squash and (self.push is not None or self.pr):
            return (
                "--squash is for merging here; a pushed branch or a pull request is squashed "
                "when it is merged"
            )
        return None


def land(loop: LoopSpec, request: LandRequest, pr_text: PrText | None = None) -> str:
    """Land `loop`'s branch as `request` says; what was done, or LandError."""
    return land_outcome(loop, request, pr_text).message


def land_outcome(loop: LoopSpec, request: LandRequest, pr_text: PrText | None = None) -> Landed:
    """`land`, saying what it did (`Landed`). Repeating a landing that was done is
    done again harmlessly: a merged branch is "nothing to land", a push of the same
    commit changes nothing, an open pull request for the branch is found."""
    problem = request.problem()
    if problem is not None:
        raise LandError(problem)
    if loop.worktree is None:
        raise LandError(
            f"loop {loop.name!r} has no worktree (its workspace is a plain directory): "
            "there is no branch to land"
        )
    try:
        _check_branch(loop)
        if request.push is not None or request.pr:
            return _publish(loop, request, pr_text)
        return _merge(loop, request)
    except (WorktreeError, LandError, PullRequestError) as exc:  # names the loop, once
        text = str(exc).removeprefix(f"{loop.name}: ")
        raise LandError(f"{loop.name}: {text}") from None


def _check_branch(loop: LoopSpec) -> None:
    assert loop.worktree is not None
    repo, branch = loop.worktree.repo, branch_name(loop)
    if not has_ref(repo, f"refs/heads/{branch}"):
        raise LandError(f"{loop.name}: no branch {branch} in {repo}: nothing to land")
    if (loop.workspace / ".git").exists():
        head = git_run(["symbolic-ref", "--quiet", "HEAD"], loop.workspace, ok=(0, 1))
        if head.stdout.strip() != f"refs/heads/{branch}":
            where = head.stdout.strip().removeprefix("refs/heads/") or "a detached HEAD"
            raise LandError(
                f"{loop.name}: its worktree {loop.workspace} is on {where}, not on {branch}: "
                f"check {branch} out there again; nothing was landed"
            )


def target_branch(loop: LoopSpec, into: str | None, *, remote_ok: bool = False) -> str:
    """The branch to land into: `into`, else the one the worktree was made from. With
    `remote_ok` (a pull request), `origin/main` means the remote's `main`."""
    assert loop.worktree is not None
    repo, branch = loop.worktree.repo, branch_name(loop)
    if into is not None:
        if into == branch:
            raise LandError(f"{loop.name}: cannot land {branch} into itself")
        if not remote_ok and not has_ref(repo, f"refs/heads/{into}"):
            raise LandError(f"{loop.name}: no branch {into!r} in {repo} to land into")
        return into
    base, _ = recorded_base(repo, branch)
    if base is None:
        raise LandError(
            f"{loop.name}: no base is recorded for {branch} (its worktree was made before "
            "loopvisor recorded it): name the target branch with --into BRANCH"
        )
    if has_ref(repo, f"refs/heads/{base}") and base != branch:
        return base
    if remote_ok:
        for remote in git(["remote"], repo).split():
            if base.startswith(f"{remote}/") and has_ref(repo, f"refs/remotes/{base}"):
                return base.removeprefix(f"{remote}/")
    raise LandError(
        f"{loop.name}: {branch} was made from {base}, which is not a local branch: name the "
        "target branch with --into BRANCH"
    )


def worktree_snapshot(loop: LoopSpec) -> str | None:
    """What the loop's worktree holds uncommitted, as a commit on its branch's tip
    (loopvisor's, made in a private index: nothing is changed yet); None if clean."""
    if not (loop.workspace / ".git").exists():
        return None
    message = f"{loop.name}: uncommitted changes of its worktree, committed to land them"
    return snapshot_commit(loop.workspace, message)


def adopt_snapshot(loop: LoopSpec, snapshot: str) -> str:
    """Put `snapshot` on the loop's branch: the ref moves (compare-and-swap) and the
    worktree's index follows it; its files already hold that tree. What was done."""
    assert loop.worktree is not None
    repo, branch = loop.worktree.repo, branch_name(loop)
    old = git(["rev-parse", f"{snapshot}^"], repo).strip()
    why = f"loopvisor land {loop.name}: its worktree's uncommitted changes"
    git(["update-ref", "-m", why, f"refs/heads/{branch}", snapshot, old], repo)
    git(["reset", "-q"], loop.workspace)
    files = git(["diff", "--name-only", "-z", old, snapshot], repo).count("\0")
    short = git(["rev-parse", "--short", snapshot], repo).strip()
    return f"committed its worktree's uncommitted changes ({files} file(s)) as {short}"


# -- merging here ------------------------------------------------------------------
def _merge(loop: LoopSpec, request: LandRequest) -> Landed:
    assert loop.worktree is not None
    repo, branch = loop.worktree.repo, branch_name(loop)
    target = target_branch(loop, request.into)
    checkout = checkout_of(repo, target)
    if checkout is not None:
        dirty = git(
            ["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], checkout
        ).splitlines()
        if dirty:
            files = [line[3:] for line in dirty]
            raise LandError(
                f"{loop.name}: {target} is checked out in {checkout} with uncommitted changes "
                f"({_some(files)}): commit or stash them first; nothing was changed"
            )
    snapshot = worktree_snapshot(loop)
    tip = snapshot or git(["rev-parse", f"refs/heads/{branch}"], repo).strip()
    plan = plan_merge(repo, branch, tip, target, squash=request.squash)
    if plan is None:
        now = git(["rev-parse", f"refs/heads/{target}"], repo).strip()
        return Landed(
            f"{loop.name}: nothing to land: {branch} is already merged into {target}", now
        )
    if checkout is not None:
        check_untracked(checkout, target, plan)
    merged = apply_merge(repo, branch, target, plan, checkout=checkout)
    done = [adopt_snapshot(loop, snapshot)] if snapshot is not None else []
    return Landed(f"{loop.name}: " + "; ".join([*done, merged]), plan.new)


def checkout_of(repo: Path, branch: str) -> Path | None:
    """The worktree (the repo's own checkout included) that has `branch` checked out."""
    listing = git(["worktree", "list", "--porcelain", "-z"], repo)
    path: Path | None = None
    for field in listing.split("\0"):
        if field.startswith("worktree "):
            path = Path(field.removeprefix("worktree "))
        elif field == f"branch refs/heads/{branch}" and path is not None:
            return path
    return None


@dataclass(frozen=True, slots=True)
class MergePlan:
    """A merge computed in the object store only: the target's commit now (`old`), the
    commit it will point to (`new`), and how (for the message)."""

    old: str
    new: str
    tip: str
    how: str
    squash: bool


def plan_merge(repo: Path, branch: str, tip: str, target: str, *, squash: bool) -> MergePlan | None:
    """Merge `tip` (the branch's, or its snapshot) into `target` without touching a
    checkout; None when it is merged already, LandError on a conflict."""
    old = git(["rev-parse", f"refs/heads/{target}"], repo).strip()
    if _is_ancestor(repo, tip, old):
        return None
    count = int(git(["rev-list", "--count", f"{old}..{tip}"], repo).strip())
    if _is_ancestor(repo, old, tip) and not squash:
        return MergePlan(old, tip, tip, f"fast-forward, {count} commit(s)", squash)
    tree = _merged_tree(repo, branch, target, old, tip)
    env = None if _has_identity(repo) else IDENTITY
    if squash:
        subjects = git(["log", "--format=* %s", f"{old}..{tip}"], repo).strip()
        message = f"{branch}: {count} commit(s) squashed\n\n{subjects}\n"
        parents = ["-p", old]
        how = f"squashed {count} commit(s) into one"
    else:
        message = f"Merge branch '{branch}' into {target}"
        parents = ["-p", old, "-p", tip]
        how = f"merge commit, {count} commit(s)"
    new = git(["commit-tree", tree, *parents, "-m", message], repo, env=env).strip()
    return MergePlan(old, new, tip, how, squash)


def apply_merge(
    repo: Path, branch: str, target: str, plan: MergePlan, *, checkout: Path | None
) -> str:
    """Move `target` to the planned commit (its checkout too, when it has one)."""
    if checkout is not None:
        try:
            git(["merge", "--ff-only", "-q", plan.new], checkout)
        except WorktreeError as exc:
            raise LandError(f"{exc}; nothing was changed") from None
    else:
        why = f"loopvisor land {branch}"
        git(["update-ref", "-m", why, f"refs/heads/{target}", plan.new, plan.old], repo)
    if plan.squash:
        git(["config", f"branch.{branch}.{LANDED_KEY}", plan.tip], repo)
    short = git(["rev-parse", "--short", plan.new], repo).strip()
    elsewhere = checkout is not None and checkout.resolve() != repo.resolve()
    where = f"; its checkout {checkout} is updated" if elsewhere else ""
    return f"merged {branch} into {target} ({plan.how}): {target} is now {short}{where}"


def _merged_tree(repo: Path, branch: str, target: str, old: str, tip: str) -> str:
    """The tree of merging `tip` into `old`, computed in the object store only."""
    out = git_run(
        ["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", old, tip],
        repo,
        ok=(0, 1),
    )
    tree, *rest = out.stdout.split("\0")
    if out.returncode == 0:
        return tree
    files = list(dict.fromkeys(name for name in rest if name))
    raise LandError(
        f"merging {branch} into {target} conflicts in {_some(files)}: nothing was changed "
        f"({target} and its checkout are as they were). Resolve it by hand (`git merge "
        f"{branch}` on {target}), or rebase {branch} onto {target} in its worktree, then "
        "land again"
    )


def check_untracked(checkout: Path, target: str, plan: MergePlan) -> None:
    """Refuse, naming them, when files the merge brings are in the way in the target's
    checkout (untracked or ignored: git would refuse, or silently overwrite them)."""
    added = git(["diff", "--name-only", "-z", "--diff-filter=A", plan.old, plan.new], checkout)
    clash = [f for f in added.split("\0") if f and os.path.lexists(checkout / f)]
    if clash:
        raise LandError(
            f"{target} is checked out in {checkout}, where files not in {target} would be "
            f"overwritten by the merge ({_some(clash)}): move them away first; nothing was "
            "changed"
        )


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    return git_run(["merge-base", "--is-ancestor", a, b], repo, ok=(0, 1)).returncode == 0


def _has_identity(repo: Path) -> bool:
    """Whether git knows who commits in `repo` (else loopvisor signs the merge)."""
    return git_run(["var", "GIT_COMMITTER_IDENT"], repo, ok=(0, 128)).returncode == 0


def _some(names: list[str]) -> str:
    more = f", +{len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


# -- push and pull request ----------------------------------------------------------
def _publish(loop: LoopSpec, request: LandRequest, pr_text: PrText | None) -> Landed:
    assert loop.worktree is not None
    repo, branch = loop.worktree.repo, branch_name(loop)
    remote = request.push or DEFAULT_REMOTE
    if git_run(["remote", "get-url", "--", remote], repo, ok=(0, 2, 128)).returncode != 0:
        raise LandError(
            f"{loop.name}: no remote named {remote!r} in {repo}: add one (`git remote add "
            f"{remote} URL`) or name another with --push REMOTE"
        )
    base = target_branch(loop, request.into, remote_ok=True) if request.pr else ""
    if request.pr:
        problem = gh_problem()
        if problem is not None:
            raise LandError(
                f"{loop.name}: {problem}; nothing was pushed (`loopvisor land {loop.name} "
                "--push` pushes the branch alone)"
            )
    snapshot = worktree_snapshot(loop)
    done = [adopt_snapshot(loop, snapshot)] if snapshot is not None else []
    git(
        ["push", "--quiet", "--", remote, f"refs/heads/{branch}:refs/heads/{branch}"],
        repo,
        timeout=PUSH_TIMEOUT_S,
    )
    tip = git(["rev-parse", f"refs/heads/{branch}"], repo).strip()
    short = git(["rev-parse", "--short", tip], repo).strip()
    done.append(f"pushed {branch} to {remote} ({short})")
    url = ""
    if request.pr:
        title, body = pr_text(base) if pr_text is not None else (loop.name, "")
        opened, url = open_pull_request(repo, branch, base, title, body)
        done.append(opened)
    return Landed(f"{loop.name}: " + "; ".join(done), tip, f"{remote}/{branch}", url)
