"""Continuous batching: which sequences prefill and which decode at each step.

Sequences take a KV-cache slot when they are admitted and give it back when they finish, so
requests join and leave at token boundaries. Each step processes at most ``max_batch_tokens``
tokens (one per decoding sequence, the rest spent on prompt chunks) in at most ``max_batch``
slots; a prompt longer than what is left is prefilled in chunks over several steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .requests import FinishReason, Request, TokenCallback, TopLogprob
from .sampling import SamplingState


@dataclass(eq=False)
class Sequence:
    """One continuation being generated (a request with ``n``/``best_of`` has several)."""

    request: Request
    index: int
    sampling: SamplingState
    slot: int | None = None
    cached: int = 0  # tokens written to the KV cache
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[TopLogprob]] = field(default_factory=list)
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_top_logprobs: list[list[TopLogprob]] = field(default_factory=list)
    text: str = ""
    streamed: int = 0  # characters of text already streamed
    finish_reason: FinishReason | None = None
    on_token: TokenCallback | None = None  # rank 0 only
    leader: Sequence | None = None  # the request's first sequence, whose prompt cache this one may copy

    @property
    def prompt_ids(self) -> list[int]:
        return self.sampling.prompt_ids

    @property
    def output_ids(self) -> list[int]:
        return self.sampling.output_ids

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class PrefillChunk:
    sequence: Sequence
    start: int
    stop: int

    @property
    def completes_prompt(self) -> bool:
        return self.stop == len(self.sequence.prompt_ids)


@dataclass
class StepPlan:
    prefill: list[PrefillChunk]
    decode: list[Sequence]


class Scheduler:
    def __init__(self, max_batch: int, max_batch_tokens: int):
        if max_batch_tokens <= max_batch:
            raise ValueError("max_batch_tokens must exceed max_batch so prompts can make progress")
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_slots = list(range(max_batch))

    def add(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def plan(self) -> StepPlan:
        decode = [s for s in self.running if not s.prefilling]
        budget = self.max_batch_tokens - len(decode)
        held = []  # siblings whose leader is prefilling their shared prompt: they will copy it
        while self.waiting and self.free_slots and budget > 0:
            sequence = self.waiting.popleft()
            if sequence.leader is not None and sequence.leader.slot is not None and sequence.leader.prefilling:
                held.append(sequence)
                continue
            sequence.slot = self.free_slots.pop(0)
            self.running.append(sequence)
            if not sequence.prefilling:  # nothing to prefill (cannot happen with non-empty prompts)
                decode.append(sequence)
        self.waiting.extendleft(reversed(held))
        prefill = []
        for sequence in self.running:
            if budget <= 0:
                break
            if sequence.prefilling:
                stop = min(len(sequence.prompt_ids), sequence.cached + budget)
                prefill.append(PrefillChunk(sequence, sequence.cached, stop))
                budget -= stop - sequence.cached
        return StepPlan(prefill, decode)

    def fork(self, leader: Sequence) -> list[Sequence]:
        """Admit ``leader``'s waiting siblings into free slots now that its prompt is cached, so
        they copy that cache instead of prefilling the same prompt; the rest prefill later."""
        siblings = [s for s in self.waiting if s.leader is leader][: len(self.free_slots)]
        for sibling in siblings:
            self.waiting.remove(sibling)
            sibling.slot = self.free_slots.pop(0)
            self.running.append(sibling)
        return siblings

    def retire_finished(self) -> list[tuple[Sequence, int, int]]:
        """Free the slots of finished sequences, then keep the running ones in the lowest slots
        (so a batch reads the cache as one view). Returns the moves ``(sequence, from, to)``;
        the caller copies their cache rows and must do so in order."""
        done = [s for s in self.running if s.finished]
        for sequence in done:
            self.running.remove(sequence)
            self.free_slots.append(sequence.slot)
        moves = []
        self.free_slots.sort()
        for sequence in sorted(self.running, key=lambda s: -s.slot):
            if not self.free_slots or self.free_slots[0] > sequence.slot:
                break
            target = self.free_slots.pop(0)
            moves.append((sequence, sequence.slot, target))
            self.free_slots.append(sequence.slot)
            self.free_slots.sort()
            sequence.slot = target
        return moves

    def cancel_waiting(self, request: Request) -> list[Sequence]:
        cancelled = [s for s in self.waiting if s.request is request]
        for sequence in cancelled:
            self.waiting.remove(sequence)
        return cancelled
