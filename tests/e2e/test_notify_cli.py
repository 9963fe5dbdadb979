"""Notifications end to end: the real CLI in a subprocess delivers to a webhook on
127.0.0.1 (JSON, Slack, ntfy) and to a command, for each event kind; a webhook that
hangs delays no loop; a burst is one message; the URL never leaves in clear;
`loopvisor notify --test`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PY,
    cli_env,
    command_agent,
    json_lines,
    loop,
    run_cli,
    sim_agent,
    table,
    write_config,
)
from webhook_support import SECRET_PATH, webhook

ALERT_KEYS = {
    "event",
    "run_id",
    "loop",
    "state",
    "reason",
    "evidence",
    "tokens",
    "usd",
    "host",
    "time",
}
APPEND_STDIN = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"
"""A command channel that appends each message (one JSON line) to the file argv[1]."""


def notify_table(url: str, **keys: object) -> str:
    keys.setdefault("coalesce", 0.2)
    keys.setdefault("retries", 0)
    return table("notify", webhook=url, **keys)


def every_kind_config(tmp_path: Path, url: str, **notify: object) -> Path:
    """A stuck loop (attention), a failing one, one that spends its budget (budget
    warnings, exhausted), then the summary: each whatever order they end in."""
    return write_config(
        tmp_path,
        notify_table(url, **notify),
        sim_agent("ok", rate=0),
        sim_agent("bad", rate=0, behavior="fail"),
        sim_agent("same", rate=0, behavior="stuck"),
        loop(
            "spender",
            "ok",
            done_marker="NEVER",
            max_iterations=60,
            budget={"tokens": 600},
            workspace=".",
        ),
        loop("bad", "bad", done_marker="DONE", budget={"retries": 0}, workspace="."),
        loop("st", "same", done_marker="DONE", workspace="."),
    )


def leaks(tmp_path: Path, *texts: str) -> list[str]:
    """Where the webhook's secret path shows: the given texts, any file under tmp_path."""
    found = [f"text {i}" for i, t in enumerate(texts) if SECRET_PATH in t]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".toml" and SECRET_PATH.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_webhook_and_command_get_every_event_kind_and_the_url_never_leaks(
    tmp_path: Path,
) -> None:
    out = tmp_path / "command.json"
    with webhook() as hook:
        config = every_kind_config(tmp_path, hook.url, command=[PY, "-c", APPEND_STDIN, str(out)])
        result = run_cli("run", config, "--json", cwd=tmp_path)
        docs = hook.documents()
    assert result.returncode == 4, result.stderr  # st waits for a person
    by_kind = {d["event"]: d for d in docs}
    assert set(by_kind) == {"attention", "failed", "exhausted", "budget", "finished"}
    for doc in docs:
        assert set(doc) >= ALERT_KEYS, doc
        assert doc["run_id"] == json_lines(result.stdout)[0]["run_id"]
    assert by_kind["attention"]["loop"] == "st"
    assert by_kind["attention"]["state"] == "stuck"
    assert "identical" in by_kind["attention"]["evidence"]
    assert by_kind["failed"]["loop"] == "bad"
    assert by_kind["failed"]["tokens"] > 0
    assert "loop 'spender' tokens budget" in by_kind["budget"]["text"]
    assert by_kind["exhausted"]["loop"] == "spender"
    summary = by_kind["finished"]["summary"]
    assert summary["exit_code"] == 4
    assert by_kind["finished"]["tokens"] == summary["tokens"] > 600
    assert {r.path for r in hook.requests} == {SECRET_PATH}
    # the command got the same JSON documents on stdin
    notices = [e["message"] for e in json_lines(result.stdout) if e.get("type") == "notice"]
    assert sorted(json.loads(line)["event"] for line in out.read_text().splitlines()) == sorted(
        d["event"] for d in docs
    ), notices  # once in CI the command missed two: what the run said about it
    assert leaks(tmp_path, result.stdout, result.stderr) == []
    assert "[REDACTED:notify.webhook]" in (tmp_path / ".loopvisor" / "journal.sqlite3").read_text(
        errors="replace"
    )


SLOW_APPEND = (
    "import pathlib, sys, time; doc = sys.stdin.read(); started, done, out = sys.argv[1:];"
    " pathlib.Path(started).touch()\n"
    "while not pathlib.Path(done).exists(): time.sleep(0.01)\n"
    "time.sleep(1); open(out, 'a').write(doc + '\\n')"
)
"""A command channel that says it started, waits until the run's last loop is ending,
and takes a second more: still delivering when the run ends."""
LAST_LOOP = (
    "import pathlib, sys, time; started, done = sys.argv[1:]\n"
    "while not pathlib.Path(started).exists(): time.sleep(0.01)\n"
    "print('DONE'); pathlib.Path(done).touch()"
)
"""An agent that ends (the run with it) once the notification command is running."""


def test_a_command_still_delivering_when_the_run_ends_is_not_killed(tmp_path: Path) -> None:
    """The run's end kills its leftover processes; a notification command in flight is
    the notifier's to finish (within its timeout), not a leftover (CI once lost four
    alerts so: `killed leftover process(es) of the run`)."""
    out, started, done = (str(tmp_path / n) for n in ("command.json", "started", "done"))
    config = write_config(
        tmp_path,
        table(
            "notify",
            command=[PY, "-c", SLOW_APPEND, started, done, out],
            coalesce=0.1,
            retries=0,
            events=["failed"],
        ),
        sim_agent("bad", rate=0, behavior="fail"),
        command_agent("last", LAST_LOOP, started, done),
        loop("bad", "bad", done_marker="DONE", budget={"retries": 0}, workspace="."),
        loop("last", "last", done_marker="DONE", workspace="."),
    )
    result = run_cli("run", config, "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    notices = [e["message"] for e in json_lines(result.stdout) if e.get("type") == "notice"]
    assert not any("leftover" in n for n in notices), notices
    assert Path(out).exists(), notices
    assert [json.loads(line)["event"] for line in Path(out).read_text().splitlines()] == ["failed"]


@pytest.mark.parametrize("fmt", ["slack", "ntfy"])
def test_slack_and_ntfy_formats(tmp_path: Path, fmt: str) -> None:
    with webhook() as hook:
        config = write_config(
            tmp_path,
            notify_table(hook.url, format=fmt, events=["failed"]),
            sim_agent("bad", rate=0, behavior="fail"),
            loop("bad", "bad", done_marker="DONE", budget={"retries": 0}, workspace="."),
        )
        result = run_cli("run", config, "--headless", cwd=tmp_path)
        requests = hook.wait_for(1)
    assert result.returncode == 1, result.stderr
    assert len(requests) == 1
    if fmt == "slack":
        body: Any = requests[0].json()
        assert set(body) == {"text"}
        assert "bad: failed: agent error" in body["text"]
    else:
        assert requests[0].body.decode().startswith("bad: failed: agent error")
        assert requests[0].headers["Title"] == "loopvisor: failed"
        assert requests[0].headers["Priority"] == "high"


def test_a_hanging_webhook_delays_no_loop(tmp_path: Path) -> None:
    """The webhook never answers the first alert: the other loop still runs to its end
    and the run's summary is printed while the request hangs."""
    with webhook("hang") as hook:
        config = write_config(
            tmp_path,
            notify_table(hook.url, timeout="60s", events=["failed", "finished"]),
            sim_agent("bad", rate=0, behavior="fail"),
            sim_agent("ok", rate=0, converge_after=4, done_text="DONE"),
            loop("bad", "bad", done_marker="DONE", budget={"retries": 0}, workspace="."),
            loop("good", "ok", done_marker="DONE", workspace="."),
        )
        proc = subprocess.Popen(
            [PY, "-m", "supervisor", "run", str(config), "--json"],
            cwd=tmp_path,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            hook.wait_for(1)  # the failure's message: it hangs from here on
            assert proc.stdout is not None
            summary = None
            for line in proc.stdout:
                event = json.loads(line)
                if event["type"] == "summary":
                    summary = event
                    break
            assert summary is not None
            assert not hook.released.is_set()  # still hanging when the run ended
            assert {r["name"]: r["state"] for r in summary["loops"]} == {
                "bad": "failed",
                "good": "succeeded",
            }
            assert summary["loops"][1]["iterations"] == 4
        finally:
            hook.mode = "ok"
            hook.released.set()
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr


def test_a_burst_of_exhausted_loops_is_one_message(tmp_path: Path) -> None:
    names = [f"l{i:02}" for i in range(20)]
    with webhook() as hook:
        config = write_config(
            tmp_path,
            table("supervisor", max_concurrent=20),
            table("supervisor.budget", tokens=3000),
            notify_table(hook.url, coalesce="5s", events=["exhausted"]),
            sim_agent("ok", rate=0),
            *(loop(n, "ok", done_marker="NEVER", max_iterations=50, workspace=".") for n in names),
        )
        result = run_cli("run", config, "--headless", "--quiet", cwd=tmp_path)
        docs = hook.documents()
    assert result.returncode == 2, result.stderr
    assert len(docs) == 1, [d["text"] for d in docs]
    assert docs[0]["count"] == 20
    assert sorted(a["loop"] for a in docs[0]["alerts"]) == names
    assert docs[0]["title"] == "loopvisor: 20 loops budget exhausted"


def test_notify_test_reports_each_channel(tmp_path: Path) -> None:
    with webhook() as hook:
        good = write_config(
            tmp_path,
            notify_table(hook.url, command=[PY, "-c", "import sys; sys.stdin.read()"]),
            sim_agent("s"),
            loop("a", "s", done_marker="DONE"),
        )
        ok = run_cli("notify", "--test", good, cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "webhook (json) to 127.0.0.1: ok (HTTP 200)" in ok.stdout
        assert "command python" in ok.stdout  # (python3.11 etc.: the argv[0] name)
        assert hook.wait_for(1)[0].json()["event"] == "test"
        bad = write_config(
            tmp_path,
            notify_table(hook.url, command=[PY, "-c", "import sys; sys.exit(3)"]),
            sim_agent("s"),
            loop("a", "s", done_marker="DONE"),
            name="bad.toml",
        )
        failed = run_cli("notify", "--test", bad, cwd=tmp_path)
    assert failed.returncode == 1
    assert "FAILED: exit code 3" in failed.stdout
    assert "ok (HTTP 200)" in failed.stdout
    assert leaks(tmp_path, ok.stdout, ok.stderr, failed.stdout, failed.stderr) == []


def test_notify_test_with_a_failing_webhook(tmp_path: Path) -> None:
    with webhook("fail") as hook:
        config = write_config(
            tmp_path, notify_table(hook.url), sim_agent("s"), loop("a", "s", done_marker="DONE")
        )
        result = run_cli("notify", "--test", config, cwd=tmp_path)
    assert result.returncode == 1
    assert "webhook (json) to 127.0.0.1: FAILED: HTTP 500" in result.stdout
    assert SECRET_PATH not in result.stdout + result.stderr
