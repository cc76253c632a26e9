"""Turning a batch of logits into next tokens, on a vocabulary split across TP ranks.

Every rank holds logits for its vocabulary slice (B, V_r). Greedy and temperature sampling never
gather the full logits: sampling is Gumbel-max (``argmax(logits / T + g)``, g ~ Gumbel drawn from
the sequence's own seeded generator over the whole vocabulary), so only a (value, index) pair per
rank is exchanged, and the same seed picks the same tokens at any TP degree. Top-k and top-p need
the whole distribution, so only those batches gather it. Reported logprobs are those of the
model's own distribution (before penalties and temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .requests import SamplingParams, TopLogprob
from .tp import TensorParallel


@dataclass
class SamplingState:
    """Per-sequence sampling inputs: parameters, seeded generator, tokens seen so far."""

    params: SamplingParams
    generator: torch.Generator | None
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    eos_id: int = 2

    @property
    def needs_logprobs(self) -> bool:
        return self.params.logprobs is not None or self.params.n_sequences > self.params.n

    @property
    def needs_logits_processing(self) -> bool:
        p = self.params
        return (
            p.repetition_penalty != 1.0
            or bool(p.presence_penalty or p.frequency_penalty)
            or len(self.output_ids) < p.min_tokens
        )

    @classmethod
    def create(cls, params: SamplingParams, seed: int, prompt_ids: list[int], eos_id: int) -> SamplingState:
        generator = None
        if not params.greedy:
            generator = torch.Generator().manual_seed(seed)
        return cls(params, generator, prompt_ids, eos_id=eos_id)


@dataclass
class Sampled:
    token_id: int
    logprob: float
    top: list[TopLogprob] | None


class Sampler:
    def __init__(self, tp: TensorParallel, vocab_size: int, vocab_start: int, rows_per_rank: int):
        self.tp = tp
        self.vocab_size = vocab_size
        self.vocab_start = vocab_start
        self.rows = rows_per_rank

    # -- vocabulary-parallel reductions -------------------------------------------------------

    def _global_argmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Index into the full vocabulary of each row's maximum (first one on ties)."""
        value, index = scores.max(dim=-1)  # (B,)
        if self.tp.world == 1:
            return index
        values = self.tp.all_gather(value.unsqueeze(1), dim=1)  # (B, world)
        indices = self.tp.all_gather((index + self.vocab_start).unsqueeze(1), dim=1)
        return indices.gather(1, values.argmax(dim=1, keepdim=True)).squeeze(1)

    def _global_logsumexp(self, logits: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, 1)
        return torch.logsumexp(self.tp.all_gather(lse, dim=1), dim=1)

    def _global_values(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``logits[b, ids[b]]`` for full-vocabulary ids, wherever the id lives."""
        local = ids - self.vocab_start
        inside = (local >= 0) & (local < self.rows)
        value = logits.gather(1, local.clamp(0, self.rows - 1).unsqueeze(1)).squeeze(1)
        value = torch.where(inside, value, torch.full_like(value, float("-inf")))
        return self.tp.all_gather(value.unsqueeze(1), dim=1).max(dim=1).values

    def _global_topk(self, logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, index = logits.topk(min(k, self.rows), dim=-1)
        values = self.tp.all_gather(values, dim=1)
        index = self.tp.all_gather(index + self.vocab_start, dim=1)
        best, where = values.topk(k, dim=-1)
        return best, index.gather(1, where)

    def _gumbel(self, generator: torch.Generator, device: torch.device, full: bool) -> torch.Tensor:
        """Gumbel noise drawn for the full vocabulary (padded to world * V_r), or this rank's slice."""
        u = torch.rand(self.vocab_size, generator=generator, dtype=torch.float64)
        noise = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12))).float()
        if full:
            padding = self.rows * self.tp.world - self.vocab_size
            return torch.cat([noise, noise.new_zeros(padding)]).to(device)
        local = noise[self.vocab_start : self.vocab_start + self.rows]
        if local.numel() < self.rows:
            local = torch.cat([local, local.new_zeros(self.rows - local.numel())])
        return local.to(device)

    # -- the step ---------------------------------------------------------------------------

    def token_logprobs(self, logits: torch.Tensor, ids: torch.Tensor, top_k: int) -> tuple[torch.Tensor, tuple | None]:
        """Logprob of ``ids`` (B,) under ``logits`` (B, V_r), and the top-k alternatives."""
        logits = self._mask_padding(logits.float())
        lse = self._global_logsumexp(logits)
        chosen = self._global_values(logits, ids) - lse
        top = None
        if top_k:
            values, index = self._global_topk(logits, top_k)
            top = (values - lse.unsqueeze(1), index)
        return chosen, top

    def _mask_padding(self, logits: torch.Tensor) -> torch.Tensor:
        valid = self.vocab_size - self.vocab_start
        if valid < self.rows:
            logits = logits.clone()
            logits[:, max(valid, 0) :] = float("-inf")
        return logits

    def sample(self, logits: torch.Tensor, states: list[SamplingState]) -> list[Sampled]:
        """Next token for each row of ``logits`` (B, V_r); logprobs only for rows that need them
        (``logprobs`` asked for, or ``best_of`` ranking), otherwise NaN."""
        raw = self._mask_padding(logits.float())
        if all(s.params.greedy and not s.needs_logits_processing for s in states):
            tokens = self._global_argmax(raw)  # plain greedy: nothing else to compute
            return self._with_logprobs(raw, tokens, states)
        scores = raw.clone()
        for b, state in enumerate(states):
            self._apply_penalties(scores[b], state)
        temperature = torch.tensor([s.params.temperature or 1.0 for s in states], device=raw.device)
        scores = scores / temperature.unsqueeze(1)
        needs_full = any(s.params.top_k or s.params.top_p < 1 for s in states if not s.params.greedy)
        if needs_full:
            scores = self.tp.all_gather(scores, dim=1)  # (B, V) on every rank
            for b, state in enumerate(states):
                if not state.params.greedy:
                    scores[b] = _top_k_top_p(scores[b], state.params.top_k, state.params.top_p)
        for b, state in enumerate(states):
            if not state.params.greedy:
                scores[b] += self._gumbel(state.generator, raw.device, full=needs_full)
        tokens = scores.argmax(dim=-1) if needs_full else self._global_argmax(scores)
        return self._with_logprobs(raw, tokens, states)

    def _with_logprobs(self, raw: torch.Tensor, tokens: torch.Tensor, states: list[SamplingState]) -> list[Sampled]:
        ids = tokens.tolist()
        if not any(s.needs_logprobs for s in states):
            return [Sampled(token, float("nan"), None) for token in ids]
        top_k = max((s.params.logprobs or 0) for s in states)
        chosen, top = self.token_logprobs(raw, tokens, top_k)
        out = []
        for b, state in enumerate(states):
            alternatives = None
            if state.params.logprobs:
                k = state.params.logprobs
                alternatives = [TopLogprob(int(i), float(v)) for v, i in zip(top[0][b, :k], top[1][b, :k])]
            out.append(Sampled(ids[b], float(chosen[b]), alternatives))
        return out

    def _apply_penalties(self, row: torch.Tensor, state: SamplingState) -> None:
        """In place on one row (V_r) of this rank's slice."""
        p = state.params
        lo, hi = self.vocab_start, self.vocab_start + self.rows
        if p.repetition_penalty != 1.0:
            seen = {i - lo for i in (*state.prompt_ids, *state.output_ids) if lo <= i < hi}
            if seen:
                idx = torch.tensor(sorted(seen), device=row.device)
                vals = row[idx]
                row[idx] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and state.output_ids:
            counts = torch.bincount(torch.tensor(state.output_ids), minlength=hi)[lo:hi].to(row)
            row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row)
        if len(state.output_ids) < p.min_tokens:
            blocked = [i - lo for i in (state.eos_id, *p.stop_token_ids) if lo <= i < hi]
            row[blocked] = float("-inf")


def _top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the top k and outside the smallest set with mass >= top_p."""
    if top_k and top_k < scores.numel():
        kth = scores.topk(top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        probs = sorted_scores.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        drop = mass_before >= top_p  # keeps the token that crosses top_p
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return scores
