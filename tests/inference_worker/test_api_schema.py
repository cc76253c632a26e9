"""The OpenAI-compatible operations answer as the portal's OpenAPI schema says: schemathesis calls them on the
real path (uvicorn, the broker, a GPU-worker process on a tiny CPU model) with a researcher's token and with a
token lacking the ``inference`` scope; no answer is a 5xx or strays from the schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from access.services.tokens import api_token_create
from tests.inference_worker.playground import (
    SLUG, asgi_server, gpu_worker, release_from_checkpoint, reset_playground_redis, researcher_with_token,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def served(playground_checkpoint, tmp_path):
    """The OpenAI-compatible part of the schema, loaded from a served portal with a worker for the test
    release, and the Bearer headers of two tokens."""
    reset_playground_redis()
    release = release_from_checkpoint(playground_checkpoint)
    user, token = researcher_with_token(release)
    _, download_only = api_token_create(user=user, name="downloads", days=1, scopes=["download"],
                                        created_with_mfa=False)
    with gpu_worker(playground_checkpoint, tmp_path / "worker.log"), asgi_server(tmp_path / "web.log") as url:
        loaded = schemathesis.openapi.from_url(f"{url}/api/schema/?format=json").include(
            path_regex="^/api/v1/(completions|models)")
        yield loaded, [{"Authorization": f"Bearer {raw}"} for raw in (token, download_only)]


def naming_the_served_model(case, *, stream: bool = False):
    """Generated model names almost never name a model; most cases name the served one, so that the worker
    really generates for them, some streamed."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = SLUG
        if stream:
            case.body.update(stream=True, best_of=None)
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = SLUG
    return case


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_openai_operations_answer_as_the_schema_says(served, mode):
    loaded, authorizations = served
    called = set()

    generated = loaded.as_strategy(mode)

    served_model = generated.map(naming_the_served_model)
    streamed = generated.map(lambda case: naming_the_served_model(case, stream=True))

    @given(case=st.one_of(generated, served_model, streamed))
    @settings(max_examples=60, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def answers_as_documented(case):
        called.add(case.operation.label)
        for headers in authorizations:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

    answers_as_documented()
    assert called == {"POST /api/v1/completions", "GET /api/v1/models", "GET /api/v1/models/{slug}"}


def test_the_schema_documents_the_openai_operations_from_the_parser_s_rules(client):
    document = client.get("/api/schema/?format=json").json()
    paths, components = document["paths"], document["components"]["schemas"]
    assert {"/api/v1/completions", "/api/v1/models", "/api/v1/models/{slug}"} <= set(paths)
    completions = paths["/api/v1/completions"]["post"]
    assert {"200", "400", "401", "403", "404", "429", "503"} <= set(completions["responses"])
    assert set(completions["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    request = components["CompletionRequest"]
    assert request["required"] == ["model", "prompt"] and request["additionalProperties"] is False
    assert request["properties"]["n"]["maximum"] == 128 and request["properties"]["logprobs"]["maximum"] == 5
    assert request["properties"]["top_p"]["exclusiveMinimum"] is True
    assert "logit_bias" not in request["properties"] and "`logit_bias`" in request["description"]
    assert components["OpenAIError"]["properties"]["error"]["required"] == ["message", "type", "param", "code"]
