"""Model metrics, per model name, version and device."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LABELS = ["model", "version", "device"]
TOKENS = Counter("ml_tokens_processed_total", "Tokens processed by the model",
                 [*LABELS, "kind"])
INFERENCE_SECONDS = Histogram("ml_inference_seconds", "Time to generate one batch", LABELS,
                              buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
BATCH_SIZE = Histogram("ml_batch_size", "Requests per generation batch", LABELS,
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
DECODE_ROWS = Histogram("ml_decode_rows", "Requests decoded together in one forward pass "
                        "(continuous batching: requests join and leave between passes)", LABELS,
                        buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
