"""Secrets never leave their place (issue 10, item 1).

A fake provider key sits in the supervisor's environment. Agents, checks and tools
that print `env`, a file holding the key, or a model reply that echoes it must not
get it into the journal (the SQLite file bytes, WAL included), `run --json`,
`history --iteration`, or the next request body; streamed deltas that split the key
must not either. Everything runs for real: the CLI as a subprocess, python agents,
shell checks, the fake Anthropic API on 127.0.0.1 and a fake `claude` CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, text, tool_use
from helpers import PY, cli_env, command_agent, loop, table, write_config

from supervisor.childenv import base_env, child_env
from supervisor.config._schema import ConfigError
from supervisor.config.load import load_config
from supervisor.redact import Redactor, StreamRedactor

PROMPT = "Iteration $iteration.\nChecks said:\n$check_output\nYou said:\n$last_output"


@pytest.fixture
def key() -> str:
    """A fresh fake provider key: a hit anywhere is this test's leak, nothing else's."""
    return f"sk-ant-api03-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def supervisor_env(key: str, **extra: str) -> dict[str, str]:
    env = cli_env(ANTHROPIC_API_KEY=key, **extra)
    env.pop("ANTHROPIC_BASE_URL", None)
    return env


def run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "supervisor", *map(str, args)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )


def journal_bytes(state: Path) -> bytes:
    """The journal as stored: the database, its WAL and shared memory, raw bytes."""
    files = sorted(state.glob("journal.sqlite3*"))
    assert files, f"no journal in {state}"
    return b"".join(f.read_bytes() for f in files)


def assert_nowhere(key: str, *texts: str | bytes) -> None:
    for where in texts:
        data = where.encode() if isinstance(where, str) else where
        assert key.encode() not in data
        assert key[-24:].encode() not in data  # not even its tail


# -- 1. command agent and check print env and a file holding the key -----------------
ENV_DUMP = (
    "import json, os, sys; json.dump(sorted(os.environ), open('agent-env.json', 'w')); "
    "print('\\n'.join(f'{k}={v}' for k, v in os.environ.items())); "
    "print('file says', open('leak.txt').read())"
)


def test_command_agent_and_check_printing_env_and_the_key_leak_nothing(
    tmp_path: Path, key: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "leak.txt").write_text(f"ANTHROPIC_API_KEY={key}\n")
    config = write_config(
        tmp_path,
        command_agent("cmd", ENV_DUMP),
        loop(
            "leaky",
            "cmd",
            prompt=PROMPT,
            workspace="ws",
            max_iterations=2,
            checks=[{"name": "env", "run": "env; cat leak.txt; exit 1"}],
        ),
    )
    env = supervisor_env(key)
    done = run("run", config, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    history = run("history", "leaky", "--iteration", "2", "--config", config, cwd=tmp_path, env=env)
    assert history.returncode == 0, history.stderr
    assert "Checks said" in history.stdout  # the prompt of iteration 2 is there

    printed = run(
        "run", config, "--headless", "--state-dir", tmp_path / "s2", cwd=tmp_path, env=env
    )
    assert printed.returncode == 1, printed.stderr

    assert_nowhere(key, done.stdout, done.stderr, history.stdout, history.stderr)
    assert_nowhere(key, printed.stdout, printed.stderr)
    assert_nowhere(key, journal_bytes(tmp_path / ".loopvisor"))
    # The text did flow (the test would pass vacuously otherwise), redacted:
    assert "[REDACTED:ANTHROPIC_API_KEY]" in done.stdout
    assert "[REDACTED:ANTHROPIC_API_KEY]" in printed.stdout
    assert "[REDACTED:ANTHROPIC_API_KEY]" in history.stdout
    names = json.loads((ws / "agent-env.json").read_text())
    assert "ANTHROPIC_API_KEY" not in names
    assert {"PATH", "HOME", "LOOPVISOR_LOOP", "LOOPVISOR_STATE_DIR"} <= set(names)


# -- 2. a model that echoes the key, and a `run` tool that prints env ------------------
def test_model_echoing_the_key_reaches_no_request_journal_or_history(
    tmp_path: Path, key: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "leak.txt").write_text(f"key: {key}\n")
    replies = [
        tool_use("run", {"command": "env; cat leak.txt"}, preface="Looking around."),
        text(f"Found it: {key} (and again:{key})."),
        text("Finished. ALL DONE"),
    ]
    with FakeAnthropic(replies) as server:
        config = write_config(
            tmp_path,
            table(
                "agents.api",
                kind="anthropic",
                model="claude-haiku-4-5",
                base_url=server.base_url,
                tools=["run"],
                max_tokens=300,
            ),
            loop(
                "echo",
                "api",
                prompt=PROMPT,
                workspace="ws",
                context="continue",
                max_iterations=2,
                done_marker="ALL DONE",
            ),
        )
        env = supervisor_env(key)
        done = run("run", config, "--json", cwd=tmp_path, env=env)
        bodies = [json.dumps(r.body) for r in server.message_requests()]
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    assert len(bodies) == 3
    history = run("history", "echo", "--iteration", "2", "--config", config, cwd=tmp_path, env=env)
    assert history.returncode == 0, history.stderr

    assert_nowhere(key, *bodies, done.stdout, done.stderr, history.stdout)
    assert_nowhere(key, journal_bytes(tmp_path / ".loopvisor"))
    # The second request carries the echo (conversation and $last_output), redacted:
    assert bodies[2].count("[REDACTED:ANTHROPIC_API_KEY]") >= 2
    assert "[REDACTED:ANTHROPIC_API_KEY]" in history.stdout


# -- 3. a claude-code agent streams the key split across two deltas -------------------
FAKE_CLAUDE = """#!{python}
import json, os, sys
key = open(os.environ["KEY_FILE"]).read()
json.dump(sorted(os.environ), open(os.environ["PROBE"], "w"))
head, tail = "Your key is " + key[:20], key[20:] + " - keep it safe."
sid = "5e551011-0000-4000-8000-000000000001"
def out(obj):
    obj["session_id"] = sid
    print(json.dumps(obj), flush=True)
def delta(s):
    out({{"type": "stream_event", "event": {{"type": "content_block_delta", "index": 0,
        "delta": {{"type": "text_delta", "text": s}}}}}})
usage = {{"input_tokens": 10, "output_tokens": 5}}
out({{"type": "system", "subtype": "init", "model": "claude-sonnet-4-5", "tools": []}})
out({{"type": "stream_event", "event": {{"type": "message_start", "message": {{
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [], "usage": usage}}}}}})
out({{"type": "stream_event", "event": {{"type": "content_block_start", "index": 0,
    "content_block": {{"type": "text", "text": ""}}}}}})
delta(head)
delta(tail)
out({{"type": "assistant", "message": {{"id": "msg_1", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5", "content": [{{"type": "text", "text": head + tail}}],
    "usage": usage}}}})
out({{"type": "result", "subtype": "success", "is_error": False, "result": head + tail,
    "total_cost_usd": 0.0001, "usage": usage, "num_turns": 1}})
"""


def test_key_split_across_streamed_deltas_is_still_redacted(tmp_path: Path, key: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "key.txt").write_text(key)
    probe = tmp_path / "claude-env.json"
    cli = tmp_path / "fake-claude"
    cli.write_text(FAKE_CLAUDE.format(python=sys.executable))
    cli.chmod(0o755)
    config = write_config(
        tmp_path,
        table(
            "agents.cc",
            kind="claude-code",
            command=str(cli),
            env={"KEY_FILE": str(tmp_path / "key.txt"), "PROBE": str(probe)},
        ),
        loop("split", "cc", workspace="ws", max_iterations=1, done_marker="keep it safe"),
    )
    done = run("run", config, "--json", cwd=tmp_path, env=supervisor_env(key))
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    assert_nowhere(key, done.stdout, done.stderr, journal_bytes(tmp_path / ".loopvisor"))
    assert "Your key is [REDACTED:ANTHROPIC_API_KEY] - keep it safe." in "".join(
        e.get("text", "") for e in map(json.loads, done.stdout.splitlines())
    )
    assert "ANTHROPIC_API_KEY" in json.loads(probe.read_text())  # claude-code needs its key


@pytest.mark.parametrize("secret", ["sk-ant-0123456789abcdef", "pass phrase with spaces"])
def test_stream_redactor_catches_a_secret_split_at_every_position(secret: str) -> None:
    redactor = Redactor({secret: "SECRET_KEY"})
    text_ = f"before {secret} after"
    for cut in range(1, len(text_)):
        for second_cut in (cut, min(len(text_), cut + 3)):
            out: list[str] = []

            def emit(text: str, stream: str, out: list[str] = out) -> None:
                out.append(text)

            stream = StreamRedactor(redactor, emit)
            for part in (text_[:cut], text_[cut:second_cut], text_[second_cut:]):
                stream.add(part, "assistant")
            stream.flush()
            assert "".join(out) == "before [REDACTED:SECRET_KEY] after", (cut, second_cut)


# -- 4. the environment: allow-list, pass_env, env, provider keys ----------------------
CHECK_ENV = "import json, os; json.dump(dict(os.environ), open(os.environ['OUT'], 'w'))"


GIVEN = {"OUT", "FROM_CONFIG", "ANTHROPIC_API_KEY", "BUILD_MODE"}


def test_checks_and_agents_get_the_allow_list_plus_what_they_name(tmp_path: Path, key: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    config = write_config(
        tmp_path,
        command_agent(
            "cmd",
            CHECK_ENV,
            env={"OUT": str(tmp_path / "agent.json"), "FROM_CONFIG": "yes"},
            pass_env=["ANTHROPIC_API_KEY"],
        ),
        loop(
            "envs",
            "cmd",
            workspace="ws",
            max_iterations=1,
            checks=[
                {
                    "run": [PY, "-c", CHECK_ENV],
                    "env": {"OUT": str(tmp_path / "check.json")},
                    "pass_env": ["BUILD_*", "NOT_SET_ANYWHERE"],
                }
            ],
        ),
    )
    env = supervisor_env(key, BUILD_MODE="fast", MY_SERVICE_TOKEN="t0ken-value-123", LC_ALL="C")
    done = run("run", config, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    agent = json.loads((tmp_path / "agent.json").read_text())
    check = json.loads((tmp_path / "check.json").read_text())
    assert agent["ANTHROPIC_API_KEY"] == key  # named in pass_env
    assert agent["FROM_CONFIG"] == "yes"
    assert "ANTHROPIC_API_KEY" not in check
    assert check["BUILD_MODE"] == "fast"
    assert "NOT_SET_ANYWHERE" not in check
    for seen in (agent, check):
        assert "MY_SERVICE_TOKEN" not in seen
        assert seen["LC_ALL"] == "C"
        assert seen["PATH"] == env["PATH"]
        assert seen["LOOPVISOR_LOOP"] == "envs"
        inherited = {k for k in seen if not k.startswith("LOOPVISOR_")} - GIVEN
        assert inherited <= set(base_env(env))  # nothing else of the supervisor's


def test_run_tool_environment_has_no_provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-never-in-a-tool")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_never_in_a_tool")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = child_env({"LOOPVISOR_LOOP": "x"})
    assert env["LANG"] == "C.UTF-8"
    assert env["LOOPVISOR_LOOP"] == "x"
    assert "ANTHROPIC_API_KEY" not in env
    assert "GITHUB_TOKEN" not in env


# -- 5. [redact] patterns and secret-looking variables ---------------------------------
def test_redact_patterns_and_secret_named_variables(tmp_path: Path, key: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "token.txt").write_text("tok_abcdefghijkl1234")
    config = write_config(
        tmp_path,
        table("redact", patterns=["tok_[A-Za-z0-9]{12,}"]),
        command_agent("cmd", "print('done')"),
        loop(
            "pat",
            "cmd",
            workspace="ws",
            max_iterations=1,
            checks=[
                {
                    "run": 'echo "$(cat token.txt) $DB_PASSWORD short=$DEBUG_KEY $API_TOKEN"'
                    "; exit 1",
                    "pass_env": ["DB_PASSWORD", "DEBUG_KEY"],
                    "env": {"API_TOKEN": "from-the-config-0123"},
                }
            ],
        ),
    )
    env = supervisor_env(key, DB_PASSWORD="hunter2-hunter2", DEBUG_KEY="1")
    done = run("run", config, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    journal = journal_bytes(tmp_path / ".loopvisor")
    # ...and a secret written into loops.toml stays there: not copied into the journal.
    for secret in ("tok_abcdefghijkl1234", "hunter2-hunter2", "from-the-config-0123"):
        assert_nowhere(secret, done.stdout, journal)
    assert "[REDACTED:pattern] [REDACTED:DB_PASSWORD] short=1 [REDACTED:API_TOKEN]" in done.stdout


def test_bad_redact_and_env_keys_are_config_errors_with_positions(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        table("redact", patterns=["ok-[a-z]+", "([unclosed", "x*"]),
        command_agent("cmd", "print(1)", env={"LOOPVISOR_LOOP": "mine"}, pass_env=["BAD NAME"]),
        loop("l", "cmd", checks=[{"run": "true", "env": {"A": "x\u0000y"}, "pass_env": [3]}]),
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    messages = [(i.line, i.col, i.message) for i in caught.value.issues]
    text_ = "\n".join(str(i) for i in caught.value.issues)
    assert "redact.patterns[1]: invalid regular expression" in text_
    assert "redact.patterns[2]: matches the empty string" in text_
    assert "LOOPVISOR_* is set by loopvisor" in text_
    assert 'pass_env[0]: "BAD NAME" is not a variable name' in text_
    assert "checks[0].env: must not contain a null character" in text_
    assert "checks[0].pass_env[0]: expected a string, got integer 3" in text_
    assert all(line > 0 and col > 0 for line, col, _ in messages)
    lines = config.read_text().splitlines()
    bad_regex = next(i for i in caught.value.issues if "patterns[1]" in i.message)
    assert "[unclosed" in lines[bad_regex.line - 1]


def test_which_variables_count_as_secrets() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-0123456789",
        "github_token": "ghp_abcdefghij",
        "DB_Password": "correct horse",
        "DEBUG_KEY": "1",  # too short: "1" must stay "1" everywhere
        "PATH": "/usr/bin:/bin",  # not secret-looking
        "LONGER_SECRET": "sk-ant-0123456789-and-more",
    }
    r = Redactor.from_environment(environ=environ)
    out = r.text(
        "sk-ant-0123456789-and-more / sk-ant-0123456789 / ghp_abcdefghij / correct horse"
        " / 1 / /usr/bin:/bin"
    )
    assert out == (
        "[REDACTED:LONGER_SECRET] / [REDACTED:ANTHROPIC_API_KEY] / [REDACTED:github_token]"
        " / [REDACTED:DB_Password] / 1 / /usr/bin:/bin"
    )
    nested = {"a": ["x sk-ant-0123456789", ("correct horse",)], "n": 3}
    assert r.value(nested) == {
        "a": ["x [REDACTED:ANTHROPIC_API_KEY]", ("[REDACTED:DB_Password]",)],
        "n": 3,
    }
    assert Redactor.from_environment(environ={"PATH": "/bin"}).active is False
