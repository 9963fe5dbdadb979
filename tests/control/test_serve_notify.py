"""`serve` delivers notifications like `run` does (the notifier is a sink of the
served run): a loop that fails, one that is stuck and the summary at shutdown reach a
webhook on 127.0.0.1; a reload that changed the URL says it needs a restart; the
secret URL is in no file the daemon writes (serve.log, the journal, transcripts)
nor in `ctl` output."""

from __future__ import annotations

from pathlib import Path

from daemon import kill_daemon, poll, start_daemon
from helpers import loop, sim_agent, supervisor_table, table
from webhook_support import SECRET_PATH, webhook


def leaks(root: Path, *texts: str) -> list[str]:
    found = [f"text {i}" for i, t in enumerate(texts) if SECRET_PATH in t]
    for path in root.rglob("*"):
        if path.is_file() and path.suffix != ".toml" and SECRET_PATH.encode() in path.read_bytes():
            found.append(str(path))
    return found


def config(url: str) -> str:
    return "\n".join(
        [
            table("notify", webhook=url, coalesce=0.1, retries=0),
            supervisor_table(),
            sim_agent("bad", rate=0, behavior="fail"),
            sim_agent("same", rate=0, behavior="stuck"),
            loop("bad", "bad", done_marker="DONE", budget={"retries": 0}, workspace="."),
            loop("st", "same", done_marker="DONE", workspace="."),
        ]
    )


def test_serve_delivers_notifications_and_the_url_stays_secret(tmp_path: Path) -> None:
    with webhook() as hook:
        d = start_daemon(tmp_path, config(hook.url))
        try:
            poll(lambda: {x["event"] for x in hook.documents()} >= {"failed", "attention"})
            d.config.write_text(config(hook.url + "-rotated"), encoding="utf-8")
            reloaded = d.ctl("reload")
            assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
            status = d.ctl("status", "--json")
            shutdown = d.ctl("shutdown")
            poll(lambda: "finished" in {x["event"] for x in hook.documents()})
        finally:
            kill_daemon(d.pid)
        docs = hook.documents()
        paths = {r.path for r in hook.requests}
    by_kind = {x["event"]: x for x in docs}
    assert (by_kind["failed"]["loop"], by_kind["attention"]["loop"]) == ("bad", "st")
    assert by_kind["finished"]["summary"]["loops"], by_kind["finished"]
    # [notify] is read when the run starts: a changed one is said to need a restart
    # (and the notifier keeps the old URL), never silently ignored nor printed.
    assert "[notify] changed; needs a restart of serve" in reloaded.stdout
    assert paths == {SECRET_PATH}
    log = d.log
    assert "stopped" in log
    texts = (reloaded.stdout, reloaded.stderr, status.stdout, shutdown.stdout, shutdown.stderr)
    assert leaks(tmp_path, log, *texts) == []
