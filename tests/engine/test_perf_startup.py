"""`run` starts without modules it does not use (issue 12: start-up is a third of a short
run's CPU, imports most of it). Untimed: the test lists what a real `run --json` of one
command agent imported, and checks that none of the modules only other paths need is
among them (each costs a few ms of CPU at every start)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import PY, cli_env, loop, supervisor_table, table, write_config

NOT_ON_THE_RUN_PATH = (
    "psutil",  # a kill, a scan that finds something, or a platform without /proc
    "ctypes.util",  # find_library("c") runs `ldconfig -p` in a child
    "supervisor.journal.reader",  # status and history
    "supervisor.journal.settle",  # --resume
    "supervisor.journal.resume",
    "statistics",  # the stuck detector's medians, once it has three figures
    "importlib.resources",  # `init`'s starter loops.toml
    "uuid",  # (and platform): run ids are os.urandom's
    "anthropic",  # API loops only
    "textual",
    "supervisor.cli.remote",  # serve, attach, ctl: their arguments are in cli.subcommands
    "supervisor.cli.land",
    "supervisor.cli.diff",
    "supervisor.cli.fork",
    "supervisor.cli.notify",  # `notify --test` (the run's own notifier is not this)
    "supervisor.control",  # the control client, protocol and ops (~8 ms with the above)
    "tempfile",  # (and random): a check's fingerprint, $prompt_file, a checkpoint, diff
    "cronsim",  # cron schedules only
    "difflib",  # "did you mean" in a config error; the stuck detector's second output
)
NO_REGEX_AT_IMPORT = ("supervisor.fingerprint", "supervisor.testcounts")
"""Modules whose ~30 regexes only a check's output needs (compiled on first use)."""

COMPILES = (
    "import json, re, sys\n"
    "callers = []\n"
    "compile = re.compile\n"
    "def recording(pattern, flags=0):\n"
    "    callers.append(sys._getframe(1).f_globals.get('__name__'))\n"
    "    return compile(pattern, flags)\n"
    "re.compile = recording\n"
    "import supervisor.cli.main\n"
    "print(json.dumps(callers))\n"
)
WRAPPER = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
    "sys.argv = ['loopvisor', *sys.argv[1:]]\n"
    "runpy.run_module('supervisor', run_name='__main__', alter_sys=True)\n"
)


def test_run_json_imports_only_what_it_uses(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        supervisor_table(),
        table("agents.echo", kind="command", command=["sh", "-c", "echo DONE"]),
        loop("one", "echo", max_iterations=1, done_marker="DONE"),
    )
    proc = subprocess.run(
        [PY, "-c", WRAPPER, "run", "loops.toml", "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "supervisor.runtime" in imported
    assert [m for m in NOT_ON_THE_RUN_PATH if m in imported] == []


def test_importing_the_command_line_compiles_no_regex_of_check_output() -> None:
    proc = subprocess.run(
        [PY, "-c", COMPILES],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    callers = json.loads(proc.stdout)
    assert "supervisor.textsafe" in callers  # the recording saw loopvisor's own compiles
    assert [c for c in callers if c in NO_REGEX_AT_IMPORT] == []
