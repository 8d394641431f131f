"""The ONNX graphs that join and trim KV caches on CUDA do exactly what NumPy does on the CPU
(checked here on ONNX Runtime's CPU provider; the same graphs run on CUDA)."""

from __future__ import annotations

import numpy as np
import pytest

from quotaflow.model.kv_ops import HostKvOps, OrtKvOps

TENSORS = 4  # two layers' keys and values


def caches(rows: int, positions: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, 3, positions, 8)).astype(np.float32)
            for _ in range(TENSORS)]


@pytest.fixture(scope="module")
def graphs() -> OrtKvOps:
    return OrtKvOps(TENSORS, device="cpu")


@pytest.mark.parametrize(("old", "new"), [((3, 7), (2, 4)), ((1, 4), (2, 9)), ((2, 5), (1, 5)),
                                          ((4, 0), (1, 3))])
def test_joining_on_the_graphs_pads_the_shorter_side_left_exactly_as_numpy(
        graphs: OrtKvOps, old: tuple[int, int], new: tuple[int, int]) -> None:
    a, b = caches(*old, seed=1), caches(*new, seed=2)
    expected = HostKvOps().stack_left(a, b)
    got = graphs.stack_left(a, b)
    assert [g.shape for g in got] == [(old[0] + new[0], 3, max(old[1], new[1]), 8)] * TENSORS
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    # The padding is zeros, on the left of the shorter side.
    wide = max(old[1], new[1])
    np.testing.assert_array_equal(got[0][:old[0], :, :wide - old[1]], 0)
    np.testing.assert_array_equal(got[0][old[0]:, :, :wide - new[1]], 0)


@pytest.mark.parametrize(("keep", "first"), [([0, 2], 0), ([1], 3), ([0, 1, 2, 3], 2), ([3, 0], 6)])
def test_trimming_on_the_graphs_keeps_the_rows_and_positions_numpy_keeps(
        graphs: OrtKvOps, keep: list[int], first: int) -> None:
    past = caches(4, 6, seed=3)
    expected = HostKvOps().take(past, keep, first)
    got = graphs.take(past, keep, first)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (len(keep), 3, 6 - first, 8)
        np.testing.assert_array_equal(g, e)
