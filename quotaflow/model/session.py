"""An ONNX Runtime session on CUDA when it is there and asked for, else on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def providers_available() -> list[str]:
    import onnxruntime as ort

    names: list[str] = ort.get_available_providers()
    return names


def open_session(path: Path, prefer_gpu: bool, spin: bool = True) -> tuple[Any, str]:
    """The session for `path` and its device ("cuda" or "cpu"). Without `spin`, its threads
    sleep between operators instead of spinning (for a process that shares its cores)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if prefer_gpu and "CUDAExecutionProvider" in providers_available():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:  # onnxruntime-gpu: load CUDA/cuDNN from the nvidia wheels
            preload()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    device = "cuda" if sess.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    return sess, device
