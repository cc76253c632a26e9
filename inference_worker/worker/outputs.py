"""The engine's results in the shapes the portal stores and streams (OpenAI's choices and logprobs)."""

from __future__ import annotations

import math

from inference_worker.engine.requests import RequestOutput, TokenEvent, TopLogprob
from inference_worker.tokenization import OPTTokenizer


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def top_dict(tokenizer: OPTTokenizer, top: list[TopLogprob] | None) -> dict[str, float] | None:
    if top is None:
        return None
    return {tokenizer.decode([t.token_id]): float(t.logprob) for t in top}


def token_event_data(tokenizer: OPTTokenizer, event: TokenEvent, choice_index: int) -> dict:
    """A ``token`` stream event: the settled text, the token and (when computed) its logprobs."""
    return {
        "index": choice_index,
        "text": event.text,
        "token_id": event.token_id,
        "token": tokenizer.decode([event.token_id]) if event.token_id is not None else "",
        "logprob": _number(event.logprob),
        "top_logprobs": top_dict(tokenizer, event.top),
    }


def choices(tokenizer: OPTTokenizer, outputs: list[RequestOutput], *, n: int, logprobs: int | None,
            echo: bool) -> list[dict]:
    """One stored choice per completion, indexed ``prompt_index * n + i`` as OpenAI numbers them."""
    rows = []
    for prompt_index, output in enumerate(outputs):
        prompt_text = tokenizer.decode(output.prompt_ids)
        for completion in output.completions:
            row = {
                "index": prompt_index * n + completion.index,
                "prompt_index": prompt_index,
                "text": completion.text,
                "token_ids": completion.token_ids,
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
            if logprobs is not None:
                start = 0 if echo else len(prompt_text)
                row["logprobs"] = _logprobs(tokenizer, completion.token_ids, completion.logprobs or [],
                                            completion.top_logprobs, start)
            rows.append(row)
    return sorted(rows, key=lambda r: r["index"])


def _logprobs(tokenizer: OPTTokenizer, ids: list[int], values: list[float | None],
              top: list[list[TopLogprob]] | None, start: int) -> dict:
    """OpenAI's ``logprobs`` object; ``text_offset`` counts characters from the start of the prompt
    (so, with ``echo``, from the start of the returned text)."""
    offsets = [start + len(tokenizer.decode(ids[:k])) for k in range(len(ids))]
    return {
        "tokens": [tokenizer.decode([i]) for i in ids],
        "token_logprobs": [_number(v) for v in values],
        "top_logprobs": [top_dict(tokenizer, t) if t else None for t in top] if top is not None else None,
        "text_offset": offsets,
    }
