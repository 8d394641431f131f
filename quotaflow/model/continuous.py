"""Continuous batching: requests join a running decode at its next step and leave it when they
end, so the model never idles while a static batch waits for its slowest row.

Each `generate` call is a ticket. One engine thread runs every forward pass; callers wait for
their own ticket. Between two passes the engine
- joins the tickets that arrived: their rows are prefilled in a pass of their own
  (`quotaflow.model.prefill`), then their KV caches are merged with the running ones, the
  shorter side left-padded with masked positions;
- drops rows that ended, and trims cache columns that no remaining row attends to.
Both happen where the caches live, on the CPU or on the GPU (`quotaflow.model.kv_ops`).
Masked positions change nothing a row attends to, and positions are per row, so a row's output
depends neither on its batch-mates nor on when it joined (greedy, fp32), as in a static batch.

The per-row rules are the static loop's: a row is fed end-of-sequence never; it ends on
end-of-sequence or a stop sequence ("stop"), at its budget ("length"), or when its ticket's
stream reports it cancelled after a pass; it is billed the passes it ran."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quotaflow.events.status import FinishReason
from quotaflow.model.base import GenerationRequest
from quotaflow.model.kv_ops import HostKvOps, KvOps, stack_left
from quotaflow.model.prefill import Prefill, StepFn
from quotaflow.model.sampling import pick
from quotaflow.model.streaming import BatchStream, sync_streams
from quotaflow.model.tokenizer import ChatTokenizer, TextDecoder

log = logging.getLogger(__name__)

@dataclass(eq=False)
class Ticket:
    """One `generate` call: its requests, their prompts and, once done, their tokens."""

    batch: Sequence[GenerationRequest]
    prompts: list[list[int]]
    stream: BatchStream
    out: list[list[int]] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)  # most rows in a pass while each row ran
    live: int = 0  # rows not yet ended
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(eq=False)
class Row:
    ticket: Ticket
    i: int  # index in the ticket's batch
    budget: int
    rng: np.random.Generator
    decoder: TextDecoder
    next_token: int = 0  # picked, not yet fed
    ended: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.ticket.batch[self.i]


class DecodeEngine:
    def __init__(self, tokenizer: ChatTokenizer, step: StepFn, prefill: Prefill,
                 on_pass: Callable[[int], None] = lambda rows: None,
                 kv: KvOps | None = None) -> None:
        self.tokenizer = tokenizer
        self.kv = kv or HostKvOps()  # joins and trims the caches where they live
        self._on_pass = on_pass  # told how many rows each decode pass ran
        self._step = step
        self.prefill = prefill
        self._cond = threading.Condition()
        self._pending: list[Ticket] = []
        self._thread: threading.Thread | None = None
        # The running batch, owned by the engine thread: one entry per row, in order.
        self.rows: list[Row] = []
        self._past: list[Any] = []
        self._mask = np.zeros((0, 0), dtype=np.int64)  # [rows, cached positions]
        self._pos = np.zeros((0, 1), dtype=np.int64)  # each row's next position

    @property
    def queued(self) -> int:
        """Calls waiting to join the running batch at its next step."""
        with self._cond:
            return len(self._pending)

    def run(self, batch: Sequence[GenerationRequest], prompts: list[list[int]],
            stream: BatchStream) -> Ticket:
        """Decode `batch` alongside whatever is running; returns when all its rows ended."""
        ticket = Ticket(batch, prompts, stream, [[] for _ in batch], [0] * len(batch),
                        len(batch))
        with self._cond:
            self._pending.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="decode", daemon=True)
                self._thread.start()
            self._cond.notify()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self.rows:
                    self._cond.wait()
                joining, self._pending = self._pending, []
            try:
                if joining:
                    self._join(joining)
                if self.rows:
                    self._advance()
            except Exception as exc:  # every ticket in the batch fails; the engine goes on
                log.exception("decode step failed; failing %d rows", len(self.rows))
                for ticket in {r.ticket for r in self.rows} | set(joining):
                    if not ticket.done.is_set():
                        ticket.error = exc
                        ticket.done.set()
                self._reset()

    def _join(self, tickets: list[Ticket]) -> None:
        fresh: list[Row] = []
        for t in tickets:
            rows = [Row(t, i, max(0, r.max_tokens), np.random.default_rng(r.seed),
                        self.tokenizer.text_decoder()) for i, r in enumerate(t.batch)]
            for row in rows:
                if row.budget == 0:
                    self._end(row, FinishReason.LENGTH)
            fresh += [r for r in rows if not r.ended]
        self._sync(tickets, fresh)  # cancelled before any pass
        fresh = [r for r in fresh if not r.ended]
        for done in self.prefill([r.ticket.prompts[r.i] for r in fresh]) if fresh else []:
            rows = [fresh[k] for k in done.rows]
            self._merge(rows, done.past, done.mask, done.next_pos)
            self._took(rows, done.logits)
        self._settle(tickets)

    def _advance(self) -> None:
        ids = np.array([[r.next_token] for r in self.rows], dtype=np.int64)
        self._mask = np.concatenate(
            [self._mask, np.ones((len(self.rows), 1), dtype=np.int64)], axis=1)
        logits, self._past = self._step(ids, self._mask, self._pos, self._past)
        self._on_pass(len(self.rows))
        self._pos = self._pos + 1
        self._took(self.rows, logits)
        self._settle(list(dict.fromkeys(r.ticket for r in self.rows)))

    def _took(self, rows: Sequence[Row], logits: Any) -> None:
        """Each row's next token from its logits of the pass just run; then the streams."""
        eos = self.tokenizer.eos_token_id
        for row, row_logits in zip(rows, logits, strict=True):
            row.ticket.peak[row.i] = max(row.ticket.peak[row.i], len(rows))
            token = pick(row_logits, row.request, row.rng)
            row.ticket.out[row.i].append(token)
            row.next_token = token
            if token == eos or row.ticket.stream.add(row.i, row.decoder.step(token)):
                self._end(row, FinishReason.STOP)
            elif len(row.ticket.out[row.i]) >= row.budget:
                self._end(row, FinishReason.LENGTH)
        self._sync(list(dict.fromkeys(r.ticket for r in rows)),
                   [r for r in rows if not r.ended])

    def _sync(self, tickets: Sequence[Ticket], live: Sequence[Row]) -> None:
        """Once a pass: publish the tickets' deltas (one round trip per sink), and end the rows
        reported cancelled."""
        rows = [[r for r in live if r.ticket is t] for t in tickets]
        gone = sync_streams([(t.stream, [r.i for r in mine])
                             for t, mine in zip(tickets, rows, strict=True)])
        for mine, cancelled in zip(rows, gone, strict=True):
            for row in mine:
                if row.i in cancelled:
                    self._end(row, FinishReason.CANCELLED)

    def _end(self, row: Row, finish: FinishReason) -> None:
        t = row.ticket
        row.ended = True
        t.live -= 1
        t.stream.add(row.i, row.decoder.rest())
        t.stream.end(row.i, finish, len(t.prompts[row.i]), len(t.out[row.i]))

    def _settle(self, tickets: Sequence[Ticket]) -> None:
        """Release finished tickets; drop ended rows and the cache columns nobody needs."""
        for t in tickets:
            if t.live == 0 and not t.done.is_set():
                t.stream.close()
                t.done.set()
        keep = [k for k, r in enumerate(self.rows) if not r.ended]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        self.rows = [self.rows[k] for k in keep]
        self._mask, self._pos = self._mask[keep], self._pos[keep]
        first = int(self._mask.any(axis=0).argmax())
        self._mask = self._mask[:, first:]
        self._past = self.kv.take(self._past, keep, first)

    def _merge(self, rows: list[Row], past: list[Any], mask: Any, pos: Any) -> None:
        """Append freshly prefilled rows to the running batch, padding the shorter caches."""
        if not self.rows:
            self.rows, self._past, self._mask, self._pos = list(rows), past, mask, pos
            return
        self._past = self.kv.stack_left(self._past, past)
        self._mask = stack_left([self._mask, mask], 1)
        self._pos = np.concatenate([self._pos, pos])
        self.rows = self.rows + rows

    def _reset(self) -> None:
        self.rows, self._past = [], []
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._pos = np.zeros((0, 1), dtype=np.int64)
