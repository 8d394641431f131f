"""The bare ONNX generation loop: generated tokens/s at batch 1 and batch 8, and the first
request of a freshly started process (model load included) versus a warm one.

    .venv/bin/python benchmarks/bench_model.py --model-dir DIR [--device cpu|cuda|both]

Ratios are against measurements of the same run: batch 8 against batch 1, cold against warm,
CUDA against CPU."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--device", choices=("cpu", "cuda", "both"), default="cpu")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    results = {}
    for dev in devices:
        r = measure(args.model_dir, dev == "cuda", args.max_tokens, args.rounds)
        r["cold_first_s"] = cold_start(args.model_dir, dev == "cuda")
        results[dev] = r
        print(f"{dev}: batch 1 {r['batch1_tok_s']:.1f} tok/s, batch 8 "
              f"{r['batch8_tok_s']:.1f} tok/s ({r['batch8_tok_s'] / r['batch1_tok_s']:.2f}x); "
              f"first request cold {r['cold_first_s']:.2f} s vs warm {r['warm_first_s']:.2f} s "
              f"({r['cold_first_s'] / r['warm_first_s']:.1f}x)", flush=True)
    if len(devices) == 2:
        for k in ("batch1_tok_s", "batch8_tok_s"):
            print(f"cuda/cpu {k}: {results['cuda'][k] / results['cpu'][k]:.2f}x")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
