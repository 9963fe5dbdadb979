"""What every benchmark script shares: measuring a child, the machine, the JSON it prints.

A benchmark measures loopvisor (or a baseline) as a *child process* so that the
figure is that process's own CPU (RUSAGE_SELF at exit, children excluded: agents,
checks and `sleep` do not count), its peak RSS and its wall time. `measure` runs
`python -c WRAPPER MODULE_OR_SCRIPT ARGS...`; the wrapper registers an atexit hook
that writes the rusage to `$BENCH_RUSAGE`, then runs the module in-process, so the
measured process *is* the supervisor (its PID, its /proc/PID/status).

Every script prints one JSON object (`emit`): `benchmark`, `machine` (date, CPUs,
load average before and after, Python, git commit), `metrics` (a list of `name`,
`value`, `unit` and, where compared, `baseline` and `ratio`) and `details`.

Scripts are run as files (`python benchmarks/NAME.py`), so this module is imported
as `_common` (the script's folder is sys.path[0]).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _bytecode_as_installed() -> None:
    """Measure startup as a user's machine has it: bytecode compiled once and cached.
    A shell with PYTHONDONTWRITEBYTECODE=1 (some sandboxes and CI images) would make
    every child compile ~60 modules from source, ~0.09 s of CPU that no user pays."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    import compileall

    for package in ("supervisor", "tui"):
        compileall.compile_dir(ROOT / package, quiet=1)


_bytecode_as_installed()
RESULTS = Path(__file__).resolve().parent / "results"

WRAPPER = (
    "import atexit, json, os, resource, runpy, sys\n"
    "def _report():\n"
    "    ru = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    with open(os.environ['BENCH_RUSAGE'], 'w') as fh:\n"
    "        json.dump({'cpu_s': ru.ru_utime + ru.ru_stime, 'user_s': ru.ru_utime,\n"
    "                   'sys_s': ru.ru_stime, 'maxrss_kb': ru.ru_maxrss}, fh)\n"
    "atexit.register(_report)\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py')"
    " else runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)

LOOPVISOR = ["supervisor"]
"""`python -m supervisor` as the wrapper runs it: the same code as the `loopvisor` script."""


class BenchError(SystemExit):
    """A run that did not produce a measurement: the message says which and why."""


def _usage_of(report: Path, argv: Sequence[str], code: int, stderr: str) -> dict[str, Any]:
    if not report.exists():
        raise BenchError(f"{' '.join(argv[:3])} failed (exit {code}): {stderr[-2000:]}")
    usage: dict[str, Any] = json.loads(report.read_text())
    report.unlink()
    return usage


def measure(
    argv: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
    timeout: float = 900,
    ok_codes: Sequence[int] = (0, 1, 4),
) -> dict[str, Any]:
    """Run `argv` under the rusage wrapper: wall, its own CPU, peak RSS, exit code.

    With `stdout`, the child's stdout goes to that file and `stdout_lines` counts it
    (for `run --json`: events). An exit code outside `ok_codes` is a failed benchmark.
    """
    report = cwd / f"rusage-{time.monotonic_ns()}.json"
    full_env = {**os.environ, **(env or {}), "BENCH_RUSAGE": str(report)}
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", WRAPPER, *argv],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=timeout,
        )
    finally:
        if not isinstance(out, int):  # a file we opened, not subprocess.DEVNULL
            out.close()
    wall = time.perf_counter() - started
    usage = _usage_of(report, argv, done.returncode, done.stderr)
    if done.returncode not in ok_codes:
        raise BenchError(f"{' '.join(argv[:3])} exited {done.returncode}: {done.stderr[-2000:]}")
    result = {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage["cpu_s"], 3),
        "user_s": round(usage["user_s"], 3),
        "sys_s": round(usage["sys_s"], 3),
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "exit_code": done.returncode,
    }
    if stdout:
        with open(stdout, "rb") as fh:
            result["stdout_lines"] = sum(1 for _ in fh)
    return result


class Running:
    """A wrapped child left running (for RSS samples or a kill -9); `stop` ends it."""

    def __init__(self, argv: Sequence[str], cwd: Path, stdout: Path, env: dict[str, str]) -> None:
        self.report = cwd / f"rusage-{time.monotonic_ns()}.json"
        self.stdout_path = stdout
        self._out = open(stdout, "wb")  # noqa: SIM115 (closed in stop)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, *argv],
            cwd=cwd,
            env={**os.environ, **env, "BENCH_RUSAGE": str(self.report)},
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.DEVNULL,
        )

    def rss_kb(self) -> int:
        """The supervisor's resident set now (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError("no VmRSS in /proc status")

    def cpu_s(self) -> float:
        """The supervisor's own CPU so far (utime + stime from /proc/PID/stat)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def json_lines(self) -> list[dict[str, Any]]:
        """The complete JSON lines written so far (a partial last line is skipped)."""
        text = self.stdout_path.read_bytes().decode("utf-8", "replace")
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll `predicate` until true; returns seconds since start. A dead child fails."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise BenchError(f"the supervisor exited ({self.proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.05)
        return time.perf_counter() - self.started

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._out.close()
        return code


@contextlib.contextmanager
def bystanders(count: int) -> Iterator[None]:
    """`count` sleeping processes that are none of the run's business, as on a busy
    dev box: metering that scans all of /proc per loop pays for each of them.
    All are killed and reaped on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, start_new_session=True)
            )
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 4)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs."""
    return float(statistics.linear_regression(xs, ys).slope)


def metric(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """One figure; with a baseline, `ratio` = value / baseline."""
    out: dict[str, Any] = {"name": name, "value": round(value, 4), "unit": unit}
    if baseline is not None:
        out["baseline"] = round(baseline, 4)
        out["ratio"] = round(value / baseline, 3) if baseline > 0 else None
    if target:
        out["target"] = target
    return out


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def machine() -> dict[str, Any]:
    """Where and when: the figures mean little without the load they were taken under."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git_commit(),
    }


def emit(
    benchmark: str,
    started: dict[str, Any],
    metrics: list[dict[str, Any]],
    details: Any,
    argv: Sequence[str] | None = None,
    save: bool = True,
) -> None:
    """Print the one JSON object; with `save` (a script's default plan, full or
    --quick), also keep it in benchmarks/results/BENCHMARK[-quick].json."""
    args = list(sys.argv[1:] if argv is None else argv)
    doc = {
        "benchmark": benchmark,
        "command": " ".join(["python", f"benchmarks/{benchmark}.py", *args]),
        "machine": {**started, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "metrics": metrics,
        "details": details,
    }
    text = json.dumps(doc, indent=2)
    if save:
        RESULTS.mkdir(exist_ok=True)
        suffix = "-quick" if "--quick" in args else ""
        (RESULTS / f"{benchmark}{suffix}.json").write_text(text + "\n")
    print(text)
