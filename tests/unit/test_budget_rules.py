"""The pure budget rules (quotaflow.ledger.budgets): money is exact, a reservation is held at
every level or none, a refusal names its level, and no sequence of reservations and endings
takes any level over its limit in tokens or money."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger.budgets import (
    Hold,
    Level,
    LevelBalance,
    Price,
    decide_levels,
    end_in,
    format_usd,
    parse_usd,
    period_in_zone,
    reserve_in,
    settled_usd,
    worst_case_usd,
)

TENANT = Level(LevelScope.TENANT, "acme", "acme", limit_tokens=10_000, limit_usd=5_000_000)
TEAM = Level(LevelScope.TEAM, "ml", "acme", limit_tokens=None, limit_usd=5_000_000)


def test_dollars_parse_to_exact_micro_dollars_and_format_back():
    assert parse_usd("5") == 5_000_000
    assert parse_usd("0.0042") == 4_200
    assert parse_usd("0.000001") == 1
    assert format_usd(4_200) == "0.004200"
    assert format_usd(parse_usd("123.456789")) == "123.456789"


@pytest.mark.parametrize("text", ["0.0000001", "-1", "abc", "nan", "inf", ""])
def test_an_amount_finer_than_a_micro_dollar_or_not_a_number_is_refused(text):
    with pytest.raises(ValueError):
        parse_usd(text)


def test_a_worst_case_prices_every_input_token_and_max_tokens_of_output_rounded_up():
    price = Price("m", 1, input_per_mtok=parse_usd("0.15"), output_per_mtok=parse_usd("0.60"))
    # 100 * 0.15 + 50 * 0.60 = 45 dollar-tokens per million: 45 micro-dollars exactly
    assert worst_case_usd(price, 100, 50) == 45
    # 1 input token at 0.15 $/Mtok is 0.15 micro-dollars: charged as 1
    assert worst_case_usd(price, 1, 0) == 1


def test_a_settlement_charges_input_then_output_tokens_at_the_reserved_price_never_more():
    price = Price("m", 1, input_per_mtok=1_000_000, output_per_mtok=3_000_000)
    reserved = worst_case_usd(price, 10, 20)  # 10 + 60 = 70
    assert settled_usd(price, 10, charged_tokens=15, reserved_usd=reserved) == 25
    assert settled_usd(price, 10, charged_tokens=5, reserved_usd=reserved) == 5
    assert settled_usd(price, 10, charged_tokens=999, reserved_usd=reserved) == reserved


def test_the_refusal_names_the_team_and_its_money_left():
    spent = LevelBalance(spent_usd=5_000_000 - 4_200)
    refusal = decide_levels([(TEAM, spent), (TENANT, LevelBalance())], tokens=1, usd=5_000)
    assert refusal is not None and refusal.level == TEAM
    assert refusal.message == ("team 'ml' of tenant 'acme' has $0.004200 of $5.000000 left "
                               "this period")
    assert refusal.reason.startswith("quota_exceeded: team 'ml'")


def test_the_first_level_over_its_limit_refuses_in_the_order_key_team_tenant():
    key = Level(LevelScope.KEY, "k1", "acme", limit_tokens=100)
    full = LevelBalance(reserved_tokens=100)
    refusal = decide_levels([(key, full), (TEAM, LevelBalance()), (TENANT, full)], 1, 0)
    assert refusal is not None and refusal.level == key
    assert refusal.message == "key 'k1' of tenant 'acme' has 0 of 100 tokens left this period"


def test_a_refused_reservation_holds_nothing_at_any_level():
    key = Level(LevelScope.KEY, "k1", "acme", limit_tokens=5)
    book, refusal = reserve_in({}, [key, TEAM, TENANT], tokens=6, usd=1)
    assert refusal is not None and book == {}


def test_unlimited_levels_still_count_what_they_hold():
    key = Level(LevelScope.KEY, "k1", "acme")
    book, refusal = reserve_in({}, [key], tokens=7, usd=3)
    assert refusal is None and book[key.key] == LevelBalance(reserved_tokens=7, reserved_usd=3)


def test_a_team_id_is_scoped_to_its_tenant():
    other = Level(LevelScope.TEAM, "ml", "globex")
    assert other.key != TEAM.key


def test_a_monthly_period_is_the_tenants_calendar_month_in_its_zone():
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert period_in_zone("month", at) == "2026-11"
    assert period_in_zone("month", at, "Asia/Tokyo") == "2026-12"
    assert period_in_zone("day", at, "America/New_York") == "2026-11-30"


# -- no level over its limit, for any sequence ----------------------------------------------

KEYS = [Level(LevelScope.KEY, f"k{i}", "acme", limit_tokens=400, limit_usd=4_000)
        for i in range(3)]
SMALL_TEAM = Level(LevelScope.TEAM, "ml", "acme", limit_tokens=700, limit_usd=6_000)
ORG = Level(LevelScope.TENANT, "acme", "acme", limit_tokens=1_000, limit_usd=20_000)
PRICES = [Price("m", 1, 1_000_000, 2_000_000), Price("m", 2, 5_000_000, 20_000_000)]

steps = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 2), st.integers(1, 40), st.integers(1, 200),
              st.integers(0, 1)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 300)),
    st.tuples(st.just("release"), st.integers(0, 50)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_no_level_goes_over_its_limit_in_tokens_or_money(seq):
    book: dict = {}
    open_: list[tuple[list[Level], Hold, Price, int]] = []
    for step in seq:
        if step[0] == "reserve":
            _, k, prompt, max_tokens, p = step
            levels = [KEYS[k], SMALL_TEAM, ORG]
            hold = Hold(prompt + max_tokens, worst_case_usd(PRICES[p], prompt, max_tokens))
            book, refusal = reserve_in(book, levels, hold.tokens, hold.usd)
            if refusal is None:
                open_.append((levels, hold, PRICES[p], prompt))
        elif open_:
            levels, hold, price, prompt = open_.pop(step[1] % len(open_))
            if step[0] == "settle":
                charged = min(step[2], hold.tokens)
                ended = Hold(hold.tokens, hold.usd, charged,
                             settled_usd(price, prompt, charged, hold.usd))
                book = end_in(book, levels, LedgerKind.RESERVATION_SETTLED, ended)
            else:
                book = end_in(book, levels, LedgerKind.RESERVATION_RELEASED, hold)
        for lv in [*KEYS, SMALL_TEAM, ORG]:
            b = book.get(lv.key, LevelBalance())
            assert lv.limit_tokens is not None and lv.limit_usd is not None
            assert b.reserved_tokens >= 0 and b.used_tokens() <= lv.limit_tokens
            assert b.reserved_usd >= 0 and b.used_usd() <= lv.limit_usd
    # the team holds exactly what its keys hold
    team = book.get(SMALL_TEAM.key, LevelBalance())
    keys = [book.get(k.key, LevelBalance()) for k in KEYS]
    assert team.used_tokens() == sum(b.used_tokens() for b in keys)
    assert team.used_usd() == sum(b.used_usd() for b in keys)
