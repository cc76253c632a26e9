"""Parsing OpenAI legacy Completions requests: what a client sending a wrong body is told."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference_worker.completions import CompletionError, CompletionRequest, parse_completion_request

BASE = {"model": "opt-125m", "prompt": "Hello"}


def parse(**fields) -> CompletionRequest:
    return parse_completion_request({**BASE, **fields})


def rejected(data: object) -> CompletionError:
    with pytest.raises(CompletionError) as caught:
        parse_completion_request(data)
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    return caught.value


@pytest.mark.parametrize(
    "prompt, prompts",
    [
        ("Hello", ["Hello"]),
        (["a", "b c"], ["a", "b c"]),
        ([2, 0, 31414], [[2, 0, 31414]]),
        ([[2, 5], [7]], [[2, 5], [7]]),
    ],
)
def test_each_prompt_form_parses(prompt, prompts):
    assert parse(prompt=prompt).prompts == prompts


@pytest.mark.parametrize(
    "prompt",
    ["", [], [[]], [[1], []], [""], ["a", 1], [1, "a"], [[1], "a"], [1.0], [True], [-1], [[1, -1]],
     [["a"]], 5, {"text": "a"}, None, ["x"] * 1025],
)
def test_bad_prompts_are_rejected(prompt):
    assert rejected({**BASE, "prompt": prompt}).param == "prompt"


def test_prompt_and_model_are_required():
    assert rejected({"model": "opt-125m"}).param == "prompt"
    for model in (None, "", 5):
        assert rejected({"prompt": "x", "model": model}).param == "model"


@pytest.mark.parametrize("data", [[], "text", None, 3])
def test_body_must_be_an_object(data):
    assert rejected(data).param is None


def test_defaults():
    request = parse_completion_request(dict(BASE))
    assert request.params == {
        "max_tokens": 16, "min_tokens": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
        "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "stop": [], "stop_token_ids": [], "ignore_eos": False, "n": 1, "best_of": None,
        "logprobs": None, "echo": False, "seed": None,
    }
    assert (request.model, request.stream, request.include_usage, request.user) == ("opt-125m", False, False, "")


def test_null_means_the_default():
    nulls = {name: None for name in parse_completion_request(dict(BASE)).params}
    nulls.update(stream=None, stream_options=None, user=None, logit_bias=None, suffix=None)
    assert parse(**nulls) == parse_completion_request(dict(BASE))


def test_params_build_the_engines_sampling_params():
    from inference_worker.engine.requests import SamplingParams  # the test may import torch; the module may not

    request = parse(max_tokens=8, min_tokens=2, temperature=0, top_k=-1, top_p=0.9, repetition_penalty=1.2,
                    presence_penalty=-2, frequency_penalty=2, stop="\n", stop_token_ids=[2], ignore_eos=True,
                    n=2, best_of=3, logprobs=5, echo=True, seed=-1)
    sampling = SamplingParams(**request.params)
    assert (sampling.stop, sampling.top_k, sampling.n_sequences, sampling.greedy) == (("\n",), 0, 3, True)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("max_tokens", 0, 0),  # with echo: scores the prompt
        ("min_tokens", 16, 16),
        ("temperature", 2, 2.0),
        ("temperature", 0.5, 0.5),
        ("top_p", 1, 1.0),
        ("top_p", 0.01, 0.01),
        ("top_k", -1, 0),
        ("top_k", 40, 40),
        ("repetition_penalty", 0.5, 0.5),
        ("presence_penalty", -2, -2.0),
        ("frequency_penalty", 1.5, 1.5),
        ("n", 128, 128),
        ("logprobs", 0, 0),
        ("logprobs", 5, 5),
        ("seed", -(2**63), -(2**63)),
        ("seed", 2**64 - 1, 2**64 - 1),
        ("stop", "###", ["###"]),
        ("stop", ["a", "b", "c", "d"], ["a", "b", "c", "d"]),
        ("stop", [], []),
        ("stop_token_ids", [2, 0], [2, 0]),
        ("ignore_eos", True, True),
    ],
)
def test_values_in_range_are_accepted(field, value, expected):
    params = parse(echo=True, **{field: value}).params
    assert params[field] == expected and type(params[field]) is type(expected)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_tokens", -1), ("max_tokens", 1.0), ("max_tokens", True), ("max_tokens", "16"),
        ("min_tokens", -1), ("min_tokens", 17),
        ("temperature", -0.1), ("temperature", 2.01), ("temperature", "1"), ("temperature", True),
        ("temperature", float("nan")), ("temperature", float("inf")),
        ("top_p", 0), ("top_p", 1.5),
        ("top_k", -2), ("top_k", 1.0),
        ("repetition_penalty", 0), ("repetition_penalty", -1),
        ("presence_penalty", -2.5), ("frequency_penalty", 3),
        ("n", 0), ("n", 129), ("n", 1.0),
        ("best_of", 0), ("best_of", 129),
        ("logprobs", -1), ("logprobs", 6), ("logprobs", True),
        ("echo", 1), ("echo", "true"), ("ignore_eos", 0), ("stream", 1),
        ("seed", -(2**63) - 1), ("seed", 2**64), ("seed", 1.5),
        ("stop", ""), ("stop", [""]), ("stop", ["a"] * 5), ("stop", [1]), ("stop", 5),
        ("stop_token_ids", 2), ("stop_token_ids", [-1]), ("stop_token_ids", [True]), ("stop_token_ids", ["2"]),
        ("user", 5), ("user", "u" * 257), ("user", False),
    ],
)
def test_wrong_type_or_out_of_range_names_the_param(field, value):
    error = rejected({**BASE, field: value})
    assert error.param == field and f"'{field}' must be" in error.message


def test_max_tokens_zero_needs_echo():
    assert rejected({**BASE, "max_tokens": 0}).param == "max_tokens"
    assert parse(max_tokens=0, echo=True).params["max_tokens"] == 0


def test_best_of_must_be_at_least_n_and_cannot_stream():
    assert rejected({**BASE, "n": 3, "best_of": 2}).param == "best_of"
    assert parse(n=2, best_of=4).params["best_of"] == 4
    assert "cannot be streamed" in rejected({**BASE, "best_of": 2, "stream": True}).message
    assert parse(n=2, best_of=2, stream=True).stream  # nothing to choose between: streams fine


def test_stream_options():
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage
    assert not parse(stream=True, stream_options={}).include_usage
    assert not parse(stream=True).include_usage
    assert rejected({**BASE, "stream_options": {"include_usage": True}}).param == "stream_options"
    assert rejected({**BASE, "stream": False, "stream_options": {}}).param == "stream_options"
    for options in ({"include_obfuscation": False}, "yes", [True]):
        assert rejected({**BASE, "stream": True, "stream_options": options}).param == "stream_options"
    bad_usage = rejected({**BASE, "stream": True, "stream_options": {"include_usage": 1}})
    assert bad_usage.param == "stream_options.include_usage"


@pytest.mark.parametrize("field, value", [("logit_bias", {"50256": -100}), ("logit_bias", {}), ("suffix", "end")])
def test_unsupported_fields_are_refused_not_ignored(field, value):
    error = rejected({**BASE, field: value})
    assert error.param == field and "not supported" in error.message


def test_unknown_fields_are_refused():
    error = rejected({**BASE, "temprature": 0.5})
    assert error.param == "temprature"
    assert error.message == "Unrecognized request argument supplied: temprature"
    assert rejected({**BASE, "a": 1, "b": 2}).message == "Unrecognized request arguments supplied: a, b"


@pytest.mark.parametrize("field, value", [
    ("model", "opt\x00"), ("model", "opt\ud800"), ("prompt", "Hi\x00"), ("prompt", ["ok", "\udc00"]),
    ("stop", "\x00"), ("stop", ["ok", "a\ud83d"]), ("user", "lab\x00"),
])
def test_text_that_cannot_be_stored_is_refused(field, value):
    """NUL and lone surrogates (JSON can spell both) never reach PostgreSQL, which refuses them."""
    error = rejected({**BASE, field: value})
    assert error.param == field and "valid Unicode without NUL characters" in error.message


def test_user_is_kept():
    assert parse(user="lab-42").user == "lab-42"


def test_error_body_has_openais_shape():
    error = CompletionError.invalid("'n' must be an integer from 1 to 128; got 0.", param="n")
    assert error.body() == {"error": {"message": "'n' must be an integer from 1 to 128; got 0.",
                                      "type": "invalid_request_error", "param": "n", "code": None}}
    assert error.headers() == {}


@pytest.mark.parametrize(
    "error, status, type_, code",
    [
        (CompletionError.unauthenticated("Incorrect API key provided."), 401, "invalid_request_error", "invalid_api_key"),
        (CompletionError.forbidden("Sign the licence first.", code="licence_required"), 403, "permission_error",
         "licence_required"),
        (CompletionError.model_not_found("opt-66b"), 404, "invalid_request_error", "model_not_found"),
        (CompletionError.rate_limited("Too many requests.", limit="requests", retry_after=7), 429, "requests",
         "rate_limit_exceeded"),
        (CompletionError.unavailable("No worker is serving opt-125m.", retry_after=30), 503, "server_error",
         "no_worker"),
    ],
)
def test_error_constructors(error, status, type_, code):
    body = error.body()["error"]
    assert (error.status, body["type"], body["code"]) == (status, type_, code)
    assert set(body) == {"message", "type", "param", "code"}
    if error.retry_after is not None:
        assert error.headers() == {"Retry-After": str(error.retry_after)}


def test_module_does_not_import_torch():
    code = "import sys, inference_worker.completions; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
