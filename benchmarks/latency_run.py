"""`quotaflow bench --latency`: the latency real Kafka allows (issue 25, item 7), on Apache
Kafka (3 nodes) and Tansu in the same run, each broker on a stack of its own:

- stand-in model, one request at a time: first streamed token and whole answer, p50/p99,
  against the bare generation loop in the same run (`bench_latency`); one Kafka hop alone;
- where that time goes, span by span (`hops`), beside each step's own handler time;
- an open loop at `rate` requests/s: p99 admit → recorded, and the CPU each process spent a
  request, the broker's processes (the JVMs) included;

then the real model through the pipeline against the bare loop at concurrency 8, the median
of `model_rounds` rounds (`bench_pipeline`), when the model is built.

PostgreSQL and Redis: POSTGRES_URL / REDIS_URL, else embedded ones for the run
(`benchmarks.services`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import bench_latency, bench_pipeline, cpu, hops, pipeline, plots
from benchmarks.run import commit
from benchmarks.services import services
from quotaflow.devstack.process import DevStackError
from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings

GOAL_RECORDED_P99_MS = 100.0
GOAL_MODEL_RATIO = 0.85
WARM_UP = 6  # one-at-a-time requests not counted (three rounds of a streamed and a whole one)


@dataclass(frozen=True)
class LatencyOptions:
    """What `quotaflow bench --latency` runs."""

    brokers: tuple[str, ...] = ("kafka", "tansu")
    requests: int = 60
    max_tokens: int = 16
    hops: int = 100
    rate: float = 500
    seconds: float = 8
    model_rounds: int = 3
    model_requests: int = 64
    model_max_tokens: int = 32
    model_dir: Path | None = None  # the built model; None: that part is skipped
    out: Path = Path(".quotaflow/bench/latency.json")
    plots_dir: Path | None = Path("docs/bench")

    @classmethod
    def quick_run(cls, **kw: Any) -> LatencyOptions:
        """A couple of minutes a broker: fewer requests, a short open loop, one model round."""
        return cls(**{"requests": 20, "hops": 30, "seconds": 3, "model_rounds": 1,
                      "model_requests": 16, "model_max_tokens": 16, **kw})


def built_model(root: Path) -> Path | None:
    """The directory of the built real model under `root` (.quotaflow/models): the newest
    `<name>/<version>/` holding a model.onnx, the random-weights `-tiny` build left out."""
    found = [p.parent for p in root.glob("*/*/model.onnx")
             if not p.parent.parent.name.endswith("-tiny")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (it is shared: say how busy it was)."""
    return [round(x, 2) for x in os.getloadavg()]


def at_rate(stack: DevStack, tenant: str, key: str, opts: LatencyOptions, workdir: Path,
            extra_pids: dict[str, int], say: Callable[[str], None]) -> dict[str, Any]:
    """The open loop at `opts.rate`, with the CPU each process spent a request over it (from
    the first send until every request has ended)."""
    pids = {name: p.pid for name, p in stack.procs.items()} | extra_pids
    before = cpu.cpu_seconds(pids)
    load = load_average()
    o = pipeline.open_loop(stack.admit_url, stack.settings.postgres_url, tenant, key,
                           stack.settings.model_name, opts.rate, opts.seconds, workdir, say=say)
    o["cpu_ms_per_request"] = cpu.per_request_ms(before, cpu.cpu_seconds(pids), o["ended"])
    o["load_average_before"] = load
    return o


def per_broker(stack: DevStack, tenant: str, key: str, opts: LatencyOptions, workdir: Path,
               extra_pids: dict[str, int], say: Callable[[str], None]) -> dict[str, Any]:
    """What follows the one-at-a-time run on a broker's stack, while it is up."""
    say("  where the time goes, span by span ...")
    handler = bench_latency.handler_ms(stack)
    spans = hops.measure(stack.settings, stack.partitions, handler, WARM_UP)
    probe = hops.commit_probe(stack.settings.postgres_url)
    say(f"  PostgreSQL here: round trip {probe['round_trip_ms']:.2f} ms, a durable commit "
        f"{probe['commit_ms']:.2f} ms ({probe['commit_no_flush_ms']:.2f} without the flush)")
    say(f"  open loop at {opts.rate:g} req/s for {opts.seconds:g} s ...")
    o = at_rate(stack, tenant, key, opts, workdir, extra_pids, say)
    say(f"  admit → recorded p99 {o['end_to_end']['p99_ms']:.0f} ms; CPU ms a request: "
        + ", ".join(f"{k} {v:.2f}" for k, v in o["cpu_ms_per_request"].items()))
    o.pop("end_to_end_s", None)
    return {"spans": spans, "postgres": probe, "open_loop": o}


def model_vs_bare(base: Settings, opts: LatencyOptions, say: Callable[[str], None]
                  ) -> dict[str, Any]:
    """Generated tokens/s of the real model through the pipeline at concurrency 8 over the
    bare loop's (batches of 8), each round's baseline the faster of the bare runs beside it."""
    assert opts.model_dir is not None
    settings = replace(base, model_source=f"dir:{opts.model_dir}", batch_max=8)
    args = argparse.Namespace(requests=opts.model_requests, max_tokens=opts.model_max_tokens,
                              clients="stream", trace=False)

    def bare() -> float:
        say(f"  bare loop, {opts.model_requests} requests x {opts.model_max_tokens} tokens ...")
        return bench_pipeline.bare(settings, opts.model_requests, opts.model_max_tokens, 8)

    bares, pipes, ratios = [bare()], [], []
    for r in range(opts.model_rounds):
        say(f"  round {r + 1}: the pipeline at concurrency 8 (a fresh stack) ...")
        try:
            _, pipe8, _ = bench_pipeline.pipeline_round(settings, args, first=False,
                                                        broker=opts.brokers[0])
        except DevStackError as exc:  # e.g. a port taken meanwhile by another process here
            say(f"  round {r + 1} did not start ({exc}); left out")
            continue
        bares.append(bare())
        pipes.append(round(pipe8, 1))
        ratios.append(round(pipe8 / max(bares[-2], bares[-1]), 3))
    return {"model_dir": opts.model_dir.name, "broker": opts.brokers[0],
            "requests": opts.model_requests, "max_tokens": opts.model_max_tokens,
            "pipeline_tokens_per_s": pipes,
            "bare_tokens_per_s": [round(b, 1) for b in bares], "ratios": ratios,
            "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
            "goal": GOAL_MODEL_RATIO}


def run(opts: LatencyOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Everything above; the result (also written to `opts.out`), plots in `opts.plots_dir`."""
    workdir = Path(tempfile.mkdtemp(prefix="qf-bench-latency-"))
    args = argparse.Namespace(requests=opts.requests, max_tokens=opts.max_tokens,
                              hops=opts.hops)
    result: dict[str, Any] = {"date": datetime.now(UTC).date().isoformat(),
                              "commit": commit(), "load_average_start": load_average(),
                              "brokers": []}
    # The stacks' and the model rounds' progress goes to stderr with the rest: stdout is
    # the tables' (`report`).
    with contextlib.redirect_stdout(sys.stderr), \
            services(Settings.from_env(), workdir) as (base, service_pids):
        for broker in opts.brokers:
            say(f"{broker}: a stack of its own, {opts.requests} requests one at a time ...")

            def then(stack: DevStack, tenant: str, key: str) -> dict[str, Any]:
                return per_broker(stack, tenant, key, opts, workdir, service_pids, say)

            result["brokers"].append(bench_latency.measure(broker, base, args, then,
                                                           admit_workers=2))
            result["brokers"][-1]["load_average_after"] = load_average()
            _save(result, opts.out)  # a run cut short keeps what it measured
        if opts.model_dir is None:
            say("the real model is not built (quotaflow model build): its pipeline/bare "
                "ratio is skipped")
        else:
            say(f"the real model through the pipeline vs the bare loop, "
                f"{opts.model_rounds} round(s) ...")
            result["model"] = model_vs_bare(base, opts, say)
    result["load_average_end"] = load_average()
    _save(result, opts.out)
    say(f"wrote {opts.out}")
    if opts.plots_dir is not None:
        opts.plots_dir.mkdir(parents=True, exist_ok=True)
        bench_latency.plot(result["brokers"], opts.plots_dir / "latency-brokers.png")
        say(f"drew {plots.hop_spans(result['brokers'], opts.plots_dir / 'latency-hops.png')}")
    return result


def _save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def report(result: dict[str, Any], requests: int) -> str:
    """The Markdown tables of a run."""
    lines = [bench_latency.table(result["brokers"], requests), ""]
    lines += ["| broker | span (median over requests) | p50 ms | p90 ms | "
              "its handler, mean ms a batch | rest: hop, wait, produce ms |",
              "|---|---|---|---|---|---|"]
    for r in result["brokers"]:
        for s in r["spans"]:
            h = "" if s["handler_ms"] is None else f"{s['handler_ms']:.1f}"
            rest = "" if s["other_ms"] is None else f"{s['other_ms']:.1f}"
            lines.append(f"| {r['describe']} | {s['span']} | {s['p50_ms']:.1f} | "
                         f"{s['p90_ms']:.1f} | {h} | {rest} |")
    lines += [""] + [f"{r['describe']}: PostgreSQL round trip {r['postgres']['round_trip_ms']:.2f}"
                     f" ms, a durable commit (WAL flushed) {r['postgres']['commit_ms']:.2f} ms, "
                     f"without the flush {r['postgres']['commit_no_flush_ms']:.2f} ms (medians)"
                     for r in result["brokers"]]
    lines += ["", "| broker | open loop | due | stored | ended | non-2xx | "
              "admit → recorded p50 ms | p99 ms (goal ≤ 100) | CPU ms a request, by process |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["brokers"]:
        o = r["open_loop"]
        e = o["end_to_end"]
        used = o["cpu_ms_per_request"]
        cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        lines.append(f"| {r['describe']} | {o['rate']:g} req/s x {o['seconds']:g} s | "
                     f"{o['sent']} | {o['stored']['n']:.0f} | {o['ended']} | {o['non2xx']} | "
                     f"{e['p50_ms']:.0f} | "
                     f"{e['p99_ms']:.0f} | {cpu_text} (all {sum(used.values()):.1f}) |")
    m = result.get("model")
    if m and m["ratios"]:
        lines += ["", f"real model ({m['model_dir']}), pipeline at concurrency 8 / bare loop "
                  f"(batches of 8): median {m['median_ratio']:.2f} of rounds "
                  f"{', '.join(f'{x:.2f}' for x in m['ratios'])} (goal ≥ {m['goal']}); "
                  f"pipeline tokens/s {m['pipeline_tokens_per_s']}, bare {m['bare_tokens_per_s']}"]
    lines += ["", f"load average (1, 5, 15 min) at the start {result['load_average_start']}, "
              f"at the end {result['load_average_end']}"]
    return "\n".join(lines)
