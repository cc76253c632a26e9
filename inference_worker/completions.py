"""OpenAI legacy Completions requests, parsed strictly, and errors in OpenAI's shape.

Torch-free: the web side validates a request here before anything is queued. The parsed
``params`` are the keyword arguments of the engine's ``SamplingParams`` (the engine builds it;
this module never imports ``inference_worker.engine``). Nothing is silently ignored or coerced:
an unknown field, an unsupported one, a wrong JSON type or a value out of range is a 400 that
names the ``param`` and says what is allowed. ``null`` means "the default" for every optional
field, as in OpenAI's schema.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class CompletionError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

    Build it with the constructors below so each status keeps one ``type``; ``retry_after``
    (seconds) becomes a ``Retry-After`` header, which the ``openai`` client honours.
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.retry_after = param, code, retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    @classmethod
    def invalid(cls, message: str, *, param: str | None) -> CompletionError:
        """400: the request itself is wrong; ``param`` names the field (None: the whole body)."""
        return cls(400, message, param=param)

    @classmethod
    def unauthenticated(cls, message: str) -> CompletionError:
        """401: no API key, or not one we issued (OpenAI's type and code for a bad key)."""
        return cls(401, message, code="invalid_api_key")

    @classmethod
    def forbidden(cls, message: str, *, code: str) -> CompletionError:
        """403: a valid key that may not do this; ``code`` says why ("no_grant",
        "licence_required", "token_scope"). OpenAI has no stable type for 403, so one clear one."""
        return cls(403, message, type="permission_error", code=code)

    @classmethod
    def model_not_found(cls, model: str) -> CompletionError:
        """404 as OpenAI words it: unknown and not-yours read the same, so ids do not leak."""
        return cls(404, f"The model '{model}' does not exist or you do not have access to it.",
                   param="model", code="model_not_found")

    @classmethod
    def rate_limited(cls, message: str, *, limit: str, retry_after: int) -> CompletionError:
        """429 as OpenAI sends it: ``code`` "rate_limit_exceeded", ``type`` the limit that was
        hit ("requests", "tokens", "concurrent_requests")."""
        return cls(429, message, type=limit, code="rate_limit_exceeded", retry_after=retry_after)

    @classmethod
    def unavailable(cls, message: str, *, retry_after: int | None = None) -> CompletionError:
        """503: no worker is serving the model right now."""
        return cls(503, message, type="server_error", code="no_worker", retry_after=retry_after)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]  # each prompt: a text, or token ids used exactly as given
    params: dict                    # the keyword arguments of the engine's SamplingParams
    stream: bool
    include_usage: bool
    user: str


MAX_PROMPTS = 1024
MAX_SEQUENCES = 128   # n and best_of, as OpenAI
MAX_STOP = 4
MAX_USER_CHARS = 256
UNSUPPORTED = ("logit_bias", "suffix")


@dataclass(frozen=True)
class _Field:
    """A scalar field: its JSON type (an int is also a valid float), default and bounds."""

    kind: type
    default: Any
    low: int | None = None
    high: int | None = None
    low_exclusive: bool = False

    def allowed(self) -> str:
        text = {bool: "a boolean (true or false)", int: "an integer", float: "a number"}[self.kind]
        if self.low_exclusive:
            text += f" greater than {self.low}" + (f" and at most {self.high}" if self.high is not None else "")
        elif self.high is not None:
            text += f" from {self.low} to {self.high}"
        elif self.low is not None:
            text += f" of at least {self.low}"
        return ("null or " if self.default is None else "") + text

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or self.kind is bool:  # JSON true is not 1
            return isinstance(value, bool) and self.kind is bool
        if not isinstance(value, (int, float) if self.kind is float else int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_exclusive else value >= self.low)
        return above and (self.high is None or value <= self.high)


FIELDS = {
    # OpenAI's fields; defaults are OpenAI's (temperature 1, not the engine's greedy 0).
    "max_tokens": _Field(int, 16, low=0),  # 0 only with echo: scores the prompt, generates nothing
    "temperature": _Field(float, 1.0, low=0, high=2),
    "top_p": _Field(float, 1.0, low=0, high=1, low_exclusive=True),
    "presence_penalty": _Field(float, 0.0, low=-2, high=2),
    "frequency_penalty": _Field(float, 0.0, low=-2, high=2),
    "n": _Field(int, 1, low=1, high=MAX_SEQUENCES),
    "best_of": _Field(int, None, low=1, high=MAX_SEQUENCES),
    "logprobs": _Field(int, None, low=0, high=5),
    "echo": _Field(bool, False),
    "seed": _Field(int, None, low=-(2**63), high=2**64 - 1),
    "stream": _Field(bool, False),
    # vLLM's extras.
    "min_tokens": _Field(int, 0, low=0),
    "top_k": _Field(int, 0, low=-1),  # 0 or -1: disabled
    "repetition_penalty": _Field(float, 1.0, low=0, low_exclusive=True),
    "ignore_eos": _Field(bool, False),
}
OTHER_FIELDS = ("model", "prompt", "stop", "stop_token_ids", "stream_options", "user", *UNSUPPORTED)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _invalid(param: str, allowed: str, value: Any) -> CompletionError:
    return CompletionError.invalid(f"'{param}' must be {allowed}; got {_shown(value)}.", param=param)


def _is_text(value: Any) -> bool:
    """A non-empty string that can be stored and tokenized: UTF-8 (no lone surrogates, which JSON's
    ``\\ud800`` escapes can spell) and no NUL, which PostgreSQL text and jsonb refuse."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_TEXT = "(valid Unicode without NUL characters)"


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_prompts(prompt: Any) -> list[str | list[int]]:
    """A string, an array of strings, an array of token ids or an array of token-id arrays."""
    allowed = (f"a non-empty string {_TEXT}, an array of such strings, an array of token ids (integers "
               "of at least 0) or an array of non-empty token-id arrays")
    if _is_text(prompt):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise _invalid("prompt", allowed, prompt)
    if all(_is_token_id(t) for t in prompt):
        return [list(prompt)]
    if all(_is_text(p) for p in prompt):
        prompts = list(prompt)
    elif all(isinstance(p, list) and p and all(_is_token_id(t) for t in p) for p in prompt):
        prompts = [list(p) for p in prompt]
    else:
        raise _invalid("prompt", allowed + " (not a mixture)", prompt)
    if len(prompts) > MAX_PROMPTS:
        raise CompletionError.invalid(f"'prompt' may hold at most {MAX_PROMPTS} prompts; got {len(prompts)}.",
                                      param="prompt")
    return prompts


def _parse_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if _is_text(stop):
        return [stop]
    if isinstance(stop, list) and len(stop) <= MAX_STOP and all(_is_text(s) for s in stop):
        return list(stop)
    raise _invalid("stop", f"null, a non-empty string {_TEXT} or an array of at most {MAX_STOP} such strings", stop)


def _parse_include_usage(stream_options: Any, *, stream: bool) -> bool:
    if stream_options is None:
        return False
    if not stream:
        raise CompletionError.invalid("'stream_options' is only allowed when 'stream' is true.",
                                      param="stream_options")
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise _invalid("stream_options", 'null or an object with only "include_usage"', stream_options)
    include_usage = stream_options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _invalid("stream_options.include_usage", "a boolean (true or false)", include_usage)
    return bool(include_usage)


def parse_completion_request(data: object) -> CompletionRequest:
    """Validate an OpenAI legacy Completions body; raises ``CompletionError`` (400) naming the
    offending ``param``. Token ids are checked against the model's vocabulary later."""
    if not isinstance(data, dict):
        raise CompletionError.invalid("The request body must be a JSON object.", param=None)
    unknown = [key for key in data if key not in FIELDS and key not in OTHER_FIELDS]
    if unknown:
        noun = "argument" if len(unknown) == 1 else "arguments"
        raise CompletionError.invalid(f"Unrecognized request {noun} supplied: {', '.join(map(str, unknown))}",
                                      param=str(unknown[0]))
    for name in UNSUPPORTED:
        if data.get(name) is not None:
            raise CompletionError.invalid(f"'{name}' is not supported by this server; remove it "
                                          "(nothing is silently ignored).", param=name)

    model = data.get("model")
    if not _is_text(model):
        raise _invalid("model", f"a non-empty string {_TEXT} naming the model", model)
    if data.get("prompt") is None:
        raise CompletionError.invalid("'prompt' is required.", param="prompt")
    prompts = _parse_prompts(data["prompt"])

    values = {}
    for name, spec in FIELDS.items():
        value = data.get(name)
        if value is not None and not spec.accepts(value):
            raise _invalid(name, spec.allowed(), value)
        values[name] = spec.default if value is None else spec.kind(value)
    stream = values.pop("stream")
    if values["top_k"] == -1:
        values["top_k"] = 0
    stop_token_ids = [] if data.get("stop_token_ids") is None else data["stop_token_ids"]
    if not isinstance(stop_token_ids, list) or not all(_is_token_id(t) for t in stop_token_ids):
        raise _invalid("stop_token_ids", "null or an array of token ids (integers of at least 0)", stop_token_ids)
    user = "" if data.get("user") is None else data["user"]
    if not isinstance(user, str) or len(user) > MAX_USER_CHARS or (user and not _is_text(user)):
        raise _invalid("user", f"a string of at most {MAX_USER_CHARS} characters {_TEXT}", user)

    if values["max_tokens"] == 0 and not values["echo"]:
        raise CompletionError.invalid("'max_tokens' may be 0 only with 'echo' true (to score the prompt); "
                                      "otherwise it must be at least 1.", param="max_tokens")
    if values["min_tokens"] > values["max_tokens"]:
        raise _invalid("min_tokens", f"at most max_tokens ({values['max_tokens']})", values["min_tokens"])
    best_of, n = values["best_of"], values["n"]
    if best_of is not None and best_of < n:
        raise _invalid("best_of", f"at least n ({n})", best_of)
    if best_of is not None and best_of > n and stream:
        raise CompletionError.invalid("'best_of' greater than 'n' cannot be streamed: the best completions "
                                      "are known only at the end. Set 'stream' to false.", param="best_of")

    params = {**values, "stop": _parse_stop(data.get("stop")), "stop_token_ids": list(stop_token_ids)}
    return CompletionRequest(model=model, prompts=prompts, params=params, stream=stream,
                             include_usage=_parse_include_usage(data.get("stream_options"), stream=stream),
                             user=user)
