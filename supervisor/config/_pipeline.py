"""Pipelines: `after = ["lint-fix"]` (start once those loops ended), `on_failure`, and a
worktree `base = "loop:lint-fix"` (start from that loop's branch as it ended).

Checked once every loop is read, since a name may point at a later loop: an unknown
name is an error at its own array element, a cycle at the `after` of the loop that
closes it; `base = "loop:X"` implies `after` X and needs X to be a worktree loop. The
base is rewritten to X's branch name, which exists (with X's work on it) when the
downstream worktree is made at X's end (`pipeline.py`).
"""

from __future__ import annotations

from dataclasses import replace

from supervisor.config._schema import Table, did_you_mean
from supervisor.spec import LoopSpec


def read_after(t: Table) -> tuple[str, ...]:
    return t.strings("after", (), nonempty=True)


def check_pipelines(loops: list[tuple[Table, LoopSpec]]) -> list[LoopSpec]:
    """The loops with `after` completed by their `base = "loop:X"`; errors recorded."""
    by_name = {spec.name: spec for _, spec in loops}
    done: list[LoopSpec] = []
    for t, spec in loops:
        after = list(spec.after)
        for index, name in enumerate(spec.after):
            if name == spec.name:
                t.issues.error((*t.at("after"), index), f'after[{index}]: "{name}" is this loop')
            elif name not in by_name:
                hint = did_you_mean(name, by_name)
                t.issues.error(
                    (*t.at("after"), index), f'after[{index}]: unknown loop "{name}"{hint}'
                )
        wt = spec.worktree
        if wt is not None and wt.after_loop is not None:
            ws = t.table("workspace")
            where = ws.at("base") if ws is not None else t.at("workspace")
            upstream = by_name.get(wt.after_loop)
            if upstream is None:
                hint = did_you_mean(wt.after_loop, by_name)
                t.issues.error(where, f'workspace.base: unknown loop "{wt.after_loop}"{hint}')
            elif upstream.worktree is None:
                t.issues.error(
                    where,
                    f'workspace.base: loop "{wt.after_loop}" has no git worktree, so no branch'
                    " to start from",
                )
            elif upstream.name == spec.name:
                t.issues.error(where, "workspace.base: a loop cannot start from its own branch")
            else:
                branch = upstream.worktree.branch.replace("{loop}", upstream.name)
                spec = replace(spec, worktree=replace(wt, base=branch))
                if upstream.name not in after:
                    after.append(upstream.name)
        done.append(replace(spec, after=tuple(after)))
    _check_cycles(loops, {spec.name: spec.after for spec in done})
    return done


def _check_cycles(loops: list[tuple[Table, LoopSpec]], after: dict[str, tuple[str, ...]]) -> None:
    """A cycle of `after` would wait forever: each one reported once, at the `after` of
    the loop whose walk found it."""
    tables = {spec.name: t for t, spec in loops}
    state: dict[str, int] = {}  # 1: being walked, 2: done
    reported: set[frozenset[str]] = set()

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for upstream in after.get(name, ()):
            if upstream not in after:
                continue
            if state.get(upstream) == 1:
                cycle = [*path[path.index(upstream) :], upstream]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    t = tables[name]
                    t.error("after", "a cycle never starts: " + " -> ".join(cycle))
            elif state.get(upstream) is None:
                walk(upstream, [*path, upstream])
        state[name] = 2

    for name in after:
        if state.get(name) is None:
            walk(name, [name])
