"""`[notify]` and `[loop.notify]`: read, merged key by key onto the run's table, every
problem at FILE:LINE:COL, and the webhook URL never quoted."""

from __future__ import annotations

from pathlib import Path

from config_support import assert_issue, issues_of, loop_config, write

from supervisor.config.load import load_config
from supervisor.redact import Redactor
from supervisor.spec import NotifySpec

LOOP = 'name = "a"\nagent = "sim"\nprompt = "p"\ndone_marker = "D"\n'
URL = "https://hooks.example.com/services/T0/B0/s3cretpart"


def test_defaults_without_a_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, loop_config(LOOP)))
    assert config.notify == NotifySpec()
    assert config.notify.bell
    assert not config.notify.channels


def test_run_table_and_a_loop_override_merged_key_by_key(tmp_path: Path) -> None:
    text = loop_config(
        LOOP + 'notify = { format = "ntfy", events = ["failed"] }\n'
        '[[loop]]\nname = "b"\nagent = "sim"\nprompt = "p"\ndone_marker = "D"\n',
        extra=f'[notify]\nwebhook = "{URL}"\nformat = "slack"\ndesktop = true\n'
        'command = ["notifier", "--flag"]\ntimeout = "5s"\ncoalesce = 1\n',
    )
    config = load_config(write(tmp_path, text))
    run = config.notify
    assert (run.webhook, run.format, run.desktop, run.timeout, run.coalesce) == (
        URL,
        "slack",
        True,
        5.0,
        1.0,
    )
    assert run.command == ("notifier", "--flag")
    a, b = config.loops
    assert a.notify is not None
    assert (a.notify.webhook, a.notify.format, a.notify.events) == (URL, "ntfy", ("failed",))
    assert b.notify is None
    assert config.notify_for("a") == a.notify
    assert config.notify_for("b") == run
    assert config.notify_for(None) == run


def test_a_template_and_a_loop_merge_their_notify_tables(tmp_path: Path) -> None:
    text = (
        '[agents.sim]\nkind = "sim"\n[templates.t]\nnotify = { bell = false }\n'
        '[[loop]]\nextends = "t"\n' + LOOP + "notify = { webhook = false }\n"
    )
    (loop,) = load_config(write(tmp_path, text)).loops
    assert loop.notify == NotifySpec(bell=False, webhook=None)


def test_a_bad_webhook_is_reported_without_its_value(tmp_path: Path) -> None:
    path = write(tmp_path, loop_config(LOOP, extra='[notify]\nwebhook = "ftp://s3cret"\n'))
    assert_issue(path, "webhook", "expected an http:// or https:// URL")
    assert "s3cret" not in str(issues_of(path)[0])


def test_unknown_keys_events_and_a_loop_coalesce(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            LOOP + 'notify = { coalesce = "1s" }\n',
            extra='[notify]\nformt = "json"\nevents = ["failed", "stuckk"]\nbell = 1\n',
        ),
    )
    messages = [i.message for i in issues_of(path)]
    assert messages == [
        'unknown key notify.formt (did you mean "format"?)',
        'notify.events[1]: unknown event "stuckk" (one of "attention", "failed", '
        '"exhausted", "budget", "finished")',
        "notify.bell: expected a boolean (true or false), got integer 1",
        "notify.coalesce: is the run's: set it in [notify], not in a loop's table",
    ]


def test_format_choice_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, loop_config(LOOP, extra='[notify]\nformat = "slak"\n'))
    assert_issue(path, "format", 'expected one of "json", "slack", "ntfy"')


def test_the_redactor_knows_every_webhook_url(tmp_path: Path) -> None:
    other = "http://127.0.0.1:9/loop-only-s3cret"
    text = loop_config(
        LOOP + f'notify = {{ webhook = "{other}" }}\n', extra=f'[notify]\nwebhook = "{URL}"\n'
    )
    config = load_config(write(tmp_path, text))
    redactor = Redactor.for_config(config)
    assert redactor.text(f"to {URL} and {other}") == (
        "to [REDACTED:notify.webhook] and [REDACTED:notify.webhook]"
    )
    assert "s3cret" not in repr(redactor.fields(config.loops[0]))
