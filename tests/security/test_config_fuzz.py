"""No loops.toml crashes or hangs the supervisor (issue 10, item 7).

Every input must end as a `Config` or a `ConfigError` whose issues name FILE:LINE:COL,
quickly and in bounded memory; `loopvisor check` exits 0 or 3, never with a traceback.
Each filed attack is a regression test below (a few through the real CLI); a
hypothesis fuzz test, derandomized so CI is stable, looks for the next one.
Slow cases carry a tight `timeout` marker: they took 10 s to minutes before the fix.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

import pytest
from helpers import loop, run_cli, sim_agent, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.config._loops import _unique
from supervisor.config.load import ConfigError, load_config, parse_config
from supervisor.schedule import Schedule
from supervisor.spec import Config
from supervisor.textsafe import for_terminal_line

BASE = sim_agent("a") + loop("x", "a", done_marker="DONE")
"""A valid config: one sim agent, one loop (nine lines)."""
PROMPT = '"Do the task. Iteration $iteration of $max_iterations."'
assert f"prompt = {PROMPT}" in BASE

POSITION = re.compile(r"^.+:\d+:\d+: ", re.MULTILINE)


def outcome(text: str, folder: Path) -> Config | ConfigError:
    """What loading `text` as folder/loops.toml gives: a Config or a ConfigError, and
    nothing else (any other exception fails the test that called this)."""
    try:
        return parse_config(text, folder / "loops.toml")
    except ConfigError as exc:
        return exc


def refused(text: str, folder: Path, *fragments: str) -> str:
    """The error text for `text`, asserting it is refused with every fragment in it."""
    result = outcome(text, folder)
    assert isinstance(result, ConfigError), f"accepted: {text[:200]!r}"
    message = str(result)
    for fragment in fragments:
        assert fragment in message, message[:2000]
    assert POSITION.match(message)
    assert "\x1b" not in message
    return message


# -- the filed attacks, through the loader -------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        pytest.param("z = " + "[" * 500 + "]" * 500, ("nested", "limit is 32"), id="deep-arrays"),
        pytest.param(
            "z = " + "{a=" * 500 + "1" + "}" * 500, ("nested", "limit is 32"), id="deep-tables"
        ),
        pytest.param(f'budget = {{ wall = "{"1" * 400}s" }}', ("10 years",), id="400-digit-str"),
        pytest.param(f"budget = {{ wall = {'1' * 400} }}", ("limit is 100",), id="400-digit-int"),
        pytest.param(f"budget = {{ wall = {'1' * 30} }}", ("10 years",), id="30-digit-wall"),
        pytest.param("budget = { wall = 1e300 }", ("10 years",), id="1e300-wall"),
        pytest.param("budget = { usd = inf }", ("budget.usd", "finite"), id="usd-inf"),
        pytest.param("budget = { usd = -inf }", ("budget.usd",), id="usd-minus-inf"),
        pytest.param("budget = { usd = nan }", ("budget.usd",), id="usd-nan"),
        pytest.param(f"budget = {{ usd = {'9' * 30} }}", ("budget.usd", "at most"), id="usd-huge"),
        pytest.param("budget = { usd = 1e300 }", ("budget.usd", "at most"), id="usd-1e300"),
        pytest.param(f"budget = {{ tokens = {'9' * 30} }}", ("tokens", "at most"), id="int-huge"),
        pytest.param(f"max_iterations = {'9' * 4400}", ("4400 characters",), id="4400-digit-int"),
        pytest.param(f'schedule = "every 1{"0" * 400}s"', ("10 years",), id="every-huge"),
        pytest.param('schedule = "every 1e400s"', ("schedule",), id="every-exponent"),
        pytest.param(
            'workspace = { repo = ".", branch = "{loop.foo}" }', ("{loop}",), id="branch-attribute"
        ),
        pytest.param(
            'workspace = { repo = ".", branch = "b{loop!r}" }', ("{loop}",), id="branch-conversion"
        ),
        pytest.param(
            'checks = [{ run = "x", pattern = "' + "(" * 1000 + ")" * 1000 + '" }]',
            ("pattern", "regular expression"),
            id="regex-deep",
        ),
        pytest.param(
            f'name2 = "{"y" * 10}"\n["{"k" * 200}".x]', ("unknown key",), id="long-quoted-key"
        ),
    ],
)
def test_hostile_value_is_refused_at_its_position(
    tmp_path: Path, extra: str, fragments: tuple[str, ...]
) -> None:
    refused(BASE + extra + "\n", tmp_path, *fragments)


def test_a_huge_number_is_named_by_its_digit_count_in_a_sentence(tmp_path: Path) -> None:
    """A 30-digit number is not echoed digit by digit, and the message still reads."""
    message = refused(BASE + f"budget = {{ tokens = {'9' * 30} }}\n", tmp_path)
    assert "got a number of 30 digits" in message, message
    message = refused(BASE + f"max_iterations = {'-' + '9' * 30}\n", tmp_path)
    assert "got a number of 30 digits" in message, message


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("prompt_file", "a\\u0000b", "null"),
        ("workspace", "a\\u0000b", "null"),
        ("workspace", "a" * 300, "too long"),
        ("prompt_file", "a" * 300, "too long"),
        ("prompt_file", "/".join(["b" * 250] * 20), "too long"),
    ],
)
def test_unusable_path_is_an_error_not_a_traceback(
    tmp_path: Path, key: str, value: str, fragment: str
) -> None:
    if key == "prompt_file":
        text = BASE.replace(f"prompt = {PROMPT}", f'prompt_file = "{value}"')
    else:
        text = BASE + f'{key} = "{value}"\n'
    refused(text, tmp_path, key, fragment)


@pytest.mark.parametrize("value", ["a\\u0000b", "r" * 300])
def test_unusable_repo_path_is_an_error_not_a_traceback(tmp_path: Path, value: str) -> None:
    refused(BASE + f'workspace = {{ repo = "{value}" }}\n', tmp_path, "workspace.repo")


def test_repo_path_at_the_os_limit_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """A repo whose path fits PATH_MAX but whose `.git` does not: exists() raised."""
    target = 4094 - len(str(tmp_path.resolve()))  # the repo path: 4094 bytes, + "/.git" too long
    parts, fd = [], os.open(tmp_path, os.O_RDONLY)
    while target > 0:
        size = min(250, target - 1)
        size -= target - size - 1 == 1  # never leave a 1-byte remainder (an empty name)
        part = "d" * size
        os.mkdir(part, dir_fd=fd)
        next_fd = os.open(part, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, target = next_fd, target - len(part) - 1
        parts.append(part)
    os.close(fd)
    rel = "/".join(parts)
    refused(BASE + f'workspace = {{ repo = "{rel}" }}\n', tmp_path, "not a git repository")


@pytest.mark.parametrize(
    "name",
    ["x\\u001b[31m\\nforged: ok", "x\\nline2", "\\u001b]0;pwned\\u0007", "a\\u202eb", "n" * 300],
)
def test_loop_name_with_control_characters_is_refused_and_shown_escaped(
    tmp_path: Path, name: str
) -> None:
    message = refused(BASE.replace('name = "x"', f'name = "{name}"'), tmp_path, "name")
    assert len(message.splitlines()) == 1, message
    assert "\u202e" not in message


@pytest.mark.parametrize("where", ["agents", "templates"])
def test_agent_and_template_names_with_controls_are_refused_and_escaped(
    tmp_path: Path, where: str
) -> None:
    hostile = '"evil\\u001b]52;c;cm0gLXJmIH4=\\u0007\\nforged: ok"'
    text = BASE + f'[{where}.{hostile}]\nkind = "sim"\n'
    message = refused(text, tmp_path, "evil\\x1b]52", "name")
    assert "\x07" not in message
    assert "\nforged" not in message


def test_unknown_key_with_escape_is_shown_escaped(tmp_path: Path) -> None:
    refused('"\\u001b[2J\\u001b[H" = 1\n' + BASE, tmp_path, "unknown key \\x1b[2J")


# -- size and the quadratic cases --------------------------------------------------

AT_ONCE = pytest.mark.timeout(20)
"""A hang guard, not a timing test: each input below is sized (up to the 256 KiB file
limit) so that the quadratic code it was filed against takes minutes, while the fix
takes well under a second on a quiet machine; 20 s keeps a loaded 2-core machine from
failing a correct parser. Where work can be counted, a test counts it instead."""


@AT_ONCE
def test_100000_part_dotted_key_is_refused_at_once(tmp_path: Path) -> None:
    """20,000 parts took 19 s and 1.6 GB (tomllib and the position scanner were both
    quadratic): 100,000 would take minutes."""
    dotted = "k" + ".k" * 99_999
    refused(f"{dotted} = 1\n" + BASE, tmp_path, "100000 parts", "limit is 32")


@AT_ONCE
def test_100000_part_table_header_is_refused_at_once(tmp_path: Path) -> None:
    header = "k" + ".k" * 99_999
    refused(BASE + f"[{header}]\n", tmp_path, "100000 parts")


def test_31_part_key_still_locates_its_error(tmp_path: Path) -> None:
    """Below the limit, deep keys work and errors still point at the right key."""
    deep = ".".join(["t"] * 30)
    message = refused(BASE + f'[agents.b]\nkind = "sim"\n{deep}.oops = 1\n', tmp_path, "t")
    assert ":12:1: " in message


@AT_ONCE
def test_5000_deep_extends_chain_is_refused_at_once(tmp_path: Path) -> None:
    """Took minutes: every template walked its whole chain with list lookups."""
    chain = "".join(f'[templates.t{i}]\nextends = "t{i + 1}"\n' for i in range(5000))
    chain += '[templates.t5000]\nagent = "a"\n'
    message = refused(BASE.replace('name = "x"', 'name = "x"\nextends = "t0"') + chain, tmp_path)
    assert "extends" in message
    assert "limit is 32" in message


def test_extends_chain_at_the_limit_still_merges(tmp_path: Path) -> None:
    chain = "".join(f'[templates.t{i}]\nextends = "t{i + 1}"\n' for i in range(31))
    chain += "[templates.t31]\nmax_iterations = 7\n"
    config = outcome(BASE.replace('name = "x"', 'name = "x"\nextends = "t0"') + chain, tmp_path)
    assert isinstance(config, Config), str(config)
    assert config.loops[0].max_iterations == 7


@AT_ONCE
def test_whitespace_in_a_duration_does_not_backtrack(tmp_path: Path) -> None:
    """60,000 spaces made the duration regex try every split: about 30 s (200,000:
    about 5 minutes)."""
    refused(BASE + f'budget = {{ wall = "1s{" " * 200_000}!" }}\n', tmp_path, "budget.wall")


@AT_ONCE
def test_many_bad_placeholders_are_reported_in_linear_time(tmp_path: Path) -> None:
    """Each of 25,000 bad `$vN` lines (as many as fit in the 256 KiB prompt limit)
    counted the lines before it again: a hang; now 20 are listed and the rest counted."""
    prompt = "".join(f"$v{i}\n" for i in range(25_000))
    (tmp_path / "p.md").write_text("$x\n" * 1000 + prompt, encoding="utf-8")
    text = BASE.replace(f"prompt = {PROMPT}", 'prompt_file = "p.md"')
    message = refused(text, tmp_path, "p.md:1:1: unknown placeholder $x", "24981 more")
    assert len(message.splitlines()) < 30


@AT_ONCE
def test_many_unnamed_checks_get_names_in_linear_time(tmp_path: Path) -> None:
    """Each of 15,000 unnamed checks tried "x", "x-2", ... up to its own number: ~30 s."""
    text = BASE + "checks = [" + '{ run = "x" },' * 15_000 + "]\n"
    config = outcome(text, tmp_path)
    assert isinstance(config, Config), str(config)[:500]
    assert config.loops[0].checks[-1].name == "x-15000"


class _CountingNames(dict[str, int]):
    """The names taken so far, counting every membership test made on them."""

    probes = 0

    def __contains__(self, key: object) -> bool:
        self.probes += 1
        return super().__contains__(key)


def test_unique_check_names_cost_a_constant_number_of_probes_each() -> None:
    """The naming work itself, counted: at most 3 probes a name however many share it
    (the quadratic version made n/2 on average)."""
    taken = _CountingNames()
    names = []
    for _ in range(2000):
        name = _unique("pytest", taken)
        taken.setdefault(name, 2)
        names.append(name)
    assert names[:3] == ["pytest", "pytest-2", "pytest-3"]
    assert len(set(names)) == 2000
    assert taken.probes <= 3 * 2000


@AT_ONCE
def test_a_prompt_file_shared_by_many_loops_is_read_once(tmp_path: Path) -> None:
    """3,000 loops naming one 255 KB prompt_file read and scanned it 3,000 times:
    765 MB of prompts in memory."""
    (tmp_path / "p.md").write_text("Work on $loop. " * 17_000, encoding="utf-8")
    text = sim_agent("a") + '[templates.t]\nagent = "a"\nprompt_file = "p.md"\n'
    text += "".join(
        f'[[loop]]\nname = "l{i}"\nextends = "t"\ndone_marker = "D"\n' for i in range(3000)
    )
    config = outcome(text, tmp_path)
    assert isinstance(config, Config), str(config)[:500]
    assert len({id(spec.prompt) for spec in config.loops}) == 1


def test_oversized_config_is_refused_without_parsing(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE, "# " + "x" * (300 << 10))
    with pytest.raises(ConfigError, match=r"loops\.toml:1:1: .*limit is 256 KiB"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"loops\.toml:1:1: .*limit is 256 KiB"):
        parse_config(path.read_text(encoding="utf-8"), path)


def test_oversized_prompt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.md").write_text("x" * (2 << 20), encoding="utf-8")
    text = BASE.replace(f"prompt = {PROMPT}", 'prompt_file = "big.md"')
    refused(text, tmp_path, "prompt_file", "limit is 256 KiB")


# -- through the real CLI ----------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        pytest.param("z = " + "[" * 500 + "]" * 500, "nested", id="deep-arrays"),
        pytest.param("budget = { usd = inf }", "finite", id="usd-inf"),
        pytest.param('schedule = "every 1' + "0" * 400 + 's"', "10 years", id="every-huge"),
    ],
)
def test_check_exits_3_with_a_position(tmp_path: Path, extra: str, fragment: str) -> None:
    write_config(tmp_path, BASE + extra + "\n")
    result = run_cli("check", "loops.toml", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"loops\.toml:\d+:\d+: .*" + fragment, result.stderr), result.stderr


def test_check_shows_a_hostile_loop_name_escaped(tmp_path: Path) -> None:
    write_config(tmp_path, BASE.replace('name = "x"', 'name = "x\\u001b]0;pwned\\u0007\\nok"'))
    result = run_cli("check", "loops.toml", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "\x1b" not in result.stderr
    assert "\x07" not in result.stderr
    assert "x\\x1b]0;pwned\\x07\\nok" in result.stderr


def test_check_summary_shows_file_text_escaped(tmp_path: Path) -> None:
    """A valid config still quotes the file (a model, a done marker) in its summary."""
    agent = '[agents.a]\nkind = "anthropic"\nmodel = "m\\u001b]0;pwned\\u0007"\n'
    write_config(tmp_path, agent + loop("x", "a", done_marker="D\x1b[2J"))
    result = run_cli("check", "loops.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert "anthropic m\\x1b]0;pwned\\x07" in result.stdout
    assert '"D\\x1b[2J"' in result.stdout


def test_check_of_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """`open()` of a FIFO with no writer blocks forever; /dev/zero never ends."""
    os.mkfifo(tmp_path / "loops.toml")
    result = run_cli("check", "loops.toml", cwd=tmp_path, timeout=10)
    assert result.returncode == 3
    assert "not a regular file" in result.stderr
    result = run_cli("check", "/dev/zero", cwd=tmp_path, timeout=10)
    assert result.returncode == 3
    assert "not a regular file" in result.stderr


# -- fuzz --------------------------------------------------------------------------

HOSTILE = [
    "[", "]", "{", "}", "[[", "]]", "=", ",", ".", '"', "'", '"""', "'''", "\n", "#",
    "inf", "-inf", "nan", "1e999", "0", "-1", "1" * 400, "9" * 25, "1.5", "true",
    "\\u0000", "\\u001b", "\\n", "every ", "1" + "0" * 30 + "s", "1h30m", "500ms",
    "extends = ", "loop", "agents", "templates", "budget", "usd", "wall", "name",
    'prompt_file = "\\u0000"', 'workspace = "' + "w" * 300 + '"', "{loop.x}", "\x1b", "\x00",
    "[" * 40, "{a=" * 40, "a." * 40,
]  # fmt: skip
TOML_CHARS = st.sampled_from([*"[]{}=.,\"'#\n \t\\aZ0_-+:e", "\x00", "\x1b", "\u202e", "\ud800"])
"""Raw text: TOML's punctuation, a few key/number characters, and hostile ones."""
VALID_KEYS = ["name", "agent", "prompt", "extends", "budget", "schedule", "workspace", "checks"]


def toml_ish() -> st.SearchStrategy[str]:
    """Lines of `key = value` and headers, values nested a little, leaves often hostile."""
    leaf = st.one_of(
        st.sampled_from(HOSTILE),
        st.integers(-(10**30), 10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).lower()),
        st.text(string.printable, max_size=12).map(lambda s: '"' + s.replace('"', "") + '"'),
    )
    value = st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(st.tuples(st.sampled_from(VALID_KEYS), inner), max_size=3).map(
                lambda kv: "{" + ", ".join(f"{k} = {v}" for k, v in kv) + "}"
            ),
        ),
        max_leaves=12,
    )
    header = st.sampled_from(
        ["[[loop]]", "[agents.a]", "[templates.t]", "[supervisor.budget]", "[pricing.m]"]
    )
    line = st.one_of(header, st.tuples(st.sampled_from(VALID_KEYS), value).map(" = ".join))
    return st.lists(line, max_size=12).map("\n".join)


FUZZ_BASE = sim_agent("a") + loop(
    "x",
    "a",
    done_marker="DONE",
    budget={"usd": 1.5, "wall": "1h", "tokens": 1000},
    schedule="every 10m",
    stuck={"stall": "2m", "similarity": 0.9},
    checks=[{"run": "true", "timeout": "5m", "pattern": "ok"}],
    workspace=".",
)
HOSTILE_VALUES = [
    "inf", "-inf", "nan", "1" * 400, "-" + "9" * 25, "1e308", '"' + "1" * 400 + 's"',
    '"every 1' + "0" * 400 + 's"', '"every 0s"', '"{loop.x}"', '"{loop:>99}"',
    "[" * 40 + "]" * 40, "{a=" * 40 + "1" + "}" * 40, '"a\\u0000b"', '"' + "w" * 300 + '"',
    '"x\\u001b[31m"', '"1s' + " " * 40 + '!"', '"' + "(" * 1000 + ")" * 1000 + '"',
    '"0 0 30 2 *"', "1979-05-27T07:32:00Z", "[1, 2]", "{}", '""', "true", "0", "-1",
]  # fmt: skip
VALUE_START = re.compile(r"= ")
VALUE_END = re.compile(r"[,}\n]")


@st.composite
def mutated_base(draw: st.DrawFn) -> str:
    """FUZZ_BASE with a few values replaced by hostile ones, or snippets spliced in."""
    text = FUZZ_BASE
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            starts = [m.end() for m in VALUE_START.finditer(text)] or [0]
            at = draw(st.sampled_from(starts))
            end = VALUE_END.search(text, at)
            stop = end.start() if end else len(text)
            text = text[:at] + draw(st.sampled_from(HOSTILE_VALUES)) + text[stop:]
        else:
            at = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 8))
            text = text[:at] + draw(st.sampled_from(HOSTILE)) + text[at + cut :]
    return text


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=200,
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=st.one_of(toml_ish(), mutated_base(), st.text(TOML_CHARS, max_size=300)))
def test_fuzzed_config_gives_config_or_positioned_error(fuzz_dir: Path, text: str) -> None:
    result = outcome(text, fuzz_dir)
    if isinstance(result, ConfigError):
        assert result.issues
        for issue in result.issues:
            assert issue.line >= 1
            assert issue.col >= 1
        assert "\x1b" not in str(result)
    else:
        assert_runnable(result)


TEN_YEARS = 10 * 365 * 86400


def assert_runnable(config: Config) -> None:
    """What `check` accepts, `run` can use: finite, bounded numbers and printable names."""
    limits = [config.supervisor.budget, *(loop.budget.limits for loop in config.loops)]
    for limit in limits:
        assert limit.usd is None or 0 < limit.usd < 1e16
        assert limit.tokens is None or 0 < limit.tokens < 10**16
        for seconds in (limit.wall, limit.cpu):
            assert seconds is None or 0 < seconds <= TEN_YEARS
    for spec in config.loops:
        assert for_terminal_line(spec.name) == spec.name
        assert 0 < spec.max_iterations < 10**16
        if spec.schedule is not None:
            every = Schedule.parse(spec.schedule).every
            assert every is None or 0 < every <= TEN_YEARS
        for check in spec.checks:
            assert 0 < check.timeout <= TEN_YEARS
