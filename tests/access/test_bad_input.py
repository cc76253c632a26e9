"""Garbage in every field and parameter: field-level 400s and 404s, never a 500."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from access.forms import BulkDecisionForm
from tests.access.conftest import apply

pytestmark = pytest.mark.django_db

GARBAGE = [None, 1, "x", [], {}, ["opt-175b", 3], {"a": 1}, True, "0" * 5000, "nul\x00byte"]
APPLICATION_FIELDS = ["releases", "legal_name", "institution_name", "institution_ror_id", "role", "sector", "country",
                      "orcid", "publications", "intended_use", "supervisor_name", "supervisor_email", "draft",
                      "accept_licence", "signature_name"]


def test_garbage_application_fields_answer_400_naming_the_field(release, researcher):
    api = Client()
    api.force_login(researcher)
    for field in APPLICATION_FIELDS:
        for value in GARBAGE:
            body = {"releases": ["opt-175b"], field: value}
            response = api.post("/api/v1/applications/", body, content_type="application/json")
            assert response.status_code == 400, (field, value, response.content[:300])
    assert api.post("/api/v1/applications/", "not json", content_type="application/json").status_code == 400


def test_garbage_on_actions_and_queue_filters_never_answers_500(reviewer_client, release, researcher):
    applicant = Client()
    applicant.force_login(researcher)
    application = apply(researcher, release)
    for action in ["withdraw", "submit", "respond"]:
        for value in GARBAGE:
            response = applicant.post(f"/api/v1/applications/{application.pk}/{action}",
                                      {"response": value, "accept_licence": value, "signature_name": value},
                                      content_type="application/json")
            assert response.status_code < 500, (action, value, response.content[:300])
    for query in ["status=x", "cursor=abc", "cursor=%00", "cursor=" + "A" * 5000, "country=zzzz", "signal=%00",
                  "age=1", "release=..", "assigned=x", "country=" + "0" * 5000]:
        api = reviewer_client.get(f"/api/v1/review/applications/?{query}")
        page = reviewer_client.get(f"/review/?{query}")
        assert (api.status_code, page.status_code) == (400, 400), query
    for action in ["approve", "reject", "request-info"]:
        for value in GARBAGE:
            response = reviewer_client.post(f"/api/v1/review/applications/{application.pk}/{action}",
                                            {"reason": value}, content_type="application/json")
            assert response.status_code < 500, (action, value, response.content[:300])
    for url in ["/access/reference/abc/", "/access/licences/nope/", "/access/applications/999999/"]:
        assert applicant.get(url).status_code == 404, url
    assert applicant.get("/access/reference/%00/").status_code == 400, "a NUL is refused before any lookup"
    assert reviewer_client.get("/review/export/nope.csv").status_code == 404


OUT_OF_RANGE_IDS = ["9223372036854775808", "-9223372036854775809", "0", "1" + "0" * 40]


@pytest.mark.parametrize("value", OUT_OF_RANGE_IDS)
def test_ids_out_of_the_database_range_are_refused_before_any_query(value, django_assert_num_queries):
    field = BulkDecisionForm().fields["applications"]
    with django_assert_num_queries(0), pytest.raises(ValidationError) as refused:  # SQLite cannot bind it
        field.clean([value])
    assert refused.value.messages == [f"“{value}” is not a valid value."]


@pytest.mark.parametrize("value", OUT_OF_RANGE_IDS)
def test_out_of_range_ids_on_the_pages_answer_400_naming_the_field(value, reviewer_client, release, researcher):
    applicant = Client()
    applicant.force_login(researcher)
    response = applicant.post("/apply/", {"releases": [value]})
    assert response.status_code == 400
    assert f"“{value}” is not a valid value." in response.content.decode()
    response = reviewer_client.post("/review/bulk", {"action": "approve", "applications": [value]})
    assert response.status_code == 400
    assert f"“{value}” is not a valid value." in response.content.decode()
