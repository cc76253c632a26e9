"""The OpenAPI schema tells the truth: schemathesis calls every operation with an applicant's and a reviewer's
token, and no answer is a 5xx or strays from the schema (status code, content type, body)."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from access.services.applications import application_approve
from access.services.tokens import api_token_create
from tests.access.conftest import apply
from tests.factories import UserFactory

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# the OpenAI-compatible operations need a GPU worker and an ASGI server: tests/inference_worker/test_api_schema.py
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application()).exclude(
    path_regex="^/api/v1/(completions|models)")
schema.config.generation.update(max_examples=12, deterministic=True)


@pytest.fixture(autouse=True)
def requests_keep_the_test_transaction(db):
    """The app is called in-process inside the test's transaction; as Django's test client does, a request must
    not close the connection holding it."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def authorizations(researcher, reviewer, release, open_release, run_on_commit) -> list[dict]:
    """Bearer headers of an applicant with an application and a grant, and of a reviewer with a queue."""
    with run_on_commit():  # vetting runs
        apply(researcher, release)
        apply(UserFactory(), release)
        approved = apply(researcher, open_release)
    if approved.grants.exists() is False:
        application_approve(application=approved, by=reviewer, reason="Welcome")
    _, applicant = api_token_create(user=researcher, name="schema", days=1, scopes=["download", "inference"],
                                    created_with_mfa=False)
    _, reviewing = api_token_create(user=reviewer, name="schema", days=1, scopes=["download", "review"],
                                    created_with_mfa=True)
    return [{"Authorization": f"Bearer {raw}"} for raw in (applicant, reviewing)]



@schema.parametrize()
@settings(derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_operation_answers_as_its_schema_says(case, authorizations):
    for headers in authorizations:
        case.call_and_validate(headers=headers, checks=CHECKS)


def test_an_api_url_naming_nothing_answers_json_404(researcher_client):
    response = researcher_client.get("/api/v1/applications/-1/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_the_schema_states_the_limits_and_the_error_answers(client):
    document = client.get("/api/schema/?format=json").json()
    components, paths = document["components"]["schemas"], document["paths"]
    apply_input = components["ApplicationInput"]["properties"]
    assert apply_input["releases"]["minItems"] == 1
    assert apply_input["legal_name"]["minLength"] == 1
    assert apply_input["intended_use"]["minLength"] == 200 and apply_input["intended_use"]["maxLength"] == 5000
    assert apply_input["publications"]["maxLength"] == 2000
    assert components["RespondInput"]["properties"]["response"]["maxLength"] == 5000
    create = paths["/api/v1/applications/"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409"} <= set(create)
    approve = paths["/api/v1/review/applications/{id}/approve"]["post"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(approve["responses"])
    assert approve["parameters"][0]["schema"]["minimum"] == 0
    queue = paths["/api/v1/review/applications/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert components[queue["$ref"].rsplit("/", 1)[1]]["required"] == ["next", "previous", "results"]
    manifest = paths["/api/v1/releases/{slug}/manifest"]["get"]
    assert "400" in manifest["responses"] and "more than one" in manifest["parameters"][1]["description"]
