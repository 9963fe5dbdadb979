"""Budget ledgers: reserve → consume → release across a loop + global chain.

The property test drives many concurrent anyio tasks against one global ledger and
several loop ledgers and checks after every step that no ledger ever holds (spent +
reserved) more than its limit, and that the totals are exactly what was settled.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.agents.base import BudgetExhausted, Usage
from supervisor.budget import Charge, Ledger, Reservation, Shortfall
from supervisor.spec import Limits
from supervisor.turn_budget import LedgerTurnBudget

EPS = 1e-9


def chain(
    global_tokens: int | None = 1000,
    loop_tokens: int | None = 400,
    global_usd: float | None = None,
    loop_usd: float | None = None,
) -> tuple[Ledger, Ledger]:
    top = Ledger("global", Limits(tokens=global_tokens, usd=global_usd))
    return top, Ledger("L", Limits(tokens=loop_tokens, usd=loop_usd), parent=top)


def reserve(ledger: Ledger, minimum: int, wanted: int, per_token: float = 0.0) -> Reservation:
    res = ledger.try_reserve(minimum=minimum, wanted=wanted, usd_per_token=per_token)
    assert isinstance(res, Reservation), res
    return res


def test_reservation_is_taken_from_every_ledger_of_the_chain() -> None:
    top, loop = chain()
    res = reserve(loop, 10, 100, per_token=0.001)
    assert res.tokens == 100
    assert res.usd == pytest.approx(0.1)
    for ledger in (top, loop):
        assert ledger.tokens_reserved == 100
        assert ledger.usd_reserved == pytest.approx(0.1)
        assert ledger.tokens_spent == 0


def test_grant_is_clamped_to_what_the_tightest_ledger_has_left() -> None:
    _top, loop = chain(global_tokens=1000, loop_tokens=400)
    assert reserve(loop, 1, 10_000).tokens == 400
    top2, loop2 = chain(global_tokens=150, loop_tokens=400)
    assert reserve(loop2, 1, 10_000).tokens == 150
    assert top2.tokens_left() == 0


def test_grant_is_clamped_by_usd_left() -> None:
    _top, loop = chain(global_tokens=None, loop_tokens=None, global_usd=1.0)
    res = reserve(loop, 1, 10_000, per_token=0.01)
    assert res.tokens == 100
    assert res.usd == pytest.approx(1.0)


def test_consume_draws_on_the_reservation_and_release_gives_back_the_rest() -> None:
    top, loop = chain()
    res = reserve(loop, 10, 300)
    loop.consume(res, Charge(tokens=120))
    for ledger in (top, loop):
        assert ledger.tokens_spent == 120
        assert ledger.tokens_reserved == 180
    loop.release(res)
    for ledger in (top, loop):
        assert ledger.tokens_spent == 120
        assert ledger.tokens_reserved == 0
        assert ledger.overshoot_tokens == 0
    assert top.tokens_left() == 880
    assert loop.tokens_left() == 280


def test_release_is_idempotent() -> None:
    top, loop = chain()
    res = reserve(loop, 1, 200)
    loop.release(res)
    loop.release(res)
    assert top.tokens_reserved == loop.tokens_reserved == 0
    assert top.tokens_left() == 1000
    with pytest.raises(RuntimeError):
        loop.consume(res, Charge(tokens=1))


def test_settle_books_usage_and_frees_the_rest() -> None:
    top, loop = chain(global_usd=1.0, loop_usd=0.5)
    res = reserve(loop, 1, 300, per_token=0.001)
    loop.settle(res, Charge(tokens=100, usd=0.1))
    assert (top.tokens_spent, top.tokens_reserved) == (100, 0)
    assert top.usd_spent == pytest.approx(0.1)
    assert top.usd_reserved == pytest.approx(0.0)
    assert res.settled


def test_shortfall_can_wait_while_other_turns_hold_reservations() -> None:
    top, loop_a = chain(global_tokens=1000, loop_tokens=None)
    loop_b = Ledger("B", Limits(), parent=top)
    held = reserve(loop_a, 1, 900)
    refused = loop_b.try_reserve(minimum=200, wanted=500)
    assert isinstance(refused, Shortfall)
    assert refused.scope == "global"
    assert refused.dimension == "tokens"
    assert refused.can_wait
    assert "reserved by running turns" in refused.reason
    loop_a.release(held)
    assert isinstance(loop_b.try_reserve(minimum=200, wanted=500), Reservation)


def test_shortfall_cannot_wait_when_the_budget_is_spent() -> None:
    top, loop = chain(global_tokens=1000, loop_tokens=None)
    loop.charge(Charge(tokens=950))
    refused = loop.try_reserve(minimum=100, wanted=200)
    assert isinstance(refused, Shortfall)
    assert not refused.can_wait
    assert refused.reason == "global tokens budget used up"
    loop.charge(Charge(tokens=50))
    refused = loop.try_reserve(minimum=0, wanted=0)
    assert isinstance(refused, Shortfall)
    assert not refused.can_wait
    assert loop.crossed() is not None
    assert top.exhausted_dimension() == "tokens"


def test_loop_limit_refuses_before_the_global_one() -> None:
    _top, loop = chain(global_tokens=10_000, loop_tokens=100)
    loop.charge(Charge(tokens=100))
    refused = loop.try_reserve(minimum=1, wanted=10)
    assert isinstance(refused, Shortfall)
    assert refused.scope == "L"
    assert refused.reason == "loop 'L' tokens budget used up"


def test_usd_shortfall_does_not_wait_on_rounding_residue() -> None:
    """After every reservation is released nothing is held, so a USD shortfall must
    say `can_wait=False`; float residue in usd_reserved used to make it wait forever."""
    top, loop = chain(global_tokens=None, loop_tokens=None, global_usd=1.0)
    a = reserve(loop, 1, 2, per_token=0.001)
    b = reserve(loop, 1, 7, per_token=0.001)
    loop.release(a)
    loop.release(b)
    assert top.usd_reserved == 0.0
    loop.charge(Charge(usd=0.9995))
    refused = loop.try_reserve(minimum=1000, wanted=1000, usd_per_token=0.001)
    assert isinstance(refused, Shortfall)
    assert refused.dimension == "usd"
    assert not refused.can_wait, f"usd_reserved residue {top.usd_reserved!r}"


@pytest.mark.anyio
async def test_turn_budget_does_not_hang_on_usd_rounding_residue() -> None:
    top = Ledger("global", Limits(usd=1.0))
    first = LedgerTurnBudget(Ledger("A", Limits(), parent=top))
    second = LedgerTurnBudget(Ledger("B", Limits(), parent=top))
    await first.reserve(input_tokens=1, max_output_tokens=1, usd_per_token=0.001)
    await second.reserve(input_tokens=1, max_output_tokens=6, usd_per_token=0.001)
    first.release()
    second.release()
    top.charge(Charge(usd=0.9995))
    with anyio.fail_after(2), pytest.raises(BudgetExhausted, match="global usd budget used up"):
        await first.reserve(input_tokens=500, max_output_tokens=500, usd_per_token=0.001)


def test_overshoot_recorded_only_when_charged_beyond_a_reservation() -> None:
    top, loop = chain(global_tokens=1000, loop_tokens=300)
    res = reserve(loop, 1, 300)
    loop.consume(res, Charge(tokens=300))  # exactly the grant: no overshoot
    assert loop.overshoot_tokens == top.overshoot_tokens == 0
    loop.consume(res, Charge(tokens=25))  # a CLI that could not be clamped
    loop.release(res)
    assert loop.tokens_spent == 325
    assert loop.overshoot_tokens == 25
    assert top.overshoot_tokens == 0  # the global ledger still had room
    assert top.tokens_reserved == loop.tokens_reserved == 0


def test_cpu_is_charged_on_the_whole_chain() -> None:
    top = Ledger("global", Limits(cpu=1.0))
    loop = Ledger("L", Limits(), parent=top)
    loop.charge_cpu(0.6)
    loop.charge_cpu(0.0)
    assert top.cpu_spent == pytest.approx(0.6)
    assert loop.crossed() is None
    loop.charge_cpu(0.5)
    crossed = loop.crossed()
    assert crossed is not None
    assert (crossed.scope, crossed.dimension) == ("global", "cpu")


@pytest.mark.anyio
async def test_turn_budget_waits_then_resumes_when_a_reservation_is_released() -> None:
    top = Ledger("global", Limits(tokens=1000))
    a = LedgerTurnBudget(Ledger("A", Limits(), parent=top))
    waits: list[str] = []
    resumed: list[bool] = []
    b = LedgerTurnBudget(
        Ledger("B", Limits(), parent=top),
        on_wait=waits.append,
        on_resume=lambda: resumed.append(True),
    )
    assert await a.reserve(input_tokens=100, max_output_tokens=800) == 800
    granted: list[int] = []
    async with anyio.create_task_group() as tg:

        async def second() -> None:
            granted.append(await b.reserve(input_tokens=100, max_output_tokens=500))

        tg.start_soon(second)
        await anyio.sleep(0.05)
        assert waits == ["global tokens budget reserved by running turns"]
        assert not granted
        a.charge(Usage(input_tokens=100, output_tokens=200))
        a.release()
    assert granted == [500]
    assert resumed == [True]
    assert top.tokens_spent == 300
    assert top.tokens_reserved == 600


@pytest.mark.anyio
async def test_turn_budget_raises_when_nothing_can_free_up() -> None:
    top = Ledger("global", Limits(tokens=100))
    budget = LedgerTurnBudget(Ledger("A", Limits(), parent=top))
    with pytest.raises(BudgetExhausted, match="global tokens budget used up"):
        await budget.reserve(input_tokens=100, max_output_tokens=50)


# -- property: concurrent loops never push a ledger past its limits -----------------
def _within_limits(ledgers: list[Ledger]) -> None:
    for led in ledgers:
        lim = led.limits
        assert led.tokens_reserved >= 0
        if lim.tokens is not None:
            assert led.tokens_spent + led.tokens_reserved <= lim.tokens, led.statistics()
        if lim.usd is not None:
            assert led.usd_spent + led.usd_reserved <= lim.usd + EPS, led.statistics()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_loops=st.integers(1, 12),
    global_tokens=st.integers(1, 5000),
    global_usd=st.one_of(st.none(), st.floats(0.001, 5.0)),
    loop_tokens=st.lists(st.one_of(st.none(), st.integers(1, 3000)), min_size=12, max_size=12),
    loop_usd=st.lists(st.one_of(st.none(), st.floats(0.001, 2.0)), min_size=12, max_size=12),
    per_token=st.sampled_from([0.0, 1e-6, 3e-6, 1.5e-5, 1e-4, 0.001]),
)
def test_concurrent_loops_never_overshoot_any_ledger(
    seed: int,
    n_loops: int,
    global_tokens: int,
    global_usd: float | None,
    loop_tokens: list[int | None],
    loop_usd: list[float | None],
    per_token: float,
) -> None:
    top = Ledger("global", Limits(tokens=global_tokens, usd=global_usd))
    loops = [
        Ledger(f"loop{i}", Limits(tokens=loop_tokens[i], usd=loop_usd[i]), parent=top)
        for i in range(n_loops)
    ]
    everything = [top, *loops]
    settled_tokens = dict.fromkeys(range(n_loops), 0)
    settled_usd = dict.fromkeys(range(n_loops), 0.0)
    ended: list[str] = []

    async def one_loop(i: int) -> None:
        rng = random.Random(f"{seed}:{i}")
        budget = LedgerTurnBudget(loops[i])
        for _turn in range(rng.randint(1, 8)):
            input_tokens = rng.randint(1, 300)
            try:
                granted = await budget.reserve(
                    input_tokens=input_tokens,
                    max_output_tokens=rng.randint(1, 1500),
                    usd_per_token=per_token,
                )
            except BudgetExhausted as exc:
                ended.append(exc.reason)
                return
            _within_limits(everything)
            res = budget._reservation
            assert res is not None
            held_tokens = res.tokens
            assert granted == held_tokens - input_tokens
            # Report usage in a few deltas, yielding to the other loops in between.
            total = rng.randint(0, held_tokens)
            spent = 0
            while spent < total:
                await anyio.lowlevel.checkpoint()
                delta = min(total - spent, rng.randint(1, max(1, total)))
                usd = delta * per_token
                budget.charge(Usage(output_tokens=delta, usd=usd))
                settled_tokens[i] += delta
                settled_usd[i] += usd
                spent += delta
                _within_limits(everything)
            await anyio.lowlevel.checkpoint()
            budget.release()
            _within_limits(everything)

    async def main() -> None:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(n_loops):
                    tg.start_soon(one_loop, i)

    anyio.run(main)

    _within_limits(everything)
    assert top.tokens_reserved == 0
    assert top.usd_reserved == pytest.approx(0.0, abs=EPS)
    for i, led in enumerate(loops):
        assert led.tokens_reserved == 0
        assert led.tokens_spent == settled_tokens[i]
        assert led.usd_spent == pytest.approx(settled_usd[i], abs=EPS)
        assert led.overshoot_tokens == 0
    assert top.tokens_spent == sum(settled_tokens.values())
    assert top.usd_spent == pytest.approx(sum(settled_usd.values()), abs=EPS)
    assert top.overshoot_tokens == 0
    assert top.overshoot_usd == pytest.approx(0.0, abs=EPS)
