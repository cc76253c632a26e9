"""The OpenAI-compatible API through the whole path, with the official `openai` client: HTTP (uvicorn),
the broker, a real GPU-worker process on a tiny CPU model, the Redis stream, back to the client."""

import openai
import pytest

from inference_worker.models import PromptJob
from tests.inference_worker.playground import (
    asgi_server, gpu_worker, release_from_checkpoint, reset_playground_redis, researcher_with_token,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(playground_checkpoint, tmp_path):
    """A release, a researcher's token, a worker and the web server."""
    reset_playground_redis()
    release = release_from_checkpoint(playground_checkpoint)
    user, token = researcher_with_token(release)
    with gpu_worker(playground_checkpoint, tmp_path / "worker.log"), asgi_server(tmp_path / "web.log") as url:
        client = openai.OpenAI(base_url=f"{url}/api/v1", api_key=token, max_retries=0, timeout=60)
        yield client, user, release


def test_plain_streamed_and_multiple_choices_with_the_openai_client(served):
    client, user, release = served
    plain = client.completions.create(model="opt-play", prompt="The quick brown fox", max_tokens=12,
                                      temperature=0.8, seed=1234)
    assert plain.object == "text_completion" and plain.model == "opt-play" and plain.id.startswith("cmpl-")
    [choice] = plain.choices
    assert choice.finish_reason in {"stop", "length"}
    assert plain.usage.prompt_tokens > 1 and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    chunks = list(client.completions.create(model="opt-play", prompt="The quick brown fox", max_tokens=12,
                                            temperature=0.8, seed=1234, stream=True,
                                            stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == choice.text, "the stream carries exactly the non-streamed text for the same seed"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    several = client.completions.create(model="opt-play", prompt=["Hello world!", "A licence"], n=2, max_tokens=5,
                                        temperature=1.0, seed=5)
    assert sorted(c.index for c in several.choices) == [0, 1, 2, 3]
    assert PromptJob.objects.filter(user=user, status="succeeded").count() == 3


def test_logprobs_and_echo(served):
    client, _, _ = served
    result = client.completions.create(model="opt-play", prompt="Hello world!", max_tokens=4, logprobs=2, echo=True,
                                       temperature=0)
    [choice] = result.choices
    assert choice.text.startswith("Hello world!")
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs)
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(top) <= 2 for top in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)


def test_the_client_raises_its_error_classes(served):
    client, _, _ = served
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="opt-nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="opt-play", prompt="x", max_tokens=1, extra_body={"logit_bias": {"5": 1}})
    assert error.value.body["param"] == "logit_bias"
    bad = openai.OpenAI(base_url=str(client.base_url), api_key="gh_not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="opt-play", prompt="x", max_tokens=1)
    assert [m.id for m in client.models.list().data] == ["opt-play"]
    for name in ("opt-nope", "opt.play", "opt play"):  # not even a slug: still OpenAI's 404, which the client knows
        with pytest.raises(openai.NotFoundError) as missing:
            client.models.retrieve(name)
        assert missing.value.body["code"] == "model_not_found"


def test_scopes_limits_and_missing_workers_answer_in_openai_s_shape(served, playground_checkpoint):
    client, user, release = served
    from access.services.tokens import api_token_create
    from tests.artifacts.conftest import grant_for

    _, download_only = api_token_create(user=user, name="downloads", days=1, scopes=["download"],
                                        created_with_mfa=False)
    scoped = openai.OpenAI(base_url=str(client.base_url), api_key=download_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as error:
        scoped.completions.create(model="opt-play", prompt="x", max_tokens=1)
    assert error.value.body["code"] == "token_scope" and "/access/tokens/" in error.value.message

    with pytest.raises(openai.RateLimitError) as error:
        client.completions.create(model="opt-play", prompt=["a", "b", "c", "d", "e"], n=4, max_tokens=1)
    assert error.value.response.headers["retry-after"] and error.value.body["type"] == "sequences"

    idle = release_from_checkpoint(playground_checkpoint, slug="opt-idle")
    grant_for(user, idle)
    with pytest.raises(openai.InternalServerError) as error:
        client.completions.create(model="opt-idle", prompt="x", max_tokens=1)
    assert error.value.status_code == 503 and error.value.body["code"] == "no_worker"
    assert sorted(m.id for m in client.models.list().data) == ["opt-idle", "opt-play"]
    assert client.models.retrieve("opt-play").context_length == 2048
