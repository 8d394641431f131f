"""The latency bench's pure parts: one request's spans from its stages' times, their
breakdown beside each step's handler time, and finding the built model."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.hops import SPANS, breakdown, spans_ms
from benchmarks.latency_run import built_model

STAGES = ("stored", "admitted", "estimated", "reserved", "completed", "settled", "ended")


def _at(starts: dict[str, float], gaps_s: list[float]) -> dict[str, dict[str, float]]:
    """Each stage's time per request: request r starts at starts[r], stage i follows stage
    i-1 after gaps_s[i-1]."""
    at: dict[str, dict[str, float]] = {s: {} for s in STAGES}
    for rid, t in starts.items():
        for i, stage in enumerate(STAGES):
            at[stage][rid] = t + sum(gaps_s[:i])
    return at


def test_each_span_is_the_time_between_its_two_stages_of_the_same_request() -> None:
    at = _at({"a": 100.0, "b": 200.0}, [0.001, 0.002, 0.010, 0.004, 0.008, 0.003])
    got = spans_ms(at)
    assert [round(got[name][0], 3) for name, *_ in SPANS] == [1, 2, 10, 4, 8, 3]
    assert all(len(v) == 2 for v in got.values())


def test_a_request_missing_from_a_stage_is_left_out_of_every_span() -> None:
    at = _at({"a": 100.0, "b": 200.0}, [0.001] * 6)
    del at["settled"]["b"]
    assert all(len(v) == 1 for v in spans_ms(at).values())


def test_the_breakdown_takes_the_steps_handler_time_from_the_spans_median() -> None:
    name = SPANS[2][0]  # reserve's
    rows = breakdown({name: [12.0, 20.0, 14.0]}, {"reserve": 9.5})
    assert rows == [{"span": name, "n": 3, "p50_ms": 14.0, "p90_ms": 14.0,
                     "handler_ms": 9.5, "other_ms": 4.5}]


def test_admits_span_has_no_handler_to_take_off() -> None:
    (row,) = breakdown({SPANS[0][0]: [3.0]}, {"reserve": 9.5})
    assert row["handler_ms"] is None and row["other_ms"] is None


def test_the_built_model_is_the_newest_version_holding_a_model_not_the_tiny_one(
        tmp_path: Path) -> None:
    for folder, mtime in (("m/old", 1_000), ("m/new", 2_000), ("m-tiny/newest", 3_000),
                          ("m/empty", 4_000)):
        (tmp_path / folder).mkdir(parents=True)
        if not folder.endswith("empty"):
            (tmp_path / folder / "model.onnx").write_bytes(b"x")
        os.utime(tmp_path / folder, (mtime, mtime))
    assert built_model(tmp_path) == tmp_path / "m" / "new"
    assert built_model(tmp_path / "nothing") is None
