"""The OpenAI-compatible operations in the portal's OpenAPI schema.

``/api/v1/completions`` and ``/api/v1/models`` are async Django views, not DRF views, so
drf-spectacular cannot see them; ``add_openai_operations`` (a postprocessing hook) adds them.
The request's fields and bounds are read from ``inference_worker.completions``, the parser
that enforces them, so the schema cannot drift from what the server accepts.
"""

from __future__ import annotations

from inference_worker.completions import FIELDS, MAX_PROMPTS, MAX_STOP, MAX_USER_CHARS, UNSUPPORTED

_REF = "#/components/schemas/"
_TAG = "openai"

_DESCRIPTIONS = {
    "max_tokens": "Tokens to generate per choice (0 only with `echo`: scores the prompt). Your limit applies.",
    "temperature": "0 is greedy.",
    "top_p": "Nucleus sampling.",
    "n": "Choices per prompt.",
    "best_of": "Sequences sampled per prompt; the `n` with the highest mean log-probability are returned.",
    "logprobs": "Log-probabilities of the chosen token and of this many most likely ones.",
    "echo": "Return the prompt before the completion.",
    "seed": "The same seed, request and model give the same completion.",
    "stream": "Send server-sent events (`text/event-stream`) as tokens settle, ending with `data: [DONE]`.",
    "min_tokens": "No end of sequence or stop before this many tokens (vLLM's extra).",
    "top_k": "Sample among the k most likely tokens; 0 or -1 disables it (vLLM's extra).",
    "repetition_penalty": "Divides the logits of tokens already seen (vLLM's extra).",
    "ignore_eos": "Keep generating past the end-of-sequence token (vLLM's extra).",
}


def _field_schema(name: str) -> dict:
    spec = FIELDS[name]
    schema: dict = {"type": {bool: "boolean", int: "integer", float: "number"}[spec.kind], "nullable": True}
    if spec.low is not None:
        schema["minimum"] = spec.low
        if spec.low_exclusive:
            schema["exclusiveMinimum"] = True
    if spec.high is not None:
        schema["maximum"] = spec.high
    if spec.default is not None:
        schema["default"] = spec.default
    if name in _DESCRIPTIONS:
        schema["description"] = _DESCRIPTIONS[name]
    return schema


_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}


def _completion_request() -> dict:
    properties = {
        "model": {"type": "string", "minLength": 1, "description": "A release slug from `GET /api/v1/models`."},
        "prompt": {"oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": {"type": "string", "minLength": 1}},
            _TOKEN_IDS,
            {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": _TOKEN_IDS},
        ], "description": "A text, texts, token ids (used exactly as given) or arrays of token ids."},
        **{name: _field_schema(name) for name in FIELDS},
        "stop": {"oneOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "maxItems": MAX_STOP, "items": {"type": "string", "minLength": 1}}],
                 "nullable": True, "description": "Generation ends before any of these strings, which are not returned."},
        "stop_token_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}, "nullable": True},
        "stream_options": {"type": "object", "nullable": True, "additionalProperties": False,
                           "properties": {"include_usage": {"type": "boolean", "nullable": True}},
                           "description": "Only with `stream`: `include_usage` sends a last chunk with the usage."},
        "user": {"type": "string", "maxLength": MAX_USER_CHARS, "nullable": True},
    }
    return {
        "type": "object", "required": ["model", "prompt"], "properties": properties, "additionalProperties": False,
        "description": "OpenAI's legacy Completions request. Nothing is ignored: an unknown field, "
                       f"{', '.join(f'`{name}`' for name in UNSUPPORTED)} (not supported) or a value out of range "
                       "is a 400 naming the `param`. Cross-field rules (`min_tokens` at most `max_tokens`, `best_of` "
                       "at least `n`, no streamed `best_of` above `n`) and your limits are 400s too.",
    }


_LOGPROBS = {
    "type": "object", "nullable": True,
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": {"type": "number", "nullable": True}},
        "top_logprobs": {"type": "array", "nullable": True,
                         "items": {"type": "object", "nullable": True, "additionalProperties": {"type": "number"}}},
        "text_offset": {"type": "array", "items": {"type": "integer"}},
    },
}
_FINISH_REASON = {"type": "string", "nullable": True, "enum": ["stop", "length", "cancelled", None],
                  "description": "`stop`: end of sequence or a stop string; `length`: `max_tokens` or the context."}
_USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
          "properties": {key: {"type": "integer", "minimum": 0}
                         for key in ("prompt_tokens", "completion_tokens", "total_tokens")}}


def _completion(*, chunk: bool) -> dict:
    choice = {"type": "object", "required": ["index", "text", "logprobs", "finish_reason"],
              "properties": {"index": {"type": "integer", "minimum": 0}, "text": {"type": "string"},
                             "logprobs": _LOGPROBS, "finish_reason": _FINISH_REASON}}
    return {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"] if not chunk else
        ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "pattern": "^cmpl-"},
            "object": {"type": "string", "enum": ["text_completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": {**_USAGE, "nullable": True} if chunk else _USAGE,
        },
    }


_MODEL = {
    "type": "object", "required": ["id", "object", "created", "owned_by", "context_length"],
    "properties": {
        "id": {"type": "string", "description": "The release slug, used as `model`."},
        "object": {"type": "string", "enum": ["model"]},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "context_length": {"type": "integer", "nullable": True,
                           "description": "Prompt plus completion tokens; null while the release's files cannot be read."},
    },
}
_MODEL_LIST = {"type": "object", "required": ["object", "data"],
               "properties": {"object": {"type": "string", "enum": ["list"]},
                              "data": {"type": "array", "items": {"$ref": _REF + "OpenAIModel"}}}}
_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}},
    "description": "OpenAI's error shape; `param` names the offending field, `code` says why.",
}

_ERROR_DESCRIPTIONS = {
    400: "Bad input: `param` names the field and the message says what is allowed.",
    401: "No API key, or not a valid personal API token (`invalid_api_key`).",
    403: "A valid token that may not do this: `code` is `token_scope`, `no_grant` or `licence_required`.",
    404: "No such model among yours (`model_not_found`): unknown and not-yours read the same.",
    405: "Wrong method; `Allow` names the right one.",
    429: "A limit was hit: `type` names it (`requests`, `tokens`, `concurrent_requests`); `Retry-After` says "
         "when to try again.",
    503: "No worker is serving the model, or the job failed on the worker; `Retry-After` when known.",
}


_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"oneOf": [
        {"type": "string", "contentMediaType": "application/json",
         "contentSchema": {"oneOf": [{"$ref": _REF + "CompletionChunk"}, {"$ref": _REF + "OpenAIError"}]}},
        {"type": "string", "enum": ["[DONE]"]},
    ]}},
    "description": "One server-sent event (OpenAPI 3.0: this schema describes each event). With `stream`: "
                   "`data: <CompletionChunk>` events as text settles (and `: keep-alive` comments), the usage "
                   "chunk if asked, then `data: [DONE]`; a failure on the way sends `data: <OpenAIError>` and ends.",
}


def _errors(*codes: int) -> dict:
    return {str(code): {"description": _ERROR_DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": {"$ref": _REF + "OpenAIError"}}}}
            for code in codes}


def _ok(description: str, component: str, *, events: bool = False) -> dict:
    content = {"application/json": {"schema": {"$ref": _REF + component}}}
    if events:
        content["text/event-stream"] = {"schema": _EVENT}
    return {"200": {"description": description, "content": content}}


def _operations() -> dict:
    security = [{"bearerAuth": []}]
    slug = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
            "description": "The release slug."}
    return {
        "/api/v1/completions": {"post": {
            "operationId": "completions_create", "tags": [_TAG], "security": security,
            "summary": "Complete prompts with a released model (OpenAI's legacy Completions API)",
            "description": "Needs a token with the `inference` scope and an active grant for the model. The `openai` "
                           "client works unmodified: `OpenAI(base_url=\".../api/v1\", api_key=token)`.",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": _REF + "CompletionRequest"}}}},
            "responses": {**_ok("The completion, or its chunks as server-sent events.", "Completion", events=True),
                          **_errors(400, 401, 403, 404, 405, 429, 503)},
        }},
        "/api/v1/models": {"get": {
            "operationId": "models_list", "tags": [_TAG], "security": security,
            "summary": "The models you may prompt: releases you hold an active grant for",
            "responses": {**_ok("Your models.", "OpenAIModelList"), **_errors(401, 403, 405)},
        }},
        "/api/v1/models/{slug}": {"get": {
            "operationId": "models_retrieve", "tags": [_TAG], "security": security, "parameters": [slug],
            "summary": "One of your models",
            "responses": {**_ok("The model.", "OpenAIModel"), **_errors(401, 403, 404, 405)},
        }},
    }


def add_openai_operations(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the OpenAI-compatible paths and their components."""
    result.setdefault("paths", {}).update(_operations())
    result.setdefault("components", {}).setdefault("schemas", {}).update({
        "CompletionRequest": _completion_request(),
        "Completion": _completion(chunk=False),
        "CompletionChunk": _completion(chunk=True),
        "OpenAIModel": _MODEL,
        "OpenAIModelList": _MODEL_LIST,
        "OpenAIError": _ERROR,
    })
    result["paths"] = dict(sorted(result["paths"].items()))
    return result
