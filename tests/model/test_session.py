"""How ONNX Runtime sessions are opened (the CUDA case is checked without a GPU: the session
class is replaced by one that records what it was asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import onnxruntime as ort
import pytest

from quotaflow.model import session


class Recorded:
    asked: ClassVar[list[Any]] = []

    def __init__(self, path: str, options: Any, providers: list[Any]) -> None:
        Recorded.asked = providers

    def get_providers(self) -> list[str]:
        first = Recorded.asked[0]
        return [first[0] if isinstance(first, tuple) else first]


def test_a_cuda_session_computes_in_full_fp32_so_an_answer_does_not_depend_on_its_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's CUDA default (TF32) changed 12 of 544 greedy answers on an H200, all at
    128 rows (BENCHMARKS.md); with use_tf32 off, none in two runs."""
    monkeypatch.setattr(session, "providers_available",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    monkeypatch.setattr(ort, "preload_dlls", lambda: None, raising=False)
    _, device = session.open_session(Path("model.onnx"), prefer_gpu=True)
    assert device == "cuda"
    assert Recorded.asked[0] == ("CUDAExecutionProvider", {"use_tf32": "0"})


def test_without_cuda_or_when_not_asked_for_a_session_runs_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    for available, prefer in ((["CPUExecutionProvider"], True),
                              (["CUDAExecutionProvider", "CPUExecutionProvider"], False)):
        monkeypatch.setattr(session, "providers_available", lambda a=available: a)
        assert session.open_session(Path("model.onnx"), prefer_gpu=prefer)[1] == "cpu"
        assert Recorded.asked == ["CPUExecutionProvider"]
