"""The seeded plan of a chaos run: its tenants, every send (new events, exact resends, bad
inputs) and every fault with its time. Pure: the same arguments give the same plan."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FUNCTIONS = ("admit", "estimate", "reserve", "infer", "settle", "record")
FAULT_KINDS = ("kill", "broker", "broker-pause", "pg", "redis", "join", "leave")
# Kinds that name a consumer step: a member of its group starts (join) or stops gracefully
# (leave; never the last one running).
MEMBERSHIP = ("join", "leave")
# A run's kinds unless told: a broker pause is for a cluster (one node of three paused; on one
# broker every send would wait it out).
DEFAULT_KINDS = ("kill", "broker", "pg", "redis")
# Inputs the door must answer 4xx (`load.bad_request` builds each).
BAD_INPUTS = ("invalid-json", "deep-json", "nul-in-id", "nul-in-source", "lone-surrogate",
              "nul-in-prompt", "unknown-key", "missing-id", "max-tokens-zero",
              "text-plain", "too-large", "ce-datacontenttype-header", "time-not-rfc3339",
              "relative-dataschema", "fraction-extension", "source-not-uri",
              "temperature-nan", "temperature-huge", "top-p-over-one", "seed-negative")
# What one tenant does with many requests or a hang-up (`chaos.hostile`), once each a run.
HOSTILE_INPUTS = ("wait-flood", "get-flood", "hangup-mid-wait", "hangup-mid-stream",
                  "retry-after-5xx")
RESEND_SHARE = 0.10
TWIN_SHARE = 0.3  # of resends, sent twice at the same moment
SMALL_GRANT = 150  # tokens: about ten stand-in requests, then rejections
LARGE_GRANT = 10_000_000
PROBE_TENANT = "chaos-probe"
HOSTILE_TENANT = "chaos-hostile"
LEVELS_TENANT = "chaos-levels"
LEVEL_TEAMS = ("ml", "ops")
LEVEL_KEYS = tuple(f"{team}-{i}" for team in LEVEL_TEAMS for i in range(2))  # two a team
# Micro-dollars per million tokens in and out: the price at the start, and from the middle.
PRICES = ((10_000_000, 30_000_000), (20_000_000, 60_000_000))


@dataclass(frozen=True)
class TenantSpec:
    """A tenant of the run and its grant per period."""

    name: str
    tokens: int


@dataclass(frozen=True)
class LevelsSpec:
    """The tenant with teams: its money limit (micro-dollars), each team's and key's limits
    (tokens, micro-dollars), the price versions of the model (the first set before the load,
    the next in its middle) and the alerts, (scope, team or key name, percent)."""

    tenant: str
    usd: int
    teams: tuple[tuple[str, int, int], ...]
    keys: tuple[tuple[str, str, int, int], ...]  # name, team, tokens, usd
    prices: tuple[tuple[int, int], ...]
    alerts: tuple[tuple[str, str, int], ...]



def level_key_names() -> list[str]:
    """The loader's names of the levels tenant's team keys (`Send.key`)."""
    return [f"{LEVELS_TENANT}/{name}" for name in LEVEL_KEYS]


def planned_charge(s: Send, price: tuple[int, int]) -> tuple[int, int]:
    """What a new send is charged on the stand-in, tokens and micro-dollars at `price`: its
    prompt's words and the template's token in, as many words out (it echoes the prompt)
    up to max_tokens."""
    words = len(str(s.data["prompt"]).split())
    n_in, n_out = 1 + words, min(words, int(s.data["max_tokens"]))
    return n_in + n_out, -(-(n_in * price[0] + n_out * price[1]) // 1_000_000)


def levels(sends: list[Send]) -> LevelsSpec:
    """The levels tenant's limits, sized from what `sends` charge its teams (the second half
    at the second price) so that they run out late in the load, after the price change: team
    ml by its tokens (70 % of its sends'), team ops by its money (75 %). Each team's limits
    are smaller than the sum of its two keys' (each key may take 3/4 of its team's), and the
    tenant's money smaller than its teams'. Alerts at 50 % on team ops (its usd crosses) and
    on key ml-0 (its tokens cross)."""
    tokens = dict.fromkeys(LEVEL_TEAMS, 0)
    usd = dict.fromkeys(LEVEL_TEAMS, 0)
    for s in sends:
        if s.kind == "new" and s.key:
            team = s.key.rsplit("/", 1)[1].rsplit("-", 1)[0]
            t, u = planned_charge(s, PRICES[0] if s.index < len(sends) / 2 else PRICES[1])
            tokens[team] += t
            usd[team] += u
    teams = (("ml", max(40, tokens["ml"] * 7 // 10), max(400, usd["ml"] * 12 // 10)),
             ("ops", max(40, tokens["ops"] * 12 // 10), max(400, usd["ops"] * 75 // 100)))
    keys = tuple((name, team, lim_tokens * 3 // 4, lim_usd * 3 // 4)
                 for team, lim_tokens, lim_usd in teams
                 for name in LEVEL_KEYS if name.startswith(team + "-"))
    return LevelsSpec(LEVELS_TENANT, sum(t[2] for t in teams) * 9 // 10, teams, keys, PRICES,
                      (("team", "ops", 50), ("key", "ml-0", 50)))


@dataclass(frozen=True)
class Send:
    """One planned POST. `kind` is new, resend (the exact event of send `original`), bad
    (the bad input named `bad`) or hostile (the client `bad` names, `chaos.hostile`); a
    `twin` is sent twice at the same moment."""

    index: int
    kind: str
    tenant: str
    source: str
    ce_id: str
    data: dict[str, Any] = field(default_factory=dict)
    original: int | None = None
    twin: bool = False
    bad: str = ""
    key: str = ""


@dataclass(frozen=True)
class Fault:
    """A fault to inject `at_s` seconds after the load starts; `target` names the process
    for a kill."""

    at_s: float
    kind: str
    target: str


def tenants(count: int) -> list[TenantSpec]:
    """`count` tenants; every third has a small grant, so some of its requests are rejected."""
    return [TenantSpec(f"chaos-{i}", SMALL_GRANT if i % 3 == 2 else LARGE_GRANT)
            for i in range(max(1, count))]


def sends(n: int, tenant_names: list[str], model: str, seed: int,
          team_keys: list[str] | None = None) -> list[Send]:
    """`n` sends: about 10% exact resends of a recent earlier event (some as twins), each bad
    input at least once (one more per 500 sends), each hostile client once (from 100 sends),
    the rest new events spread over tenants; a new event of the levels tenant goes with one
    of `team_keys` at random."""
    rng = random.Random(seed)
    n_bad = min(len(BAD_INPUTS) * max(1, n // 500), n // 5)
    n_resend = int(n * RESEND_SHARE)
    n_hostile = len(HOSTILE_INPUTS) if n >= 100 else 0
    kinds = ["bad"] * n_bad + ["resend"] * n_resend + ["hostile"] * n_hostile
    kinds += ["new"] * (n - len(kinds))
    rng.shuffle(kinds)
    out: list[Send] = []
    news: list[Send] = []
    for i, kind in enumerate(kinds):
        if kind == "resend" and not news:
            kind = "new"
        if kind == "resend":
            # A recent one, so the first is often still in flight.
            first = rng.choice(news[-30:])
            out.append(Send(i, "resend", first.tenant, first.source, first.ce_id, first.data,
                            original=first.index, twin=rng.random() < TWIN_SHARE,
                            key=first.key))
            continue
        tenant = rng.choice(tenant_names)
        if kind == "bad":
            out.append(Send(i, "bad", tenant, f"/chaos/{tenant}", f"bad-{i}",
                            bad=BAD_INPUTS[sum(s.kind == "bad" for s in out) % len(BAD_INPUTS)]))
            continue
        if kind == "hostile":
            # A tenant of their own: its 429s and waits touch no other send's answer.
            out.append(Send(i, "hostile", HOSTILE_TENANT, "openai", f"hostile-{i}",
                            bad=HOSTILE_INPUTS[sum(s.kind == "hostile" for s in out)]))
            continue
        data = {"model": model, "prompt": f"chaos request {i}: " + " ".join(
            rng.choice(("alpha", "beta", "gamma", "delta", "quota", "token"))
            for _ in range(rng.randint(1, 6))), "max_tokens": rng.randint(4, 16)}
        key = rng.choice(team_keys) if tenant == LEVELS_TENANT and team_keys else ""
        send = Send(i, "new", tenant, f"/chaos/{tenant}", f"ev-{i}", data, key=key)
        news.append(send)
        out.append(send)
    return out


def faults(kinds: list[str], per_kind: int, every_s: float, seed: int) -> list[Fault]:
    """`per_kind` faults of each kind in a seeded order, about `every_s` apart (0.5x-1.5x);
    a kill picks one of the six function processes at random, a join or leave one of the five
    consumer steps."""
    rng = random.Random(seed ^ 0x5EED)
    order = [k for k in kinds for _ in range(per_kind)]
    rng.shuffle(order)
    out: list[Fault] = []
    t = 0.0
    for kind in order:
        t += every_s * rng.uniform(0.5, 1.5)
        target = (rng.choice(FUNCTIONS) if kind == "kill" else
                  rng.choice(FUNCTIONS[1:]) if kind in MEMBERSHIP else kind)
        out.append(Fault(round(t, 2), kind, target))
    return out


def parse_kinds(text: str) -> list[str]:
    """`kill,broker,broker-pause,pg,redis,join,leave` (any subset, or `none`) as a list; ValueError
    names a bad one."""
    if text.strip() in ("", "none"):
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; "
                         f"choose from {','.join(FAULT_KINDS)}")
    return list(dict.fromkeys(kinds))
