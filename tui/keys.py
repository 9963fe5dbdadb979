"""Every command of the console and its keys, in one place.

Built from `COMMANDS`: the main screen's and the app's `BINDINGS`, the help screen
(`help_sections`), the command palette (`commands.LoopCommands`) and README's key
table (`readme_table`, which a test holds README to; `python -m tui.keys` prints it).
A command that acts on the focused loop names its `OperatorActions` method, so a key
and a palette entry can only do the same thing.

The other screens' keys (inbox, chat, edit, confirmations) are bound by those screens
and listed here for the help screen (`OTHER_SECTIONS`); a test checks that every key
they bind is listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class Command:
    keys: tuple[str, ...]
    """The keys as people write them, e.g. ("q", "ctrl+q"); () for a palette-only command."""
    help: str = ""
    """The help screen's line ("": not on the help screen)."""
    doc: str | None = None
    """README's line (None: not in README's table)."""
    bindings: tuple[Binding, ...] = ()
    """What the main screen binds for it."""
    app_bindings: tuple[Binding, ...] = ()
    """What the app binds for it (on every screen)."""
    action: str | None = None
    """The `OperatorActions` method it runs; with `per_loop`, on the focused loop."""
    per_loop: bool = False
    palette: str = ""
    """The palette's text ("{loop}": the focused loop's name; "": not in the palette)."""
    palette_help: str = ""

    @property
    def palette_hint(self) -> str:
        """The palette's help line: the key, then what is worth knowing."""
        return ": ".join(
            part for part in (self.keys[0] if self.keys else "", self.palette_help) if part
        )


def _on_loop(key: str, action: str, label: str, *, show: bool = True) -> Binding:
    return Binding(key, f"loop({action!r})", label, show=show)


def _run(key: str, action: str, label: str, *, show: bool = True) -> Binding:
    return Binding(key, f"run({action!r})", label, show=show)


COMMANDS: tuple[Command, ...] = (
    Command(("↑ ↓", "j k"), "move between loops (the transcript follows)"),
    Command(
        ("p",),
        "pause / resume the loop (ended: offers a restart)",
        "pause / resume the focused loop: one waiting for a slot or a retry pauses at once,"
        " one in a turn or check shows `pausing` until it ends (`p` again cancels); on a"
        " loop that ended, offers a restart",
        (_on_loop("p", "toggle_pause", "pause"),),
        action="toggle_pause",
        per_loop=True,
        palette="Pause / resume {loop}",
    ),
    Command(
        ("s",),
        "stop the loop (asks first)",
        "stop it (asks first)",
        (_on_loop("s", "ask_stop", "stop"),),
        action="ask_stop",
        per_loop=True,
        palette="Stop {loop}",
        palette_help="asks first",
    ),
    Command(
        ("r",),
        "restart the loop from iteration 1 (asks first)",
        "restart it from iteration 1 (asks first; its spend stays spent)",
        (_on_loop("r", "restart", "restart", show=False),),
        action="restart",
        per_loop=True,
        palette="Restart {loop}",
        palette_help="from iteration 1, asks first",
    ),
    Command(
        ("e",),
        "edit prompt, max_iterations, budget (from the next iteration)",
        "edit its prompt template and limits; errors shown before applying; applies from"
        " the next iteration",
        (_on_loop("e", "edit", "edit"),),
        action="edit",
        per_loop=True,
        palette="Edit {loop}",
        palette_help="prompt, max_iterations, budget",
    ),
    Command(
        ("i",),
        "inject a message into the next prompt",
        "inject a message into its next prompt",
        (_on_loop("i", "inject", "inject"),),
        action="inject",
        per_loop=True,
        palette="Inject a message into {loop}",
        palette_help="next prompt",
    ),
    Command(
        ("enter",),
        "step in: chat with its agent, or claude --resume",
        "step in: a chat with an API loop's model (tokens charged to the loop; `ctrl+r`"
        " hands back), or the real `claude --resume SESSION` in this terminal for a Claude"
        " Code loop",
        (_on_loop("enter", "step_in", "step in"),),
        action="step_in",
        per_loop=True,
        palette="Step into {loop}",
        palette_help="chat or claude",
    ),
    Command(
        ("h",),
        "history: iterations, prompts, transcripts",
        "history of its iterations (prompt, transcript, checks) from the journal",
        (_on_loop("h", "history", "history", show=False),),
        action="history",
        per_loop=True,
        palette="History of {loop}",
        palette_help="iterations",
    ),
    Command(
        ("d",),
        "diff: its checkpoint commits against its base",
        "diff of a worktree loop: its checkpoint commits against the commit its worktree"
        " was made from; from the history screen, the selected iteration's",
        (_on_loop("d", "diff", "diff", show=False),),
        action="diff",
        per_loop=True,
        palette="Diff of {loop}",
        palette_help="changes against its base",
    ),
    Command(
        ("L",),
        "land: merge its branch into the one it was made from (asks first)",
        "land a worktree loop: merge its branch into the branch its worktree was made from"
        " (asks first; uncommitted changes in the worktree are committed first; a conflict"
        " changes nothing and names the files)",
        (_on_loop("L", "ask_land", "land", show=False),),
        action="ask_land",
        per_loop=True,
        palette="Land {loop}",
        palette_help="merge its branch, asks first",
    ),
    # palette only: every loop at once
    Command(
        (), action="pause_all", palette="Pause all loops", palette_help="at their next safe point"
    ),
    Command(
        (), action="resume_all", palette="Resume all loops", palette_help="paused and stuck loops"
    ),
    Command((), action="stop_all", palette="Stop all loops", palette_help="asks first"),
    Command(
        ("b",),
        "global budget: raise it (loops it paused go on)",
        "raise (or lower) the run's global budget, tokens and USD, as `ctl budget` does;"
        ' loops it paused (`on_exhausted = "pause"`) go on',
        (_run("b", "global_budget", "budget", show=False),),
        action="global_budget",
        palette="Global budget",
        palette_help="raise it: loops it paused go on",
    ),
    Command(
        ("/", "esc"),
        "filter loops by name or state / clear the filter",
        "filter loops by name or state / clear the filter",
        (
            Binding("slash", "filter", "filter", show=False),
            Binding("escape", "clear_filter", "clear filter", show=False),
        ),
    ),
    Command(
        ("a",),
        "attention inbox: loops that need you",
        "attention inbox: every stuck, paused or failed loop with the detector's evidence",
        (_run("a", "inbox", "inbox"),),
        action="inbox",
        palette="Attention inbox",
        palette_help="loops that need you",
    ),
    Command(("tab",), "focus the transcript / back to the table"),
    Command(("end / home",), "transcript: follow new text / go to the top"),
    Command(
        ("ctrl+p",),
        "command palette: every action, pause/resume/stop all",
        "command palette: every action on the focused loop, pause / resume / stop all",
    ),
    Command(
        ("?",),
        "this help",
        "help",
        (_run("question_mark", "help", "help"),),
        action="help",
        palette="Keys",
        palette_help="every key",
    ),
    Command(
        ("q", "ctrl+q"),
        "quit (asks first while loops run: they are stopped)",
        "quit (asks when loops are running); attached: detach and leave them running",
        (_run("q", "request_quit", "quit"),),
        (Binding("ctrl+q", "quit", "Quit", show=False, priority=True),),
    ),
    Command(
        ("q", "ctrl+d"),
        "attached (loopvisor attach): detach, the loops keep running",
        "attached: detach",
        app_bindings=(Binding("ctrl+d", "detach", "Detach", show=False),),
    ),
)

MAIN_BINDINGS = [binding for command in COMMANDS for binding in command.bindings]
APP_BINDINGS = [binding for command in COMMANDS for binding in command.app_bindings]
MAIN_SECTION = "Loops (main screen)"

OTHER_SECTIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Attention inbox",
        (
            ("enter", "step in"),
            ("↑ ↓  j k", "move between loops"),
            ("p e i r s h", "resume, edit, inject, restart, stop, history"),
            ("esc  a", "back"),
        ),
    ),
    (
        "History",
        (
            ("↑ ↓", "move between iterations"),
            ("d", "that iteration's diff"),
            ("f", "fork: a new loop from that iteration (asks its name)"),
            ("tab", "to the transcript"),
            ("esc  h", "back"),
        ),
    ),
    ("Diff", (("↑ ↓  j k", "scroll"), ("space  b", "page down / up"), ("esc  q  d", "back"))),
    (
        "Step-in chat",
        (("enter", "send to the agent"), ("ctrl+r", "hand back"), ("esc", "leave it paused")),
    ),
    ("Edit", (("ctrl+s", "apply"), ("tab", "next field"), ("esc", "cancel"))),
    ("Global budget", (("ctrl+s", "apply"), ("tab", "next field"), ("esc", "cancel"))),
    ("Any question", (("y", "confirm"), ("n  esc", "cancel"), ("enter", "the focused button"))),
)
"""Keys the other screens bind themselves, as the help screen lists them."""


def help_sections() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """The help screen's sections: (title, ((keys, what they do), ...))."""
    main = tuple(("  ".join(c.keys), c.help) for c in COMMANDS if c.keys and c.help)
    return ((MAIN_SECTION, main), *OTHER_SECTIONS)


def readme_table() -> str:
    """README's key table (under "## The operator console"), as README must show it."""
    rows = ["| key | action |", "| --- | --- |"]
    for command in COMMANDS:
        if command.doc is not None:
            keys = " ".join(f"`{key}`" for key in command.keys)
            rows.append(f"| {keys} | {command.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
