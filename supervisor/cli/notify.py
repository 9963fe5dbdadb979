"""`loopvisor notify --test [CONFIG]`: one test message through every channel of every
`[notify]` table of a config, and what happened on each.

One line per channel (`webhook (slack) to hooks.slack.com: ok (HTTP 200)`); the
webhook URL is a secret and only its host is named. The bell is rung on the terminal
when stdout is one; desktop notifications are off (not failed) where notify-send is
not installed. Exit 0 when every channel delivered, 1 when one failed, 3 for a config
that does not load or has nothing configured.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable

import anyio

from supervisor.alerts import Alert
from supervisor.config.load import load_config
from supervisor.notify.channels import Channel, Children, DeliveryFailed, channels_of, notify_send
from supervisor.notify.message import Message
from supervisor.redact import Redactor
from supervisor.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from supervisor.spec import Config
from supervisor.textsafe import for_terminal_line

TEST_TEXT = "a test message from `loopvisor notify --test`: notifications reach you"


def cmd_notify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    say = _printer(Redactor.for_config(config))
    specs = config.notify_specs()
    if not any(spec.bell or spec.channels for spec in specs):
        say(f"{args.config}: [notify] configures no channel: nothing to test")
        return EXIT_USAGE
    if any(spec.bell for spec in specs):
        if sys.stdout.isatty():
            sys.stdout.write("\a")
            say("bell: rung")
        else:
            say("bell: not a terminal here (the console rings it)")
    if any(spec.desktop for spec in specs) and notify_send() is None:
        say("desktop: off (notify-send is not installed)")
    failed = anyio.run(_send_all, config, say)
    return EXIT_FAILED if failed else EXIT_OK


async def _send_all(config: Config, say: Callable[[str], None]) -> int:
    children = Children(cwd=config.path.parent, env={})
    message = Message(
        "test",
        (Alert(kind="test", reason=TEST_TEXT),),
        run_id="test",
        host=socket.gethostname(),
        spend={},
    )
    channels: list[Channel] = []
    for spec in config.notify_specs():  # a loop's table may repeat the run's channels
        channels += [c for c in channels_of(spec, children) if c not in channels]
    results = [""] * len(channels)

    async def attempt(index: int, channel: Channel) -> None:
        try:
            results[index] = "ok (" + await channel.send(message) + ")"
        except DeliveryFailed as exc:
            results[index] = f"FAILED: {exc}"

    async with anyio.create_task_group() as tg:
        for index, channel in enumerate(channels):
            tg.start_soon(attempt, index, channel)
    for channel, result in zip(channels, results, strict=True):
        say(f"{channel.name}: {result}")
    return sum(r.startswith("FAILED") for r in results)


def _printer(redactor: Redactor) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(for_terminal_line(redactor.text(text)), flush=True)

    return say
