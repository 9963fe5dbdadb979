"""Hostile text (issue 10, items 3 and 4), end to end through real processes.

Lone UTF-16 surrogates (`"\\ud800"` in JSON, `\\xff` in argv) must become U+FFFD where
they enter and never take down `serve`, a headless run or a bystander loop. Terminal
escapes an agent prints (OSC 52 clipboard, OSC 0 title, clear screen, cursor query, a
one-byte CSI) must reach stdout shown (`\\x1b`), never raw: in plain headless output,
`history --iteration`, `ctl tail` and `--json`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from daemon import LOOPVISOR, Daemon, kill_daemon, lv, poll, sim_loops_toml, start_daemon
from fake_anthropic import FakeAnthropic, text, tool_use
from helpers import PY, cli_env, command_agent, loop, run_cli, sim_agent, supervisor_table, table
from hypothesis import given
from hypothesis import strategies as st

from supervisor import events as ev
from supervisor.cli.remote import TailPrinter
from supervisor.headless import HeadlessPrinter
from supervisor.textsafe import json_loads, json_text, valid_text

SURROGATE_ESCAPE = "\\ud800"
"""As it travels in JSON: six ASCII characters that decode to a lone surrogate."""
REPLACED = "\ufffd"
HOSTILE = "\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J\x1b[6n\x9b31mred"
"""Clipboard write, title, clear screen, cursor-position query, one-byte CSI."""
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
PRINT_HOSTILE = f"import sys; sys.stdout.write({HOSTILE!r} + chr(10)); print('ALL DONE')"


# -- the rules themselves -------------------------------------------------------------------
def test_json_loads_makes_every_string_valid_keys_too() -> None:
    raw = '{"k\\ud800": ["x\\udfff", {"n": "\\ud800"}], "pair": "\\ud83d\\ude00", "n": 1}'
    assert json_loads(raw) == {
        f"k{REPLACED}": [f"x{REPLACED}", {"n": REPLACED}],
        "pair": "\U0001f600",
        "n": 1,
    }
    assert json_loads(raw.encode()) == json_loads(raw)
    with pytest.raises(json.JSONDecodeError):
        json_loads("{not json")


@given(st.text())
def test_json_text_is_valid_utf8_the_same_value_and_inert_on_a_terminal(text: str) -> None:
    out = json_text({"text": text, "n": 1})
    out.encode("utf-8")
    assert json.loads(out) == {"text": valid_text(text), "n": 1}
    assert not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in BIDI + "\u2028\u2029" for c in out
    )


def hostile_events(text: str) -> list[ev.Event]:
    """One of each event a printer shows, every text field set to `text`."""
    return [
        ev.RunStarted(run_id="r", config=text, loops=("l", text)),
        ev.IterationStarted(loop=text, iteration=1, prompt=text),
        ev.AgentOutput(loop=text, iteration=1, text=text, stream="assistant"),
        ev.AgentOutput(loop=text, iteration=1, text=text + "\n", stream="stdout"),
        ev.ToolCalled(loop=text, iteration=1, tool_id=text, name=text, input={text: text}),
        ev.ToolReturned(loop=text, iteration=1, tool_id=text, output=text),
        ev.LoopStateChanged(loop=text, state="waiting", reason=text),
        ev.Notice(loop=text, level="warning", message=text),
    ]


def printed_by(printer: Any, events: list[ev.Event], out: io.StringIO) -> str:
    for event in events:
        (printer.print_event if isinstance(printer, HeadlessPrinter) else printer.feed)(event)
    return out.getvalue()


def controls(shown: str, allowed: str) -> set[str]:
    return {c for c in shown if (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) and c not in allowed}


@given(st.text())
def test_printers_never_write_a_control_character_or_a_surrogate(text: str) -> None:
    events = hostile_events(text)
    out = io.StringIO()
    shown = printed_by(HeadlessPrinter(stream=out), events, out)
    shown.encode("utf-8")
    assert controls(shown, "\n\t") == set()
    out = io.StringIO()
    shown = printed_by(HeadlessPrinter(json_lines=True, stream=out), events, out)
    shown.encode("utf-8")
    assert controls(shown, "\n") == set()
    lines = shown.splitlines()  # as a consumer would: U+2028 must not split an object
    assert [json.loads(line)["type"] for line in lines] == [e.type for e in events]
    out = io.StringIO()
    shown = printed_by(TailPrinter(text, out), events, out)
    shown.encode("utf-8")
    assert controls(shown, "\n\t") == set()


# -- helpers -----------------------------------------------------------------------------
class RawClient:
    """A control-socket client that sends bytes exactly as given (no JSON encoder)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.hello = json.loads(self.file.readline())

    def request(self, raw: bytes) -> dict[str, Any]:
        self.sock.sendall(raw + b"\n")
        while True:
            line = self.file.readline()
            assert line, "the server closed the connection"
            answer: dict[str, Any] = json.loads(line)
            if "event" not in answer:
                return answer

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def journal_prompts(state: Path, loop_name: str) -> list[str]:
    with sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT prompt FROM iterations WHERE loop = ? AND prompt IS NOT NULL", (loop_name,)
        ).fetchall()
    return [r[0] for r in rows]


def journal_texts(state: Path, loop_name: str) -> str:
    """Every event the journal holds for a loop, as its JSON text."""
    with sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT json FROM events WHERE loop = ?", (loop_name,)).fetchall()
    return "\n".join(json.dumps(json.loads(r[0]), ensure_ascii=False) for r in rows)


def assert_no_raw_controls(out: str) -> None:
    for char in "\x1b\x07\x9b":
        assert char not in out, f"raw {char!r} in the output"


# -- lone surrogates -----------------------------------------------------------------------
def test_surrogate_inject_on_the_socket_keeps_serve_and_every_loop_running(
    daemon: Daemon,
) -> None:
    client = RawClient(daemon.socket)
    try:
        args = '"args":{"loop":"l0","text":"evil ' + SURROGATE_ESCAPE + '"}'
        answer = client.request(b'{"id":1,"op":"inject",' + args.encode() + b"}")
        assert answer == {"id": 1, "ok": True, "result": None}
        # The note reaches l0's next prompt, as U+FFFD, in the journal.
        poll(
            lambda: any(f"evil {REPLACED}" in p for p in journal_prompts(daemon.state, "l0")),
            what="the injected note in a journalled prompt",
        )
        # serve, the bystander and the target itself keep going.
        before = {name: daemon.loop(name)["iteration"] for name in ("l0", "l1")}
        for name, iteration in before.items():

            def moved(name: str = name, iteration: int = iteration) -> bool:
                return bool(daemon.loop(name)["iteration"] > iteration)

            poll(moved, what=f"{name} to keep iterating")
        assert client.request(b'{"id":2,"op":"snapshot","args":{"tail":0}}')["ok"] is True
    finally:
        client.close()
    assert "Traceback" not in daemon.log


def test_surrogate_request_id_is_answered_not_dropped(daemon: Daemon) -> None:
    client = RawClient(daemon.socket)
    try:
        raw = '{"id":"r' + SURROGATE_ESCAPE + '","op":"snapshot","args":{"tail":0}}'
        answer = client.request(raw.encode())
        assert answer["id"] == f"r{REPLACED}"
        assert answer["ok"] is True
        # The same connection still serves.
        assert client.request(b'{"id":3,"op":"snapshot","args":{"tail":0}}')["id"] == 3
    finally:
        client.close()


def ctl_bytes(daemon: Daemon, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`ctl ARGS` with stdin decoded strictly, as under a UTF-8 locale such as en_US.UTF-8
    (C.UTF-8, the test machine's, would hand bad bytes on as surrogates instead)."""
    return subprocess.run(
        [*LOOPVISOR, "ctl", *args, "--state-dir", str(daemon.state)],
        cwd=daemon.cwd,
        env=cli_env(PYTHONIOENCODING="utf-8:strict"),
        input=stdin,
        capture_output=True,
        check=False,
        timeout=30,
    )


def test_ctl_inject_of_undecodable_bytes_is_sent_as_replacement_characters(
    daemon: Daemon,
) -> None:
    by_argv = ctl_bytes(daemon, "inject", "l0", os.fsdecode(b"argv \xff"))
    by_stdin = ctl_bytes(daemon, "inject", "l0", "-", stdin=b"stdin \xfe")
    for r in (by_argv, by_stdin):
        assert b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    for note in (f"argv {REPLACED}", f"stdin {REPLACED}"):

        def journalled(note: str = note) -> bool:
            return any(note in p for p in journal_prompts(daemon.state, "l0"))

        poll(journalled, what=f"{note!r} in a journalled prompt")
    # A prompt file is refused with a clear error, as in loops.toml: nothing is guessed.
    bad = daemon.cwd / "prompt.md"
    bad.write_bytes(b"prompt \xff\n")
    r = ctl_bytes(daemon, "edit", "l0", "--prompt-file", str(bad))
    assert r.returncode == 3
    assert b"Traceback" not in r.stderr
    assert f"cannot read {bad}".encode() in r.stderr


FAKE_CLAUDE = """\
import json, sys
session = "sess-unicode"
def out(obj):
    sys.stdout.write(json.dumps(obj) + "\\n")
    sys.stdout.flush()
usage = {"input_tokens": 10, "output_tokens": 5}
out({"type": "system", "subtype": "init", "session_id": session, "model": "claude-haiku-4-5"})
out({"type": "assistant", "session_id": session, "message": {
    "id": "msg_1", "role": "assistant", "model": "claude-haiku-4-5", "usage": usage,
    "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash\\ud800",
         "input": {"command": "echo \\ud800"}},
        {"type": "text", "text": "evil \\ud800 ALL DONE"}]}})
out({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
     "result": "evil \\ud800 ALL DONE", "session_id": session, "usage": usage,
     "total_cost_usd": 0.0001})
"""


def bystander_parts() -> list[str]:
    return [
        sim_agent("sim", reply_tokens=10, converge_after=3, done_text="DONE"),
        loop("bystander", "sim", max_iterations=5, done_marker="DONE"),
    ]


def test_surrogates_in_claude_code_stream_json_do_not_end_the_run(tmp_path: Path) -> None:
    fake = tmp_path / "claude"
    fake.write_text(f"#!{PY}\n{FAKE_CLAUDE}", encoding="utf-8")
    fake.chmod(0o755)
    (tmp_path / "loops.toml").write_text(
        "\n".join(
            [
                supervisor_table(2),
                table("agents.cc", kind="claude-code", command=str(fake), timeout="20s"),
                loop("cc", "cc", max_iterations=1, done_marker="ALL DONE"),
                *bystander_parts(),
            ]
        ),
        encoding="utf-8",
    )
    r = run_cli("run", "loops.toml", "--json", "--state-dir", "state", cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    states = {x["name"]: x["state"] for x in summary["loops"]}
    assert states == {"cc": "succeeded", "bystander": "succeeded"}, r.stderr
    journal = journal_texts(tmp_path / "state", "cc")
    assert f"evil {REPLACED} ALL DONE" in journal
    assert f"echo {REPLACED}" in journal


@pytest.mark.timeout(150)
def test_surrogates_streamed_by_the_anthropic_api_do_not_end_the_run(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    script = [
        tool_use("write_file", {"path": "note.txt", "content": "evil \ud800\n"}),
        text("evil \ud800 ALL DONE"),
    ]
    with FakeAnthropic(script) as server:
        (tmp_path / "loops.toml").write_text(
            "\n".join(
                [
                    supervisor_table(2),
                    table(
                        "agents.api",
                        kind="anthropic",
                        model="claude-haiku-4-5",
                        base_url=server.base_url,
                        timeout="5s",
                        tools=["write_file"],
                    ),
                    loop("api", "api", workspace="ws", max_iterations=1, done_marker="ALL DONE"),
                    *bystander_parts(),
                ]
            ),
            encoding="utf-8",
        )
        r = subprocess.run(
            [PY, "-m", "supervisor", "run", "loops.toml", "--json", "--state-dir", "state"],
            cwd=tmp_path,
            env=cli_env(ANTHROPIC_API_KEY="sk-ant-test-unicode"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=100,  # a hang guard: ~7 s at load 4, over 30 s in a loaded CI
            check=False,
        )
    assert "Traceback" not in r.stderr, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    states = {x["name"]: x["state"] for x in summary["loops"]}
    assert states == {"api": "succeeded", "bystander": "succeeded"}, r.stderr
    assert f"evil {REPLACED} ALL DONE" in journal_texts(tmp_path / "state", "api")
    assert (tmp_path / "ws/note.txt").read_text(encoding="utf-8") == f"evil {REPLACED}\n"


def test_a_project_directory_whose_name_is_not_utf8_runs(tmp_path: Path) -> None:
    """Its bytes arrive as lone surrogates in the config path and in `$workspace`."""
    project = tmp_path / os.fsdecode(b"proj\xff")
    project.mkdir()
    read_prompt = "import sys; print(open(sys.argv[1], 'rb').read()); print('ALL DONE')"
    (project / "loops.toml").write_text(
        "\n".join(
            [
                supervisor_table(2),
                command_agent("reader", read_prompt, "$prompt_file"),
                loop(
                    "l", "reader", prompt="in $workspace", max_iterations=1, done_marker="ALL DONE"
                ),
                *bystander_parts(),
            ]
        ),
        encoding="utf-8",
    )
    r = run_cli("run", "loops.toml", "--headless", cwd=project)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert "proj\\xef\\xbf\\xbd" in r.stdout  # the agent read U+FFFD, in UTF-8
    assert run_cli("status", cwd=project).returncode == 0


# -- terminal escapes ----------------------------------------------------------------------
def hostile_config(tmp_path: Path) -> None:
    (tmp_path / "loops.toml").write_text(
        "\n".join(
            [
                supervisor_table(2),
                command_agent("printer", PRINT_HOSTILE, "$prompt"),
                loop("printer", "printer", max_iterations=1, done_marker="ALL DONE"),
            ]
        ),
        encoding="utf-8",
    )


def test_plain_headless_output_and_history_show_escapes_instead_of_obeying_them(
    tmp_path: Path,
) -> None:
    hostile_config(tmp_path)
    r = run_cli("run", "loops.toml", "--headless", "--state-dir", "state", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_raw_controls(r.stdout)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in r.stdout
    assert "\\x9b31mred" in r.stdout

    shown = run_cli("history", "printer", "--iteration", "1", "--state-dir", "state", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert_no_raw_controls(shown.stdout)
    assert "\\x1b]0;pwned\\x07" in shown.stdout


def test_stuck_evidence_from_check_output_prints_safely_in_every_table(tmp_path: Path) -> None:
    """A check's last output line becomes the stuck evidence, hence the loop's reason:
    the summary, `status` and `history LOOP` print it in one-line fields."""
    (tmp_path / "check.py").write_text(
        f"import sys\nprint({HOSTILE!r})\nsys.exit(1)\n", encoding="utf-8"
    )
    (tmp_path / "loops.toml").write_text(
        "\n".join(
            [
                supervisor_table(2),
                command_agent("quiet", "print('ok')", "$prompt"),
                loop(
                    "stuck",
                    "quiet",
                    max_iterations=5,
                    checks=[{"name": "c", "run": [PY, "check.py"]}],
                    stuck={"same_failure": 2},
                    on_stuck="stop",
                ),
            ]
        ),
        encoding="utf-8",
    )
    r = run_cli("run", "loops.toml", "--headless", "--state-dir", "state", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "\\x1b]0;pwned\\x07" in r.stdout.splitlines()[-2]  # the summary's reason
    assert_no_raw_controls(r.stdout)
    for command in (["status"], ["history"], ["history", "stuck"]):
        shown = run_cli(*command, "--state-dir", "state", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert_no_raw_controls(shown.stdout)
    assert "\\x1b]0;pwned\\x07" in shown.stdout


def test_json_output_never_holds_a_raw_control_character(tmp_path: Path) -> None:
    hostile_config(tmp_path)
    r = run_cli("run", "loops.toml", "--json", "--state-dir", "state", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_raw_controls(r.stdout)
    outputs = [json.loads(x) for x in r.stdout.splitlines()]
    text_out = "".join(x.get("text", "") for x in outputs if x["type"] == "output")
    assert HOSTILE in text_out  # JSON-escaped on the wire, intact once decoded

    detail = run_cli(
        "history", "printer", "--iteration", "1", "--json", "--state-dir", "state", cwd=tmp_path
    )
    assert detail.returncode == 0, detail.stderr
    assert_no_raw_controls(detail.stdout)
    assert HOSTILE in json.loads(detail.stdout)["transcript"]


def test_escapes_injected_over_the_socket_reach_serve_log_shown(daemon: Daemon) -> None:
    client = RawClient(daemon.socket)
    try:
        note = json.dumps(HOSTILE)  # JSON-escaped on the wire, as any client sends it
        args = '"args":{"loop":"l0","text":' + note + "}"
        answer = client.request(b'{"id":1,"op":"inject",' + args.encode() + b"}")
        assert answer["ok"] is True
    finally:
        client.close()
    poll(lambda: "ZXZpbA==" in daemon.log, what="the note in serve.log")
    assert_no_raw_controls(daemon.log)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in daemon.log


ESCAPED_FOLDER = "proj\x1b]0;pwned\x07\x1b[2J"
"""A folder name may hold any byte but `/`: a cloned or unpacked project can be named so."""
ESCAPED_FOLDER_SHOWN = "proj\\x1b]0;pwned\\x07\\x1b[2J"


def test_serve_and_ctl_show_paths_named_with_escapes(tmp_path: Path) -> None:
    project = tmp_path / ESCAPED_FOLDER
    project.mkdir()
    (project / "loops.toml").write_text(sim_loops_toml(), encoding="utf-8")
    r = lv("serve", "loops.toml", "--detach", cwd=project, timeout=45)
    pid = int((project / ".loopvisor" / "serve.pid").read_text())
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        shown = lv("ctl", "status", cwd=project)
        assert shown.returncode == 0, shown.stderr
        for out in (r.stdout, r.stderr, shown.stdout, shown.stderr):
            assert_no_raw_controls(out)
        assert ESCAPED_FOLDER_SHOWN in r.stdout
        assert ESCAPED_FOLDER_SHOWN in shown.stdout
    finally:
        kill_daemon(pid)


def test_worktree_lines_show_paths_named_with_escapes(tmp_path: Path) -> None:
    project = tmp_path / ESCAPED_FOLDER
    repo = project / "repo"
    repo.mkdir(parents=True)
    env = {
        **cli_env(),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for argv in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, timeout=30)
    (project / "loops.toml").write_text(
        "\n".join(
            [
                supervisor_table(2),
                sim_agent("sim", reply_tokens=10, converge_after=1, done_text="DONE"),
                loop(
                    "wt",
                    "sim",
                    workspace={"repo": "repo", "worktree": True},
                    max_iterations=2,
                    done_marker="DONE",
                ),
            ]
        ),
        encoding="utf-8",
    )
    r = run_cli("run", "loops.toml", "--headless", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ESCAPED_FOLDER_SHOWN in r.stderr  # "wt: worktree PATH on branch ..."
    cleaned = run_cli("clean", "wt", cwd=project)
    assert cleaned.returncode == 0, cleaned.stderr
    assert ESCAPED_FOLDER_SHOWN in cleaned.stdout
    for out in (r.stdout, r.stderr, cleaned.stdout, cleaned.stderr):
        assert_no_raw_controls(out)


def test_ctl_tail_shows_escapes_instead_of_obeying_them(tmp_path: Path) -> None:
    toml = "\n".join(
        [
            supervisor_table(2),
            command_agent("printer", PRINT_HOSTILE, "$prompt"),
            loop(
                "printer",
                "printer",
                max_iterations=100_000,
                done_marker="NEVER-SAID",
                on_stuck="continue",
            ),
        ]
    )
    d = start_daemon(tmp_path, toml)
    try:
        proc = d.spawn_ctl("tail", "printer", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 15
        while seen.count(b"ALL DONE") < 2 and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=10)
        out = (seen + rest).decode("utf-8")
        assert "ALL DONE" in out, err.decode(errors="replace")
        assert_no_raw_controls(out)
        assert "\\x1b[2J\\x1b[6n" in out
    finally:
        kill_daemon(d.pid)
