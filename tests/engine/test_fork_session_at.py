"""A Claude Code fork resumes the parent's session cut at iteration N's last message
(`--resume-session-at`); a fork record from an older journal, without that message id,
resumes the whole session as before and says so in the fork's transcript."""

from __future__ import annotations

from pathlib import Path

from helpers import load, loop, table

from supervisor import events as ev
from supervisor.events import LoopForked
from supervisor.fork import seed_fork
from supervisor.runtime import Supervisor


def supervisor(tmp_path: Path) -> tuple[Supervisor, list[ev.Event]]:
    config = load(
        tmp_path,
        table("agents.cc", kind="claude-code", command="claude"),
        loop("fix", "cc", done_marker="DONE"),
    )
    sup = Supervisor(config)
    seen: list[ev.Event] = []
    sup.add_sink(seen.append)
    return sup, seen


def test_a_fork_resumes_the_session_at_iteration_ns_message(tmp_path: Path) -> None:
    sup, seen = supervisor(tmp_path)
    runner = sup.runners["fix"]
    forked = LoopForked(
        loop="fix", parent="p", iteration=1, commit="0" * 40, session_id="S", session_at="U1"
    )
    seed_fork(runner, forked)
    argv, _ = runner.agent.command("Go on.", resume="S")  # type: ignore[attr-defined]
    at = argv.index("--resume=S")
    assert argv[at : at + 3] == ["--resume=S", "--resume-session-at=U1", "--fork-session"]
    assert [e for e in seen if isinstance(e, ev.Notice)] == []


def test_a_fork_record_without_a_message_id_resumes_the_whole_session_and_says_so(
    tmp_path: Path,
) -> None:
    sup, seen = supervisor(tmp_path)
    runner = sup.runners["fix"]
    older = LoopForked(loop="fix", parent="p", iteration=2, commit="0" * 40, session_id="S")
    seed_fork(runner, older)
    argv, _ = runner.agent.command("Go on.", resume="S")  # type: ignore[attr-defined]
    at = argv.index("--resume=S")
    assert argv[at : at + 2] == ["--resume=S", "--fork-session"]
    assert not any(a.startswith("--resume-session-at") for a in argv)
    (notice,) = [e for e in seen if isinstance(e, ev.Notice)]
    assert notice.level == "warning"
    assert "resumes the whole session" in notice.message
    assert "turns after iteration 2" in notice.message
    shown = [line.text for line in runner.tail.snapshot()]
    assert any("resumes the whole session" in text for text in shown), shown
