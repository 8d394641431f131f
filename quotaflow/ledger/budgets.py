"""Budget levels and money, pure: no I/O, no clock.

A request is held at every level it belongs to: its key, its key's team (if any) and its
tenant. Each level may limit tokens and money per period (None: unlimited there). A request
reserves its worst case at every level at once or at none: the first level (in the order key,
team, tenant) that it would take over a limit refuses it, and the refusal names that level.

Money is an exact integer of micro-dollars everywhere inside; outside it is a decimal string
(`parse_usd`, `format_usd`). A price is micro-dollars per million tokens, so a cost is an
integer division, rounded up to the next micro-dollar: a request is never charged less than
its tokens cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from quotaflow.events.status import LedgerKind, LedgerReason, LevelScope

MICROS = 1_000_000  # micro-dollars in a dollar
TOKENS_PER_PRICE = 1_000_000  # a price is per million tokens


def parse_usd(text: str) -> int:
    """`"5.25"` -> 5_250_000 micro-dollars. Refuses negatives, non-numbers and more than six
    decimals (a fraction of a micro-dollar cannot be kept exactly)."""
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {text!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"an amount of dollars must be a number >= 0, got {text!r}")
    micros = d * MICROS
    if micros != micros.to_integral_value():
        raise ValueError(f"at most 6 decimals (a micro-dollar), got {text!r}")
    return int(micros)


def format_usd(micros: int) -> str:
    """5_250_000 -> `"5.250000"`: always six decimals, exact."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{frac:06d}"


@dataclass(frozen=True)
class Price:
    """A model's price version: micro-dollars per million input and output tokens. A
    reservation is priced at the version in force when it was made, and settled at it."""

    model: str
    version: int
    input_per_mtok: int
    output_per_mtok: int

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """What the tokens cost in micro-dollars, rounded up."""
        total = input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        return -(-total // TOKENS_PER_PRICE)


FREE = Price("", 0, 0, 0)  # a model with no price: tokens are still counted, money is not


def worst_case_usd(price: Price, input_tokens: int, max_tokens: int) -> int:
    """A reservation's money: every input token and max_tokens of output at `price`."""
    return price.cost(input_tokens, max_tokens)


def settled_usd(price: Price, input_tokens: int, charged_tokens: int, reserved_usd: int) -> int:
    """A settlement's charge in micro-dollars: the input tokens and the output tokens among
    `charged_tokens` at the reservation's price, never more than it reserved."""
    charged_input = min(input_tokens, charged_tokens)
    charged_output = max(0, charged_tokens - input_tokens)
    return min(reserved_usd, price.cost(charged_input, charged_output))


@dataclass(frozen=True)
class Level:
    """One budget level and its limits per period (None: unlimited)."""

    scope: LevelScope
    id: str
    tenant: str
    limit_tokens: int | None = None
    limit_usd: int | None = None

    @property
    def key(self) -> tuple[LevelScope, str]:
        """The level's identity in a book: a team's id is unique within its tenant only."""
        if self.scope is LevelScope.TEAM:
            return (self.scope, f"{self.tenant}/{self.id}")
        return (self.scope, self.id)

    def describe(self) -> str:
        """How a refusal names the level: `team 'ml' of tenant 'acme'`."""
        if self.scope is LevelScope.TENANT:
            return f"tenant '{self.tenant}'"
        return f"{self.scope.value} '{self.id}' of tenant '{self.tenant}'"


@dataclass(frozen=True)
class LevelBalance:
    """What one level holds and has spent in one period, in tokens and micro-dollars."""

    reserved_tokens: int = 0
    spent_tokens: int = 0
    reserved_usd: int = 0
    spent_usd: int = 0

    def used_tokens(self) -> int:
        return self.reserved_tokens + self.spent_tokens

    def used_usd(self) -> int:
        return self.reserved_usd + self.spent_usd


@dataclass(frozen=True)
class Hold:
    """What one reservation holds at each of its levels, and what ending it charges."""

    tokens: int
    usd: int
    charged_tokens: int = 0  # at settlement; the rest is returned
    charged_usd: int = 0


def apply_hold(b: LevelBalance, kind: LedgerKind, hold: Hold) -> LevelBalance:
    """A level's balance after a reservation's event: the only place that says how each event
    moves a level's tokens and money (the same at key, team and tenant)."""
    if kind is LedgerKind.TOKENS_RESERVED:
        return replace(b, reserved_tokens=b.reserved_tokens + hold.tokens,
                       reserved_usd=b.reserved_usd + hold.usd)
    if kind is LedgerKind.RESERVATION_SETTLED:
        return LevelBalance(b.reserved_tokens - hold.tokens, b.spent_tokens + hold.charged_tokens,
                            b.reserved_usd - hold.usd, b.spent_usd + hold.charged_usd)
    if kind in (LedgerKind.RESERVATION_RELEASED, LedgerKind.RESERVATION_EXPIRED):
        return replace(b, reserved_tokens=b.reserved_tokens - hold.tokens,
                       reserved_usd=b.reserved_usd - hold.usd)
    return b


@dataclass(frozen=True)
class Refusal:
    """The level that refused a reservation and what it had left."""

    level: Level
    unit: str  # "tokens" or "usd"
    remaining: int
    limit: int

    @property
    def reason(self) -> str:
        """The outcome's reason: `quota_exceeded: <which level, what is left>`."""
        return f"{LedgerReason.QUOTA_EXCEEDED}: {self.message}"

    @property
    def message(self) -> str:
        if self.unit == "usd":
            left = f"${format_usd(self.remaining)} of ${format_usd(self.limit)}"
        else:
            left = f"{self.remaining} of {self.limit} tokens"
        return f"{self.level.describe()} has {left} left this period"


def decide_levels(levels: Sequence[tuple[Level, LevelBalance]], tokens: int,
                  usd: int) -> Refusal | None:
    """None when `tokens` and `usd` fit every level's limits, else the first level (in the
    order given: key, team, tenant) they would take over, tokens before money."""
    for level, b in levels:
        if level.limit_tokens is not None and b.used_tokens() + tokens > level.limit_tokens:
            return Refusal(level, "tokens", max(0, level.limit_tokens - b.used_tokens()),
                           level.limit_tokens)
        if level.limit_usd is not None and b.used_usd() + usd > level.limit_usd:
            return Refusal(level, "usd", max(0, level.limit_usd - b.used_usd()),
                           level.limit_usd)
    return None


@dataclass(frozen=True)
class LevelView:
    """One level of a key as `GET /v1/quota` shows it: its limits, its balance, its period."""

    level: Level
    balance: LevelBalance
    period: str

    def as_json(self) -> dict[str, object]:
        """`{"scope", "id", "tokens": {...}, "usd": {...}}`: limit and remaining None when
        unlimited, money as decimal strings."""
        b, lv = self.balance, self.level

        def unit(limit: int | None, reserved: int, spent: int,
                 show: Callable[[int], object]) -> dict[str, object]:
            return {"limit": None if limit is None else show(limit), "reserved": show(reserved),
                    "spent": show(spent),
                    "remaining": None if limit is None else show(max(0, limit - reserved - spent))}

        return {"scope": lv.scope.value, "id": lv.id,
                "tokens": unit(lv.limit_tokens, b.reserved_tokens, b.spent_tokens, int),
                "usd": unit(lv.limit_usd, b.reserved_usd, b.spent_usd, format_usd)}


Book = Mapping[tuple[LevelScope, str], LevelBalance]


def reserve_in(book: Book, levels: Iterable[Level], tokens: int,
               usd: int) -> tuple[dict[tuple[LevelScope, str], LevelBalance], Refusal | None]:
    """Reserve at every level or none: the book after, and the refusal if any."""
    levels = list(levels)
    refusal = decide_levels([(lv, book.get(lv.key, LevelBalance())) for lv in levels],
                            tokens, usd)
    out = dict(book)
    if refusal is None:
        for lv in levels:
            out[lv.key] = apply_hold(out.get(lv.key, LevelBalance()), LedgerKind.TOKENS_RESERVED,
                                     Hold(tokens, usd))
    return out, refusal


def end_in(book: Book, levels: Iterable[Level], kind: LedgerKind,
           hold: Hold) -> dict[tuple[LevelScope, str], LevelBalance]:
    """End a reservation at every level it was held at (settled, released or expired)."""
    out = dict(book)
    for lv in levels:
        out[lv.key] = apply_hold(out.get(lv.key, LevelBalance()), kind, hold)
    return out


def period_in_zone(plan_period: str, at: datetime, tz: str = "UTC") -> str:
    """The period a moment belongs to in the tenant's time zone: a monthly plan's period is
    the tenant's calendar month (`2026-11`), a daily plan's its calendar day."""
    local = at.astimezone(ZoneInfo(tz))
    if plan_period == "day":
        return local.strftime("%Y-%m-%d")
    if plan_period == "month":
        return local.strftime("%Y-%m")
    raise ValueError(f"plan period must be 'day' or 'month', got {plan_period!r}")
