"""infer with a token stream (memory): a request that asked to stream gets its deltas and an
end whose counts are the `completed` event's, stop sequences reach the model, and a request
whose client hung up completes as `cancelled`, billed only for what was generated."""

from __future__ import annotations

from dataclasses import replace

from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.events.payloads import Reserved
from quotaflow.functions.infer.handler import InferPorts, handle
from quotaflow.model.standin import StandInModel
from quotaflow.ports import StreamEnd
from tests.unit.fakes import reserved
from tests.unit.test_model_streaming import cancel_at

LONG = " ".join(f"w{i}" for i in range(40))


def streaming(rid: str, content: str = LONG, stop: tuple[str, ...] = ()) -> Reserved:
    return replace(reserved(rid, content, 100, max_tokens=30), stream=True, stop=stop)


def test_a_streaming_request_gets_its_deltas_and_an_end_matching_the_completion() -> None:
    stream = MemoryTokenStream()
    loud, quiet = handle([streaming("loud"), reserved("quiet", LONG, 100, max_tokens=30)],
                         InferPorts(StandInModel(), stream))
    entries = stream.read("loud", count=1000)
    assert "".join(e.delta.text for e in entries if e.delta) == loud.text
    assert entries[-1].end == StreamEnd("loud", loud.finish_reason, loud.prompt_tokens,
                                        loud.completion_tokens)
    assert (loud.completion_tokens, loud.finish_reason) == (30, "length")
    assert stream.read("quiet") == []
    assert quiet.text == loud.text


def test_stop_sequences_travel_from_the_payload_to_the_model() -> None:
    (c,) = handle([streaming("s", "a b c d e", stop=(" b",))],
                  InferPorts(StandInModel(), MemoryTokenStream()))
    assert (c.text, c.finish_reason, c.completion_tokens) == ("e d c", "stop", 4)


def test_a_hung_up_client_completes_cancelled_billed_for_what_was_generated() -> None:
    stream = cancel_at("gone", 5)
    gone, stay = handle([streaming("gone"), streaming("stay")],
                        InferPorts(StandInModel(), stream))
    assert (gone.finish_reason, gone.completion_tokens) == ("cancelled", 5)
    assert gone.reserved_tokens == 100  # settle releases what the charge leaves
    assert (stay.finish_reason, stay.completion_tokens) == ("length", 30)


def test_without_a_stream_port_infer_generates_as_before() -> None:
    (c,) = handle([streaming("x", "one two three")], InferPorts(StandInModel()))
    assert (c.text, c.completion_tokens, c.finish_reason) == ("three two one", 3, "stop")
