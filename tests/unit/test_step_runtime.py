"""The runtime's step machinery without services: the one step list and its wiring agree,
the stand-in model wires with nothing reachable, what a step holds decides its readiness, a
dead step loop makes the all-in-one function unready."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from quotaflow.compose import WIRING, wire
from quotaflow.events.catalog import EVENTS
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.model.standin import StandInModel
from quotaflow.runtime.knative import _AllInOne
from quotaflow.runtime.step import Held
from quotaflow.runtime.steps import ALL_STEPS, CONSUMER_STEPS, load_step
from quotaflow.settings import Settings


def test_every_consumer_step_loads_under_its_name_and_has_its_wiring() -> None:
    assert set(WIRING) == set(CONSUMER_STEPS) and ("admit", *CONSUMER_STEPS) == ALL_STEPS
    for name in CONSUMER_STEPS:
        step = load_step(name)
        assert step.name == name
        assert all(e in EVENTS for e in (*step.consumes, *step.produces)), name
    with pytest.raises(KeyError, match="unknown step"):
        load_step("admit")


def test_the_model_steps_wire_the_stand_in_with_no_service_reachable() -> None:
    settings = replace(Settings(), model_source="standin")
    est, inf = wire("estimate", settings), wire("infer", settings)
    assert isinstance(est.ports, EstimatePorts) and isinstance(inf.ports, InferPorts)
    assert isinstance(inf.ports.generator, StandInModel)
    assert est.resources.ready() and inf.resources.ready()
    with pytest.raises(KeyError, match="no wiring"):
        wire("admit", settings)


class _Conn:
    closed = False


def test_held_resources_are_ready_until_a_connection_closes_and_close_in_order() -> None:
    conn, closed = _Conn(), []
    held = Held([conn], [lambda: closed.append("a"), lambda: closed.append("b")])  # type: ignore[list-item]
    assert held.ready()
    conn.closed = True
    assert not held.ready()
    held.close()
    assert closed == ["a", "b"]


def test_a_dead_step_loop_makes_the_all_in_one_function_unready() -> None:
    stop = threading.Event()
    alive = threading.Thread(target=stop.wait, daemon=True)
    dead = threading.Thread(target=lambda: None, daemon=True)
    alive.start()
    dead.start()
    dead.join()
    assert _AllInOne(Held(), [alive], stop).ready()
    everything = _AllInOne(Held(), [alive, dead], stop)
    assert not everything.ready()
    everything.close()
    assert stop.is_set() and not alive.is_alive()


def test_a_dead_step_loop_fails_the_all_in_one_functions_liveness() -> None:
    from quotaflow.runtime.knative import KnativeFunction

    stop = threading.Event()
    alive = threading.Thread(target=stop.wait, name="step-reserve", daemon=True)
    dead = threading.Thread(target=lambda: None, name="step-infer", daemon=True)
    alive.start()
    dead.start()
    fn = KnativeFunction("all")
    fn._resources = _AllInOne(Held(), [alive], stop)
    assert fn.alive() == (True, "alive")
    fn._resources = _AllInOne(Held(), [alive, dead], stop)
    dead.join()
    ok, why = fn.alive()
    assert not ok and "step-infer" in why
    stop.set()


def test_infer_decodes_requests_at_once_with_a_real_model_and_inline_with_the_stand_in(
        ) -> None:
    infer = load_step("infer")
    real = replace(Settings(), model_source="dir:/models/x", batch_max=12)
    assert (infer.in_flight(real), infer.batch_max(real)) == (12, 12)
    standin = replace(real, model_source="standin")
    # The stand-in answers a whole polled batch in one call, as large as estimate's.
    assert (infer.in_flight(standin), infer.batch_max(standin)) == (
        1, load_step("estimate").batch_max(standin))
    assert all(load_step(s).in_flight(real) == 1 for s in CONSUMER_STEPS if s != "infer")


@pytest.mark.parametrize("spin", [None, "0"])
def test_the_local_stack_passes_the_spin_setting_to_its_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spin: str | None) -> None:
    """ONNX Runtime's threads spin in `dev up`'s infer unless QF_ORT_SPIN=0 says otherwise:
    spinning carried 8-10% more tokens/s through the stack (BENCHMARKS.md)."""
    from quotaflow.devstack.stack import DevStack

    envs: dict[str, dict[str, str]] = {}
    stack = DevStack(tmp_path, Settings.from_env({"QF_ORT_SPIN": spin} if spin else {}))
    monkeypatch.setattr(stack, "_spawn", lambda name, argv, env=None, **_: envs.update(
        {name: env or {}}))
    stack.start_functions()
    assert Settings.from_env(envs["infer"]).ort_spin == (0 if spin == "0" else 1)
