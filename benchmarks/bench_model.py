"""The bare ONNX generation loop: generated tokens/s at batch 1 and batch 8, and the first
request of a freshly started process (model load included) versus a warm one.

    python -m benchmarks.bench_model --model-dir DIR [--device cpu|cuda|both]
    python -m benchmarks.bench_model --model-dir DIR --streaming [--redis-url URL]
    python -m benchmarks.bench_model --model-dir DIR --clients 8,64 [--device both]

Ratios are against measurements of the same run: batch 8 against batch 1, cold against warm,
CUDA against CPU. `--streaming` measures generation while streaming every request of a batch of
8: tokens/s, time to the first delta and median time between deltas, through a sink that only
stamps the time (the bare loop's own figures), the in-memory stream and Redis (one pipelined
round trip per decode step), each against the stamping sink. `--clients N` measures the
continuous engine: N client threads each sending one request at a time (a request joins the
running batch between two passes) against static batches of N, and checks that every greedy
answer equals the first device's answer to the same prompt in a static batch."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROMPTS = ["What is the capital of France?", "Name three primary colours.",
           "Write one sentence about the sea.", "What is 12 times 12?",
           "Give me a synonym for happy.", "Why is the sky blue?",
           "Translate 'good morning' into Spanish.", "What do bees make?"]


def measure(model_dir: Path, gpu: bool, max_tokens: int, rounds: int) -> dict[str, float]:
    from quotaflow.model.base import ChatMessage, GenerationRequest
    from quotaflow.model.onnx_decoder import OnnxGenerator

    gen = OnnxGenerator(model_dir, prefer_gpu=gpu)
    if gpu and gen.device != "cuda":
        raise SystemExit("CUDA was asked for but ONNX Runtime has no CUDA provider here")
    reqs = [GenerationRequest((ChatMessage("user", p),), max_tokens) for p in PROMPTS]
    gen.warm_up()
    out: dict[str, float] = {}
    for batch in (1, 8):
        tokens, started = 0, time.perf_counter()
        for _ in range(rounds):
            for i in range(0, len(reqs), batch):
                tokens += sum(r.completion_tokens for r in gen.generate(reqs[i:i + batch]))
        out[f"batch{batch}_tok_s"] = tokens / (time.perf_counter() - started)
    started = time.perf_counter()
    gen.generate(reqs[:1])
    out["warm_first_s"] = time.perf_counter() - started
    return out


def clients(model_dir: Path, gpu: bool, n: int, max_tokens: int, rounds: int
            ) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Static batches of n, then n client threads sending `rounds` requests each: tok/s of each,
    the continuous engine's mean rows a pass, and every answer text by prompt."""
    from quotaflow.model.base import ChatMessage, GenerationRequest
    from quotaflow.model.onnx_decoder import OnnxGenerator

    gen = OnnxGenerator(model_dir, prefer_gpu=gpu)
    if gpu and gen.device != "cuda":
        raise SystemExit("CUDA was asked for but ONNX Runtime has no CUDA provider here")
    gen.warm_up()
    reqs = [GenerationRequest((ChatMessage("user", PROMPTS[i % len(PROMPTS)]),), max_tokens)
            for i in range(n * rounds)]
    answers: dict[str, list[str]] = {p: [] for p in PROMPTS}
    tokens, started = 0, time.perf_counter()
    for i in range(0, len(reqs), n):
        for req, res in zip(reqs[i:i + n], gen.generate(reqs[i:i + n]), strict=True):
            tokens += res.completion_tokens
            answers[req.messages[0].content].append(res.text)
    out = {"static_tok_s": tokens / (time.perf_counter() - started)}
    passes: list[int] = []
    gen.engine._on_pass = passes.append  # count rows a pass (the metric's own hook)

    def client(k: int) -> int:
        got = 0
        for req in reqs[k::n]:
            (res,) = gen.generate([req])
            answers[req.messages[0].content].append(res.text)
            got += res.completion_tokens
        return got

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        tokens = sum(pool.map(client, range(n)))
    out["continuous_tok_s"] = tokens / (time.perf_counter() - started)
    out["rows_per_pass"] = statistics.mean(passes)
    return out, answers


def cold_start(model_dir: Path, gpu: bool) -> float:
    """A fresh process: import, load, first request (what a scale-from-zero pod pays)."""
    code = ("import time; t=time.perf_counter(); from pathlib import Path; "
            "from quotaflow.model.onnx_decoder import OnnxGenerator; "
            "from quotaflow.model.base import ChatMessage, GenerationRequest; "
            f"g=OnnxGenerator(Path({str(model_dir)!r}), prefer_gpu={gpu}); "
            "g.generate([GenerationRequest((ChatMessage('user', 'What is the capital of "
            "France?'),), 16)]); print(time.perf_counter()-t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


class Stamped:
    """A sink wrapper noting when each publish that carries deltas is made, and the time
    spent inside the sink (the transport's own cost, immune to a busy machine's drift)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.stamps: list[float] = []
        self.inside = 0.0

    def publish(self, deltas: Any = (), ends: Any = (), watch: Any = ()) -> set[str]:
        now = time.perf_counter()
        if deltas:
            self.stamps.append(now)
        cancelled: set[str] = self.inner.publish(deltas, ends, watch) if self.inner else set()
        self.inside += time.perf_counter() - now
        return cancelled


def streaming(model_dir: Path, gpu: bool, max_tokens: int, rounds: int,
              redis_url: str | None) -> dict[str, dict[str, float]]:
    """Batch-of-8 streaming figures per sink: tok/s, first delta (ms), median gap (ms)."""
    from quotaflow.adapters.memory.stream import MemoryTokenStream
    from quotaflow.model.base import ChatMessage, GenerationRequest
    from quotaflow.model.onnx_decoder import OnnxGenerator

    gen = OnnxGenerator(model_dir, prefer_gpu=gpu)
    gen.warm_up()
    sinks: dict[str, Callable[[], Any]] = {"stamp only": lambda: None,
                                          "memory": MemoryTokenStream}
    if redis_url:
        import redis

        from quotaflow.adapters.redis_stream import RedisTokenStream

        sinks["redis"] = lambda: RedisTokenStream(redis.Redis.from_url(redis_url),
                                                  stream_ttl_s=60)
    runs: dict[str, list[tuple[int, float, float, list[float], float]]] = {n: [] for n in sinks}
    for _ in range(rounds):  # sinks interleaved, so drift on a shared machine hits them alike
        for name, make in sinks.items():
            run = uuid.uuid4().hex  # fresh stream ids: a reused id would add nothing
            reqs = [GenerationRequest((ChatMessage("user", p),), max_tokens,
                                      request_id=f"bench-{run}-{i}", stream=True)
                    for i, p in enumerate(PROMPTS)]
            sink = Stamped(make())
            started = time.perf_counter()
            tokens = sum(r.completion_tokens for r in gen.generate(reqs, sink))
            elapsed = time.perf_counter() - started
            gaps = [b - a for a, b in zip(sink.stamps, sink.stamps[1:], strict=False)]
            runs[name].append((tokens, elapsed, sink.stamps[0] - started, gaps, sink.inside))
    return {name: {"tok_s": sum(r[0] for r in rs) / sum(r[1] for r in rs),
                   "first_ms": 1000 * statistics.median(r[2] for r in rs),
                   "gap_ms": 1000 * statistics.median(g for r in rs for g in r[3]),
                   "sink_share": sum(r[4] for r in rs) / sum(r[1] for r in rs)}
            for name, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--device", choices=("cpu", "cuda", "both"), default="cpu")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--streaming", action="store_true")
    ap.add_argument("--redis-url", help="also stream through Redis (e.g. a spare db index)")
    ap.add_argument("--clients", help="comma-separated client counts for the continuous engine")
    ap.add_argument("--skip-cold", action="store_true", help="no cold-start subprocess")
    args = ap.parse_args()
    if args.clients:
        run_clients(args)
        return
    if args.streaming:
        figures = streaming(args.model_dir, args.device == "cuda", args.max_tokens,
                            args.rounds, args.redis_url)
        base = figures["stamp only"]
        for name, f in figures.items():
            print(f"{name}: {f['tok_s']:.1f} tok/s ({f['tok_s'] / base['tok_s']:.2f}x), first "
                  f"delta {f['first_ms']:.1f} ms ({f['first_ms'] / base['first_ms']:.2f}x), "
                  f"between deltas {f['gap_ms']:.1f} ms ({f['gap_ms'] / base['gap_ms']:.2f}x); "
                  f"{100 * f['sink_share']:.2f}% of the time inside the sink")
        print(json.dumps(figures, indent=2))
        return
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    results = {}
    for dev in devices:
        r = measure(args.model_dir, dev == "cuda", args.max_tokens, args.rounds)
        if not args.skip_cold:
            r["cold_first_s"] = cold_start(args.model_dir, dev == "cuda")
        results[dev] = r
        print(f"{dev}: batch 1 {r['batch1_tok_s']:.1f} tok/s, batch 8 "
              f"{r['batch8_tok_s']:.1f} tok/s ({r['batch8_tok_s'] / r['batch1_tok_s']:.2f}x); "
              f"first request cold {r.get('cold_first_s', 0):.2f} s vs warm "
              f"{r['warm_first_s']:.2f} s", flush=True)
    if len(devices) == 2:
        for k in ("batch1_tok_s", "batch8_tok_s"):
            print(f"cuda/cpu {k}: {results['cuda'][k] / results['cpu'][k]:.2f}x")
    print(json.dumps(results, indent=2))


def run_clients(args: argparse.Namespace) -> None:
    """--clients: per device and client count, continuous against static tok/s; then whether
    every answer, on every device and either way, equals the first device's static one."""
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    results: dict[str, dict[str, dict[str, float]]] = {}
    reference: dict[str, str] = {}
    differ = 0
    for dev in devices:
        for n in (int(c) for c in args.clients.split(",")):
            r, answers = clients(args.model_dir, dev == "cuda", n, args.max_tokens, args.rounds)
            for prompt, texts in answers.items():
                if not texts:  # fewer requests than prompts
                    continue
                reference.setdefault(prompt, texts[0])
                differ += sum(t != reference[prompt] for t in texts)
            results.setdefault(dev, {})[str(n)] = r
            print(f"{dev}, {n} clients: continuous {r['continuous_tok_s']:.1f} tok/s "
                  f"({r['rows_per_pass']:.1f} rows a pass), static batches of {n} "
                  f"{r['static_tok_s']:.1f} tok/s: "
                  f"{r['continuous_tok_s'] / r['static_tok_s']:.2f}x", flush=True)
    if len(devices) == 2:
        for count, r in results["cuda"].items():
            cpu = results["cpu"][count]
            print(f"cuda/cpu at {count}: static {r['static_tok_s'] / cpu['static_tok_s']:.2f}x, "
                  f"continuous {r['continuous_tok_s'] / cpu['continuous_tok_s']:.2f}x")
    print(f"answers differing from {devices[0]}'s first: {differ}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
