"""No async generator in the core suspends inside a cancel scope or a task group.

anyio's cancellation docs mark it as broken: a `yield` there hands control to the
consumer while the scope is still entered, so a cancellation meant for the generator
lands in its consumer (and `aclose()` meets a GeneratorExit wrapped in a group). Agents
are producer tasks instead (`Agent.run(request, send)`). `@asynccontextmanager`
functions are exempt: they yield once, to the block of the same task.

ruff's ASYNC119 (selected in pyproject.toml) flags a yield inside any context manager
of an async generator; this test also names `with` blocks of anyio scopes.
"""

from __future__ import annotations

import ast
import re
import textwrap

from helpers import REPO

CORE = REPO / "supervisor"
SCOPES = re.compile(r"CancelScope|move_on_|fail_after|create_task_group")
"""A `with` block that opens one of these is a cancel scope (a task group has one)."""


def _is_context_manager(fn: ast.AsyncFunctionDef) -> bool:
    return any(ast.unparse(d).endswith("asynccontextmanager") for d in fn.decorator_list)


def _yields_in_scopes(fn: ast.AsyncFunctionDef) -> list[tuple[int, str]]:
    """(line, enclosing block) of each `yield` of `fn` inside an `async with`, or a
    `with` opening an anyio scope (nested functions are their own business)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, scope: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            inner = scope
            if isinstance(child, ast.AsyncWith):
                inner = ast.unparse(child.items[0].context_expr)
            elif isinstance(child, ast.With):
                opened = [ast.unparse(item.context_expr) for item in child.items]
                inner = next((o for o in opened if SCOPES.search(o)), scope)
            if isinstance(child, ast.Yield | ast.YieldFrom) and scope is not None:
                found.append((child.lineno, scope))
            visit(child, inner)

    visit(fn, None)
    return found


def offenders(source: str, name: str = "<source>") -> list[str]:
    """`file:line: function yields inside BLOCK` for every async generator of `source`
    that yields inside an `async with` or an anyio cancel scope."""
    problems = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.AsyncFunctionDef) and not _is_context_manager(fn):
            for line, block in _yields_in_scopes(fn):
                problems.append(f"{name}:{line}: {fn.name} yields inside `{block}`")
    return problems


def test_no_async_generator_in_the_core_yields_inside_a_scope() -> None:
    problems = []
    for path in sorted(CORE.rglob("*.py")):
        problems += offenders(path.read_text(encoding="utf-8"), str(path.relative_to(CORE)))
    assert problems == []


def test_the_scan_finds_what_it_looks_for() -> None:
    source = textwrap.dedent("""\
        import contextlib
        import anyio

        async def in_task_group():
            async with anyio.create_task_group() as tg:
                yield 1

        async def in_timeout():
            with anyio.move_on_after(1):
                for i in range(3):
                    yield i

        async def in_a_nested_scope():
            with open("f") as fh, anyio.CancelScope():
                if fh:
                    yield 2

        async def fine():
            with open("f"):
                yield 3
            async with anyio.create_task_group() as tg:
                tg.start_soon(fine)
            yield 4

        @contextlib.asynccontextmanager
        async def context_manager():
            async with anyio.create_task_group():
                yield 5
    """)
    assert offenders(source) == [
        "<source>:6: in_task_group yields inside `anyio.create_task_group()`",
        "<source>:11: in_timeout yields inside `anyio.move_on_after(1)`",
        "<source>:16: in_a_nested_scope yields inside `anyio.CancelScope()`",
    ]
