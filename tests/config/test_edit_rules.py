"""One edit validator: loops.toml, the console's edit dialog and the `edit` control op
(what `ctl edit` sends) judge a prompt template, max_iterations and limits by
`config.rules`, and say the same thing about the same mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import load, loop, sim_agent, supervisor_table, write_config

from supervisor.api import ControlError
from supervisor.config.load import ConfigError, load_config
from supervisor.config.rules import edit_problems, prompt_problems
from supervisor.runtime import Supervisor
from supervisor.sizes import PROMPT_TEMPLATE_MAX_BYTES
from supervisor.spec import Limits
from tui.screens.edit import validate_edit

BAD_EDITS = [
    {"prompt": "fix $bogus now"},
    {"prompt": "  \n "},
    {"prompt": "x" * (PROMPT_TEMPLATE_MAX_BYTES + 1)},
    {"max_iterations": 0},
    {"limits": Limits(tokens=-5, usd=0.0)},
    {"prompt": "ok\n $chek_output", "max_iterations": -1, "limits": Limits(wall=-1.0)},
]


@pytest.mark.anyio
@pytest.mark.parametrize("edit", BAD_EDITS)
async def test_the_control_op_refuses_what_the_rules_find(
    tmp_path: Path, edit: dict[str, Any]
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=0),
        loop("L", "s", done_marker="NEVER", max_iterations=3),
    )
    expected = "; ".join(map(str, edit_problems(**edit)))
    assert expected
    sup = Supervisor(config)
    with pytest.raises(ControlError) as refused:
        await sup.edit("L", **edit)
    assert str(refused.value) == expected


def test_the_dialog_shows_what_the_control_op_would_refuse() -> None:
    problems, values = validate_edit("ok\n $chek_output", "-1", "-5", "0", "", cpu=None)
    assert values is None
    judged = edit_problems(
        prompt="ok\n $chek_output", max_iterations=-1, limits=Limits(tokens=-5, usd=0.0)
    )
    assert problems == [str(p) for p in judged]  # same words, in the dialog's field order
    assert problems[0].startswith("prompt: line 2, column 2: unknown placeholder $chek_output")
    assert validate_edit("fine $loop", "3", "", "0.5", "30m", cpu=None)[0] == []


def test_loops_toml_reports_the_same_prompt_problem_at_its_place(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        loop("L", "s", done_marker="OK", prompt="first line\nthen $chek_output"),
    )
    (problem,) = prompt_problems("first line\nthen $chek_output")
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    (issue,) = bad.value.issues
    assert problem.message in issue.message
    assert issue.message.endswith("(line 2 of the prompt)")
