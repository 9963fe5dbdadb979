"""Running git for loopvisor's own bookkeeping (checkpoint commits, diffs): never
interactive, never the user's hooks, never an external program of theirs.

A checkpoint commit is made after every iteration of an unattended loop, so nothing
may wait for a person or run what the user configured for their own commits: a
`pre-commit` or `commit-msg` hook (a linter, a test run, a push) would run code on
the agent's work, could reject it (and lose the checkpoint) or hang the loop; a
signing setup (`commit.gpgSign`) asks for a passphrase or a hardware key. So every
command gets `-c` options that win over any config file (`SAFE_OPTIONS`): hooks off
(`core.hooksPath=/dev/null`, which also covers `post-commit`, unlike `--no-verify`),
signing off, no fsmonitor daemon, no automatic gc or maintenance started in the
background, no pager and no colour; and `GIT_TERMINAL_PROMPT=0` with stdin closed, so
a credential or editor prompt fails at once instead of waiting.

Diffs are made to be applied: `--no-ext-diff --no-textconv` (the patch git itself
makes, whatever a diff driver in the user's config would show), explicit `a/` `b/`
prefixes (a `diff.noPrefix` config would make a patch `git apply` cannot read) and
`--binary` where the output goes to a patch.

`git_async` runs inside a loop (a process group with the loop's `LOOPVISOR_*` tags,
`process.GroupProcess`, so a kill -9 of the supervisor leaves nothing behind);
`git_sync` is for the command line and worker threads. Both are bounded by a timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from supervisor.childenv import child_env
from supervisor.process import GroupProcess
from supervisor.textsafe import decode

GIT_TIMEOUT_S = 60.0
"""One git command of a checkpoint or a diff: far more than a commit of a big tree takes."""
CAPTURE_MAX_BYTES = 1024 * 1024
"""Output kept per stream of a bookkeeping command (what it prints is a sha or a list)."""

SAFE_OPTIONS: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "commit.gpgSign=false",
    "-c", "tag.gpgSign=false",
    "-c", "core.fsmonitor=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "core.pager=cat",
    "-c", "color.ui=false",
    "-c", "advice.detachedHead=false",
)  # fmt: skip
"""Given before every subcommand: they override the user's and the repo's config."""
PATCH_OPTIONS: tuple[str, ...] = (
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
"""For every `git diff` whose output is a patch (`git apply` reads it)."""
QUIET_ENV: Mapping[str, str] = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    "GIT_OPTIONAL_LOCKS": "0",
}
"""Nothing may wait for a person; `status` does not take the index lock for itself."""


class GitError(Exception):
    """A git command failed, timed out or could not start; the message says which."""


@dataclass(frozen=True, slots=True)
class GitResult:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def error(self, args: Sequence[str]) -> GitError:
        """git's reason: its first `fatal:` or `error:` line (the hints follow it), else
        its last line, else the exit code."""
        detail = [line for line in (self.err or self.out).strip().splitlines() if line.strip()]
        found = [line for line in detail if line.startswith(("fatal:", "error:"))]
        why = (found or detail[-1:] or [f"exit {self.code}"])[0]
        return GitError(f"git {args[0] if args else ''}: {why.strip()}")


def argv(args: Sequence[str]) -> list[str]:
    return ["git", *SAFE_OPTIONS, *args]


async def git_async(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = GIT_TIMEOUT_S,
) -> GitResult:
    """Run `git ARGS` in its own process group (the environment: `childenv`'s allow-list
    plus `env` plus `QUIET_ENV`). Raises GitError when it cannot start or times out."""
    kept: dict[str, list[str]] = {"stdout": [], "stderr": []}
    sizes = {"stdout": 0, "stderr": 0}
    code: int | None = None
    try:
        async with GroupProcess(
            argv(args), cwd=cwd, env={**(env or {}), **QUIET_ENV}, stdin=stdin
        ) as proc:
            with anyio.move_on_after(timeout):
                async with anyio.create_task_group() as tg:

                    async def read() -> None:
                        async for chunk in proc.chunks():
                            if sizes.get(chunk.stream, CAPTURE_MAX_BYTES) < CAPTURE_MAX_BYTES:
                                kept[chunk.stream].append(chunk.text)
                                sizes[chunk.stream] += len(chunk.text)

                    tg.start_soon(read)
                    code = await proc.wait()
    except OSError as exc:
        raise GitError(f"git {args[0] if args else ''}: cannot start git: {exc}") from None
    if code is None:
        raise GitError(f"git {args[0] if args else ''}: no answer within {timeout:.0f}s")
    return GitResult(code, "".join(kept["stdout"]), "".join(kept["stderr"]))


def git_sync(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = GIT_TIMEOUT_S,
) -> GitResult:
    """`git_async` for the command line and worker threads (a plain child process)."""
    try:
        done = subprocess.run(
            argv(args),
            cwd=cwd,
            env=git_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0] if args else ''}: no answer within {timeout:.0f}s") from None
    except OSError as exc:
        raise GitError(f"git {args[0] if args else ''}: cannot start git: {exc}") from None
    return GitResult(done.returncode, decode(done.stdout), decode(done.stderr))


def git_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a bookkeeping git: the allow-list (`PATH`, `HOME` for the
    user's config, locale), `env`, and `QUIET_ENV`; never `GIT_DIR` and friends."""
    return child_env({**(env or {}), **QUIET_ENV})
