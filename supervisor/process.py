"""Child processes in their own process group: stream lines, meter CPU, kill the tree.

Every agent CLI, check and tool command goes through `GroupProcess`, so that stop,
timeout and shutdown kill the whole group, and CPU time of the whole tree is metered
for the budget by the supervisor's one sampler (`cpumeter`). Its environment is
`childenv.child_env`: an allow-list plus what the caller adds, never all of ours.
Each group is tagged (`reaper.PROC_ENV`), so that when it ends every process it
started is killed too, even one that left the group with `setsid` and was orphaned
(`reaper`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor import childwatch, cpumeter, reaper, sweep
from supervisor.cgroup import GroupCgroup
from supervisor.childenv import child_env
from supervisor.textsafe import stream_decoder

if TYPE_CHECKING:
    import psutil

KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL for a group being stopped."""
DRAIN_GRACE_S = 0.5
"""After the main process exits, how long to wait for output still in the pipes."""
PUMP_BATCHES = 64
"""Chunks (one pipe read each, at most ~64 KiB + `max_line`) buffered per child: what
a child can make us hold while its reader is busy."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """The whole lines one pipe read completed, decoded at once: what a child prints
    costs one object per read, not one per line."""

    stream: str
    """"stdout" or "stderr"."""
    text: str
    """One or more lines, each ending in a newline (CRs before it dropped); an
    unterminated last line is ended with one. Or, for a line longer than `max_line`, a
    piece of it without a newline: the line goes on in the next chunk of the stream,
    so nothing downstream sees a line break the child never printed (which would also
    split a secret in two halves that redaction no longer recognises)."""

    def lines(self) -> list[str]:
        """The lines, without their newlines (for consumers that parse line by line);
        a piece of an over-long line counts as one."""
        return self.text.removesuffix("\n").split("\n")


def _check_executable(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise the OSError exec would raise for `program`, where a shell runs it (the
    cgroup wrapper), so that a missing or non-executable program still fails to
    start, with the same error, instead of becoming a shell's exit 127 or 126."""
    if os.sep in program:
        path = cwd / program
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif not program or shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


class GroupProcess:
    """An async context manager around one child in a new session (= process group).

    Leaving the context kills the group if the child still runs, so cancellation
    of the enclosing scope never leaves a process behind.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        max_line: int = 64 * 1024,
    ) -> None:
        self.argv = list(argv)
        self._max_line = max_line
        self._tg: anyio.abc.TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[Chunk] | None = None
        self.cwd = cwd
        self.env = child_env(env)
        """The allow-listed environment plus `env`, never all of os.environ (`childenv`)."""
        self.tag = reaper.unique_tag(self.env.get(reaper.PROC_ENV))
        """This group's `PROC_ENV`: its leftovers are killed by it when it ends."""
        self.env[reaper.PROC_ENV] = self.tag
        self._stdin = stdin
        self._proc: anyio.abc.Process | None = None
        self._cgroup: GroupCgroup | None = None
        self._meter: cpumeter.CpuMeter | None = None
        self._final_cpu: float | None = None
        self._started = 0.0
        self.killed_by_us = False

    async def __aenter__(self) -> GroupProcess:
        self._cgroup = GroupCgroup.create(self.env.get(reaper.STATE_DIR_ENV))
        try:
            argv = self.argv
            if self._cgroup is not None:
                _check_executable(argv[0] if argv else "", self.cwd, self.env)
                argv = self._cgroup.entering(argv, self.env)
            childwatch.use_pidfds()  # asyncio on 3.11: not a thread per child
            with reaper.spawning() as spawned:
                self._proc = await anyio.open_process(
                    argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=-1 if self._stdin is not None else -3,  # PIPE or DEVNULL
                    start_new_session=True,
                )
                spawned(self._proc.pid)
        except BaseException:
            if self._cgroup is not None:
                self._cgroup.remove()
            raise
        if self._cgroup is not None:
            # Already in it by itself (`entering`); this only helps where the shell's
            # write failed. A child that has already exited cannot be moved (ESRCH),
            # which must not cost the cgroup the processes it started are in.
            self._cgroup.adopt(self._proc.pid)
        self._started = time.monotonic()
        shared = cpumeter.current()
        self._meter = shared if shared is not None else cpumeter.CpuMeter()
        self._meter.add(self._proc.pid, None if self._cgroup is None else self._cgroup.path)
        if (allowed := cpumeter.current_allowance()) is not None:  # the turn's CPU budget
            self._meter.limit(self._proc.pid, allowed.cpu_s, allowed.on_over)
        # The pumps live in a task group owned by this context (not by the `lines()`
        # generator), so a consumer may close `lines()` at any yield without tearing
        # a task group across a suspended generator frame.
        send, self._receive = anyio.create_memory_object_stream[Chunk](PUMP_BATCHES)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if shared is None:  # outside a Supervisor (tests, tools): meter by ourselves
            self._tg.start_soon(self._meter.run)
        with send:
            for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
                if stream is not None:
                    self._tg.start_soon(_pump, stream, name, send.clone(), self._max_line)
        if self._stdin is not None:
            assert self._proc.stdin is not None
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._proc.stdin.send(self._stdin)
            await self._proc.stdin.aclose()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.kill()
                if self._proc is not None:
                    await self._proc.aclose()
                    reaper.spawned_done(self._proc.pid)
                    self._end_metering()  # before the cgroup (and its cpu.stat) goes
                await self._kill_leftovers()
                if self._receive is not None:
                    self._receive.close()
        finally:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                # Not handed `exc`: it belongs to the body and propagates by itself.
                await self._tg.__aexit__(None, None, None)

    async def _kill_leftovers(self) -> None:
        """Whatever the group started and left running, in the group or not.

        With a cgroup, what the cgroup holds (SIGTERM, SIGKILL after the grace; one
        read when it is empty, the usual end), and under a Supervisor the run's
        `sweep.Sweeper` looks for the tag shortly after, for a process that moved
        itself out of the cgroup: no scan of every process's environment per group.
        Without a cgroup (or a sweeper), every process carrying the tag, now.
        """
        sweeper = sweep.current()
        if self._cgroup is not None:
            await self._cgroup.kill_all(KILL_GRACE_S)
            reaper.reap_adopted()
            if sweeper is not None:
                sweeper.add(self.tag)
                return
        if self._proc is not None:
            await reaper.kill_tagged(reaper.has_tag(self.tag), KILL_GRACE_S)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    # -- output --------------------------------------------------------------
    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Yield stdout and stderr chunks as they come (interleaved), until both close."""
        assert self._receive is not None
        try:
            async for chunk in self._receive:
                yield chunk
        except anyio.ClosedResourceError:
            return

    async def wait(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        return code

    # -- CPU -----------------------------------------------------------------
    def sample_cpu(self) -> float:
        """CPU seconds of the whole tree so far: its cgroup's, or the max seen per pid
        of the session, exited children counted through their parent's children_*
        times (`cpumeter`). Re-reads only this group's known processes."""
        if self._final_cpu is not None:
            return self._final_cpu
        if self._proc is None or self._meter is None:
            return 0.0
        return self._meter.sample(self._proc.pid)

    def limit_cpu(self, limit_s: float, on_over: Callable[[float], None]) -> None:
        """Have the sampler call `on_over(cpu_s)` once the group has spent `limit_s`
        CPU seconds (at most `cpumeter.FAST_S` x cores later)."""
        if self._proc is not None and self._meter is not None:
            self._meter.limit(self._proc.pid, limit_s, on_over)

    def _end_metering(self) -> None:
        if self._proc is not None and self._meter is not None and self._final_cpu is None:
            self._final_cpu = self._meter.remove(self._proc.pid)

    # -- stopping ------------------------------------------------------------
    async def kill(self, grace: float = KILL_GRACE_S) -> None:
        """SIGTERM the group and stragglers (its processes that left the group),
        SIGKILL what is left after `grace`."""
        if self._proc is None or self._proc.returncode is not None:
            kill_group(self._proc.pid if self._proc else None, signal.SIGKILL)
            return
        self.killed_by_us = True
        self.sample_cpu()
        stragglers = self._stragglers(self._proc.pid)
        kill_group(self._proc.pid, signal.SIGTERM)
        reaper.signal_all(stragglers, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self._proc.wait()
        kill_group(self._proc.pid, signal.SIGKILL)
        reaper.signal_all(stragglers, signal.SIGKILL)
        with anyio.move_on_after(grace):
            await self._proc.wait()

    def _stragglers(self, leader: int) -> list[psutil.Process]:
        """The group's processes outside its process group (the group itself gets its
        signals once, through killpg): with a cgroup, the others it lists (one read);
        without, its descendants (a walk of its subtree) and whatever carries its tag
        (one scan of /proc)."""
        if self._cgroup is not None:
            pids = self._cgroup.pids()
        else:
            pids = reaper.descendants(leader)
            pids += [p.pid for p, _ in reaper.tagged(reaper.has_tag(self.tag))]
        import psutil  # (a kill only: a run that kills nothing never imports it)

        found: list[psutil.Process] = []
        for pid in dict.fromkeys(pids):
            if reaper.group_of(pid) in (leader, None):
                continue
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
        return found


def kill_group(pgid: int | None, sig: signal.Signals) -> None:
    if pgid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _pump(
    stream: anyio.abc.ByteReceiveStream,
    name: str,
    send: MemoryObjectSendStream[Chunk],
    max_line: int,
) -> None:
    """Turn a pipe into chunks of whole lines, one per read: a child printing millions
    of short lines costs one decode and one send per read, not per line. The line
    still being read is kept as a list of pieces, joined once when it ends, so a
    long line costs O(its length), not a copy of the buffer per read."""
    held: list[bytes] = []
    held_size = 0
    in_line = False  # a piece of an over-long line was sent: the line is still open
    decoder = stream_decoder()  # a character cut by a piece boundary stays whole
    async with send:
        try:
            async for data in stream:
                cut = data.rfind(b"\n") + 1
                if cut:
                    whole = decoder.decode(b"".join((*held, data[:cut])))
                    await send.send(Chunk(name, _drop_cr(whole)))
                    held, held_size, in_line = [], 0, False
                    data = data[cut:]
                if data:
                    held.append(data)
                    held_size += len(data)
                    if held_size > max_line:
                        await send.send(Chunk(name, _drop_cr(decoder.decode(b"".join(held)))))
                        held, held_size, in_line = [], 0, True
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        if held or in_line:  # the end of the output ends its last line
            rest = decoder.decode(b"".join(held), final=True)
            await send.send(Chunk(name, _drop_cr(rest + "\n")))


_CR_BEFORE_NEWLINE = re.compile(r"\r+\n")


def _drop_cr(text: str) -> str:
    """`text` with the CRs before each newline dropped (CRLF output, progress bars)."""
    return _CR_BEFORE_NEWLINE.sub("\n", text) if "\r" in text else text


@dataclass(frozen=True, slots=True)
class CapturedRun:
    exit_code: int | None
    output: str
    """Combined stdout+stderr; when longer than the cap, its tail with a marker."""
    timed_out: bool
    cpu_s: float
    duration_s: float
    truncated: bool


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdin: bytes | None = None,
    max_output: int = 64 * 1024,
) -> CapturedRun:
    """Run to completion (or timeout), capturing output; the group is always reaped."""
    chunks: deque[str] = deque()
    size = 0
    dropped = False
    timed_out = False
    started = time.monotonic()
    drained = anyio.Event()

    async def read(proc: GroupProcess) -> None:
        nonlocal size, dropped
        async for chunk in proc.chunks():
            chunks.append(chunk.text)
            size += len(chunk.text)
            while size > max_output * 2 and len(chunks) > 1:
                size -= len(chunks.popleft())
                dropped = True
        drained.set()

    async with GroupProcess(argv, cwd=cwd, env=env, stdin=stdin) as proc:
        code: int | None = None
        with anyio.move_on_after(timeout) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, proc)
                code = await proc.wait()
                # A background child may keep the pipes open: the command is done when
                # its main process exits; take what output comes promptly, then kill.
                with anyio.move_on_after(DRAIN_GRACE_S):
                    await drained.wait()
                tg.cancel_scope.cancel()
        if scope.cancelled_caught:
            timed_out = True
            await proc.kill()
        cpu = proc.sample_cpu()
    text = "".join(chunks).removesuffix("\n")
    if len(text) > max_output:
        text = text[-max_output:]
        dropped = True
    if dropped:
        text = "[... output truncated ...]\n" + text
    return CapturedRun(
        exit_code=None if timed_out else code,
        output=text,
        timed_out=timed_out,
        cpu_s=cpu,
        duration_s=time.monotonic() - started,
        truncated=dropped,
    )
