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

    providers: list[Any] = ["CPUExecutionProvider"]
    if prefer_gpu and "CUDAExecutionProvider" in providers_available():
        # TF32 (ONNX Runtime's default on Ampere and later) rounds fp32 matrix products to a
        # 10-bit mantissa where cuBLAS picks tensor-core kernels, which it does for some batch
        # sizes and not others: greedy answers then change with the batch. Full fp32 keeps a
        # row's answer independent of its batch-mates, as on the CPU.
        providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
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
