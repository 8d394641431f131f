"""Joining and trimming the running batch's KV caches, where the caches live.

On the CPU the caches are NumPy arrays and NumPy joins and trims them, one copy each. On CUDA
they stay on the GPU between passes, and a join or a trim through the host would copy every
cache out and back: at 64 rows about 180 MB each way, as long as a decode pass, and with many
clients a row ends or arrives nearly every pass. There a two-node-per-tensor ONNX graph
(Pad + Concat to join, Gather + Slice to trim) does it on the GPU, run by ONNX Runtime like the
model. The graphs are built when the generator opens (`onnx` is needed only then)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from quotaflow.model.prefill import host


class KvOps(Protocol):
    def stack_left(self, old: Sequence[Any], new: Sequence[Any]) -> list[Any]:
        """Each pair stacked on the batch axis, the shorter left-padded with zeros on the
        position axis (masked positions)."""
        ...

    def take(self, past: Sequence[Any], keep: Sequence[int], first: int) -> list[Any]:
        """Rows `keep` of each tensor, positions from `first` on."""
        ...


def stack_left(parts: Sequence[Any], axis: int) -> Any:
    """`parts` stacked on axis 0, each left-padded with zeros to the widest along `axis`:
    one allocation and one copy of each part (the KV caches are megabytes a pass)."""
    width = max(p.shape[axis] for p in parts)
    shape = list(parts[0].shape)
    shape[0], shape[axis] = sum(p.shape[0] for p in parts), width
    out = np.zeros(shape, dtype=parts[0].dtype)
    at = 0
    for p in parts:
        index = [slice(at, at + p.shape[0])] + [slice(None)] * (p.ndim - 1)
        index[axis] = slice(width - p.shape[axis], width)
        out[tuple(index)] = p
        at += p.shape[0]
    return out


class HostKvOps:
    def stack_left(self, old: Sequence[Any], new: Sequence[Any]) -> list[Any]:
        return [stack_left([host(a), host(b)], 2) for a, b in zip(old, new, strict=True)]

    def take(self, past: Sequence[Any], keep: Sequence[int], first: int) -> list[Any]:
        return [host(p)[list(keep), :, first:] for p in past]  # one copy, contiguous


class OrtKvOps:
    """The same operations as ONNX Runtime graphs on `device` ("cuda", or "cpu" for tests),
    inputs and outputs bound there."""

    def __init__(self, tensors: int, device: str = "cuda") -> None:
        import onnxruntime as ort

        self._device = device
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                     else ["CPUExecutionProvider"])
        self._join, self._trim = (ort.InferenceSession(g, providers=providers)
                                  for g in _graphs(tensors))

    def stack_left(self, old: Sequence[Any], new: Sequence[Any]) -> list[Any]:
        return self._run(self._join, {**_named("a", old), **_named("b", new)}, {})

    def take(self, past: Sequence[Any], keep: Sequence[int], first: int) -> list[Any]:
        return self._run(self._trim, _named("p", past),
                         {"keep": np.array(keep, dtype=np.int64),
                          "first": np.array([first], dtype=np.int64)})

    def _run(self, session: Any, kv: dict[str, Any], small: dict[str, Any]) -> list[Any]:
        import onnxruntime as ort

        io = session.io_binding()
        for name, value in kv.items():
            if isinstance(value, np.ndarray):
                value = ort.OrtValue.ortvalue_from_numpy(value, self._device, 0)
            io.bind_ortvalue_input(name, value)
        for name, value in small.items():
            io.bind_cpu_input(name, value)
        for out in session.get_outputs():
            io.bind_output(out.name, self._device)
        session.run_with_iobinding(io)
        outputs = io.get_outputs()
        return [o.numpy() for o in outputs] if self._device == "cpu" else list(outputs)


def _named(prefix: str, values: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}{i}": v for i, v in enumerate(values)}


def _graphs(tensors: int) -> tuple[bytes, bytes]:
    """The join and the trim graphs for `tensors` float32 tensors [rows, heads, positions,
    head_dim], serialized."""
    from onnx import TensorProto, helper

    def kv(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    def const(name: str, values: list[int]) -> Any:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name, TensorProto.INT64, [len(values)], values))

    def model(nodes: list[Any], inputs: list[Any], name: str) -> bytes:
        graph = helper.make_graph(nodes, name, inputs, [kv(f"out{i}") for i in range(tensors)])
        built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        built.ir_version = 8  # what ONNX Runtime 1.20 and later all read
        return bytes(built.SerializeToString())

    # Join: the position counts of the first pair decide every pair's padding (all layers
    # hold the same positions). Pad's pads are [begins of the 4 axes, ends of the 4 axes].
    join = [const("two", [2]), const("three", [3]), const("z2", [0, 0]), const("z5", [0] * 5),
            helper.make_node("Shape", ["a0"], ["sa"]), helper.make_node("Shape", ["b0"], ["sb"]),
            helper.make_node("Slice", ["sa", "two", "three"], ["ta"]),
            helper.make_node("Slice", ["sb", "two", "three"], ["tb"]),
            helper.make_node("Max", ["ta", "tb"], ["t"])]
    for side in ("a", "b"):
        join += [helper.make_node("Sub", ["t", f"t{side}"], [f"grow_{side}"]),
                 helper.make_node("Concat", ["z2", f"grow_{side}", "z5"], [f"pads_{side}"],
                                  axis=0)]
    for i in range(tensors):
        join += [helper.make_node("Pad", [f"a{i}", "pads_a"], [f"pa{i}"]),
                 helper.make_node("Pad", [f"b{i}", "pads_b"], [f"pb{i}"]),
                 helper.make_node("Concat", [f"pa{i}", f"pb{i}"], [f"out{i}"], axis=0)]
    trim = [const("two", [2]), const("end", [2**62])]
    for i in range(tensors):
        trim += [helper.make_node("Gather", [f"p{i}", "keep"], [f"g{i}"], axis=0),
                 helper.make_node("Slice", [f"g{i}", "first", "end", "two"], [f"out{i}"])]
    small = [helper.make_tensor_value_info("keep", TensorProto.INT64, [None]),
             helper.make_tensor_value_info("first", TensorProto.INT64, [1])]
    return (model(join, [kv(f"{s}{i}") for s in "ab" for i in range(tensors)], "kv_join"),
            model(trim, [kv(f"p{i}") for i in range(tensors)] + small, "kv_trim"))
