"""What callers send and get back: requests, sampling parameters, completions, stream events."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class SamplingParams:
    """How one prompt is continued (the fields of metaseq's ``/completions``, done right).

    ``temperature`` 0 is greedy. ``seed`` makes sampling reproducible across runs, batch
    compositions and TP degrees; ``logprobs`` k returns the k most likely tokens at every step.
    ``truncate`` is the policy when prompt + max_tokens exceeds the model's positions:
    ``"error"`` refuses the request, ``"left"`` drops the oldest prompt tokens.
    """

    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    best_of: int | None = None
    logprobs: int | None = None
    echo: bool = False
    seed: int | None = None
    truncate: Literal["error", "left"] = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        checks = {
            "max_tokens must be >= 0": self.max_tokens >= 0,
            "min_tokens must be between 0 and max_tokens": 0 <= self.min_tokens <= self.max_tokens,
            "temperature must be >= 0": self.temperature >= 0,
            "top_k must be >= 0": self.top_k >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "repetition_penalty must be > 0": self.repetition_penalty > 0,
            "n must be >= 1": self.n >= 1,
            "best_of must be >= n": self.best_of is None or self.best_of >= self.n,
            "logprobs must be between 0 and 20": self.logprobs is None or 0 <= self.logprobs <= 20,
            "stop strings must be non-empty": all(self.stop),
            "truncate must be 'error' or 'left'": self.truncate in ("error", "left"),
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(message)

    @property
    def n_sequences(self) -> int:
        return self.best_of or self.n

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Request:
    """One prompt (token ids, used exactly as given) and how to continue it."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    cancel: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"prompt_ids": list(self.prompt_ids), "params": asdict(self.params), "request_id": self.request_id}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Request:
        return cls(prompt_ids=d["prompt_ids"], params=SamplingParams(**d["params"]), request_id=d["request_id"])


@dataclass
class TopLogprob:
    token_id: int
    logprob: float


@dataclass
class Completion:
    """One generated continuation. With ``echo`` the prompt comes first in ids, text and logprobs
    (the first prompt token has no logprob: None)."""

    index: int
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    cumulative_logprob: float | None  # computed when logprobs or best_of > n are asked for
    logprobs: list[float | None] | None = None
    top_logprobs: list[list[TopLogprob]] | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_ids: list[int]
    completions: list[Completion]


@dataclass(frozen=True)
class TokenEvent:
    """Streamed once per generated token; ``text`` is the newly settled text (may be empty while
    a stop string or a multi-byte character is still open), ``finish_reason`` is set on the last.
    ``logprob`` is the token's (always computed); ``top`` the most likely tokens when asked for."""

    request_id: str
    index: int
    token_id: int | None
    text: str
    finish_reason: FinishReason | None
    logprob: float | None = None
    top: list[TopLogprob] | None = None


#: Streaming callback; returning False cancels that request at the next token boundary.
TokenCallback = Callable[[TokenEvent], "bool | None"]
