"""The shared text rules: valid UTF-8 in, nothing a terminal would obey out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supervisor.textsafe import for_terminal, for_terminal_line, utf8, valid_text


def test_lone_surrogates_become_replacement_characters() -> None:
    assert valid_text("evil \ud800 and \udfff") == "evil \ufffd and \ufffd"
    assert utf8("a\ud800") == "a\ufffd".encode()


def test_terminal_escapes_are_shown_not_obeyed() -> None:
    hostile = "\x1b]52;c;ZXZpbA==\x07\x1b]0;title\x07\x1b[2J\x1b[6n\rhidden\x9b1m"
    shown = for_terminal(hostile)
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\r" not in shown
    assert "\x9b" not in shown
    assert shown.startswith("\\x1b]52;c;")


def test_newline_and_tab_stay_in_text_but_not_in_one_line_fields() -> None:
    assert for_terminal("a\n\tb") == "a\n\tb"
    assert for_terminal_line("loop\nname\x1b") == "loop\\nname\\x1b"


@given(st.text())
def test_any_text_encodes_and_prints_safely(text: str) -> None:
    utf8(text)
    shown = for_terminal(text)
    shown.encode("utf-8")
    assert not any(ord(c) < 0x20 and c not in "\n\t" for c in shown)
