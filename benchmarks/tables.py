"""The BENCHMARKS.md tables `quotaflow bench` rewrites: each sits between a start and an end
marker, and only what is between them changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLES = ("door", "pipeline", "servers")


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of table `name` (HTML comments: invisible when rendered)."""
    return f"<!-- quotaflow bench: {name} -->", f"<!-- /quotaflow bench: {name} -->"


def refresh(text: str, name: str, table: str) -> str:
    """`text` with what is between table `name`'s markers replaced by `table`; `ValueError`
    if the markers are missing, out of order or repeated."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"expected one {start!r} and one {end!r}")
    head, rest = text.split(start)
    if end not in rest:
        raise ValueError(f"{end!r} comes before {start!r}")
    _, tail = rest.split(end)
    return f"{head}{start}\n{table.strip()}\n{end}{tail}"


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def measured_on(result: dict[str, Any]) -> str:
    """Which code a result was measured on: its commit, or its date where it has none."""
    return f"commit {result['commit']}" if result.get("commit") else str(result["date"])


def door_table(result: dict[str, Any]) -> str:
    """admit against the bare endpoint, one row each, and the ratio."""
    d = result["door"]
    return "\n".join([
        f"{measured_on(result)}, {result['mode']} run: {d['connections']} connections, "
        f"{len(d['rounds'])} interleaved rounds of {d['seconds']:g} s, medians; "
        f"server: `{result['server']}`.", "",
        "| endpoint | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|",
        f"| bare Flask CloudEvent | {_n(d['bare_rps'])} | {d['bare_p50_ms']:.1f} | "
        f"{d['bare_p99_ms']:.1f} | {d['bare_non2xx']} |",
        f"| admit | {_n(d['admit_rps'])} | {d['admit_p50_ms']:.1f} | {d['admit_p99_ms']:.1f} | "
        f"{d['admit_non2xx']} |",
        f"| **admit / bare** | **{d['ratio']:.2f}** ({d['ratio_min']:.2f} to {d['ratio_max']:.2f}) "
        "| | | |"])


def pipeline_table(result: dict[str, Any]) -> str:
    """Sustained requests/s to all ended, by concurrency, then open-loop latency."""
    rows = [f"Each sustained run on a fresh stack, after {result['warm_requests']} requests to "
            "warm it.", ""] if "warm_requests" in result else []
    rows += ["| clients | requests | non-2xx | admitted/s | all ended after s | ended/s |",
            "|---|---|---|---|---|---|"]
    for s in result["sustained"]:
        rows.append(f"| {s['connections']} | {_n(s['requests'])} (ended {_n(s['ended'])}) | "
                    f"{s['non2xx']} | {_n(s['admitted_per_s'])} | "
                    f"{s['seconds_to_all_ended']:.2f} | **{_n(s['ended_per_s'])}** |")
    if "drain" in result:
        d = result["drain"]
        rows += ["", f"The steps alone, draining a backlog of {_n(d['backlog'])} requests "
                 f"(admit idle): all ended in {d['seconds']:.2f} s, "
                 f"**{_n(d['drained_per_s'])} requests/s**."]
    o = result["open_loop"]
    e, a = o["end_to_end"], o["admit"]
    rows += ["", f"Open loop at {o['rate']:g} req/s for {o['seconds']:g} s, paced by wrk "
             f"(achieved {o['achieved_rate']:g}/s, {o['sent']} sent, {o['ended']} ended, "
             f"{o['non2xx']} non-2xx"
             + ("" if "broker_held_requests" not in o else f"; on {o.get('stack', 'a stack')}"
                f", its broker holding the records of {_n(o['broker_held_requests'])} requests")
             + "):", "",
             "| latency | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|",
             f"| due → terminal status (PostgreSQL `updated_at`) | {e['p50_ms']:.0f} | "
             f"{e['p90_ms']:.0f} | **{e['p99_ms']:.0f}** | {e['max_ms']:.0f} |"]
    if "open_loop_aged" in result:
        g = result["open_loop_aged"]
        aged = (f"| due → terminal status on the stack that ran the door's rounds (its "
                f"broker holding the records of {_n(g['broker_held_requests'])} requests) | "
                f"{g['end_to_end']['p50_ms']:.0f} | {g['end_to_end']['p90_ms']:.0f} | "
                f"{g['end_to_end']['p99_ms']:.0f} | {g['end_to_end']['max_ms']:.0f} |")
        rows.append(aged)
    if "stored" in o:
        st = o["stored"]
        rows.append(f"| due → stored by admit (`created_at`) | {st['p50_ms']:.1f} | "
                    f"{st['p90_ms']:.1f} | {st['p99_ms']:.1f} | {st['max_ms']:.1f} |")
    rows += [f"| sent → admit's 202 (wrk) | {a['p50_ms']:.1f} | {a['p90_ms']:.1f} | "
             f"{a['p99_ms']:.1f} | {a['max_ms']:.1f} |", "",
             f"Audit after the run: **{'clean' if result['audit']['clean'] else 'NOT clean'}**."]
    return "\n".join(rows)


def servers_table(result: dict[str, Any]) -> str:
    """Each server setup: admit and bare, the door alone, and CPU a request."""
    rows = [f"{measured_on(result)}, {result['mode']} run, the first step paused (the door "
            "alone), access logs off; medians over interleaved rounds.", "",
            "| server | admit req/s | admit p50 / p99 ms | admit CPU ms a request | "
            "bare req/s | bare CPU ms a request | admit / bare | non-2xx |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result["servers"]:
        rows.append(f"| {r['server']} | **{_n(r['admit_rps'])}** | {r['admit_p50_ms']:.1f} / "
                    f"{r['admit_p99_ms']:.1f} | {r['admit_cpu_ms']:.2f} | {_n(r['bare_rps'])} | "
                    f"{r['bare_cpu_ms']:.2f} | {r['ratio']:.2f} | "
                    f"{r['admit_non2xx'] + r['bare_non2xx']} |")
    return "\n".join(rows)


def refresh_file(path: Path, result: dict[str, Any]) -> None:
    """Rewrite the tables in the file at `path` that `result` has results for."""
    text = path.read_text()
    if "door" in result:
        text = refresh(text, "door", door_table(result))
        text = refresh(text, "pipeline", pipeline_table(result))
    if "servers" in result:
        text = refresh(text, "servers", servers_table(result))
    path.write_text(text)
