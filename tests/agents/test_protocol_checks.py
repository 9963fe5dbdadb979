"""`agents.base.forks_sessions` / `accounted`: `isinstance` against a runtime-checkable
protocol, decided once per class (issue 12: Python 3.11 walks the protocol's members
at every check, twice per iteration). Untimed: the answers, and that a class is
checked once."""

from __future__ import annotations

from unittest import mock

from supervisor.agents import base
from supervisor.agents.base import Accounted, ForksSessions, accounted, forks_sessions


class Forking:
    def fork_session(self, session_id: str, at: str | None = None) -> None: ...

    @property
    def session_at(self) -> str | None:
        return None

    @property
    def forking(self) -> str | None:
        return None

    @property
    def fork_at(self) -> str | None:
        return None

    def account(self) -> str:
        return "me"


class Plain:
    pass


def test_the_answers_are_isinstance_s() -> None:
    for obj in (Forking(), Plain(), object(), "text"):
        assert forks_sessions(obj) == isinstance(obj, ForksSessions)
        assert accounted(obj) == isinstance(obj, Accounted)
    assert forks_sessions(Forking())
    assert accounted(Forking())
    assert not forks_sessions(Plain())


def test_a_class_is_checked_once() -> None:
    class Fresh(Forking):
        pass

    with mock.patch.object(base, "isinstance", create=True, wraps=isinstance) as checks:
        for _ in range(5):
            assert forks_sessions(Fresh())
            assert accounted(Fresh())
    assert checks.call_count == 2  # one per protocol, for all five instances
