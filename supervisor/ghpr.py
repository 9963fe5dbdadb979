"""Pull requests through the GitHub CLI `gh` (`land --pr`, `on_success = "pr"`).

Opening one is idempotent: an open pull request whose head is the branch is looked
up first (`gh pr list --head BRANCH`) and, when there is one, it is what was done
(the push just updated it). A landing cut off by a kill -9 after `gh pr create`
is therefore repeated on `--resume` without failing on "a pull request already
exists". A `gh` that cannot list (an old one, a fake in a test) is not a failure:
the pull request is created as before, and `gh` itself refuses a duplicate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

GH_TIMEOUT_S = 120.0


class PullRequestError(Exception):
    """`gh` could not open the pull request; the message says what it said."""


def gh_problem() -> str | None:
    """Why `gh` cannot open a pull request (missing, not logged in), or None."""
    gh = shutil.which("gh")
    if gh is None:
        return "the GitHub CLI `gh` is not installed (https://cli.github.com), so no pull request"
    try:
        status = _gh([gh, "auth", "status"], None, Path.cwd())
    except OSError as exc:
        return f"the GitHub CLI `gh` cannot run: {exc}"
    if status.returncode != 0:
        return "the GitHub CLI `gh` is not logged in (run `gh auth login`), so no pull request"
    return None


def open_pull_request(repo: Path, branch: str, base: str, title: str, body: str) -> tuple[str, str]:
    """An open pull request for `branch` against `base`: the one there is, else a new
    one (`gh pr create`, body on stdin). (what was done, its URL or "")."""
    found = find_pull_request(repo, branch, base)
    if found:
        return f"the pull request was already open: {found}", found
    gh = shutil.which("gh") or "gh"
    argv = [gh, "pr", "create", "--head", branch, "--base", base, "--title", title]
    try:
        out = _gh([*argv, "--body-file", "-"], body, repo)
    except OSError as exc:
        raise PullRequestError(f"gh pr create: {exc}") from None
    if out.returncode != 0:
        said = out.stderr.strip() or out.stdout.strip() or f"exit {out.returncode}"
        raise PullRequestError(f"gh pr create failed: {said}")
    lines = out.stdout.strip().splitlines()
    url = lines[-1].strip() if lines else ""
    return (f"opened a pull request: {url}" if url else "opened a pull request"), url


def find_pull_request(repo: Path, branch: str, base: str) -> str:
    """The URL of an open pull request from `branch` into `base`, or "" (none, or `gh`
    could not say)."""
    gh = shutil.which("gh") or "gh"
    argv = [gh, "pr", "list", "--head", branch, "--base", base, "--state", "open"]
    try:
        out = _gh([*argv, "--json", "url"], None, repo)
    except OSError:
        return ""
    if out.returncode != 0:
        return ""
    try:
        found = json.loads(out.stdout)
    except ValueError:
        return ""
    if isinstance(found, list):
        for item in found:
            if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                return str(item["url"])
    return ""


def _gh(argv: list[str], stdin: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GH_TIMEOUT_S,
            check=False,
            env={**os.environ, "GH_PROMPT_DISABLED": "1", "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"timed out after {GH_TIMEOUT_S:g}s") from exc
