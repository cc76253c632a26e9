"""The REST API: applicants' own applications, reviewers' queue and decisions, tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import ApiToken, Application, Grant
from access.services.applications import application_approve, application_request_info
from access.services.tokens import api_token_create
from tests.access.conftest import INTENDED_USE, apply
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def bearer(user, *, scopes=("download", "inference"), created_with_mfa=False, days=30) -> APIClient:
    _, raw = api_token_create(user=user, name="laptop", days=days, scopes=list(scopes),
                              created_with_mfa=created_with_mfa)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def payload(**overrides) -> dict:
    data = {"releases": ["opt-175b"], "legal_name": "Ada Lovelace", "institution_name": "Example University",
            "role": "researcher", "country": "GB", "orcid": "0000-0002-1825-0097",
            "intended_use": INTENDED_USE, "accept_licence": True, "signature_name": "Ada Lovelace"}
    data.update(overrides)
    return data


def test_apply_list_show_and_withdraw_with_a_bearer_token(researcher, release, open_release, run_on_commit):
    api = bearer(researcher)
    with run_on_commit():
        response = api.post("/api/v1/applications/", payload(releases=["opt-175b", "opt-125m"]), format="json")
    assert response.status_code == 201, response.json()
    created = {item["release"]: item for item in response.json()}
    assert set(created) == {"opt-175b", "opt-125m"}

    listed = api.get("/api/v1/applications/").json()
    assert {item["id"] for item in listed} == {item["id"] for item in created.values()}
    manual = api.get(f"/api/v1/applications/{created['opt-175b']['id']}/").json()
    assert manual["status"] == "submitted" and manual["queue_position"] == 1
    automatic = api.get(f"/api/v1/applications/{created['opt-125m']['id']}/").json()
    assert automatic["status"] == "approved"

    withdrawn = api.post(f"/api/v1/applications/{created['opt-175b']['id']}/withdraw")
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    again = api.post(f"/api/v1/applications/{created['opt-175b']['id']}/withdraw")
    assert again.status_code == 409 and "cannot be withdrawn" in again.json()["detail"]

    grants = api.get("/api/v1/grants/").json()
    assert [grant["release"] for grant in grants] == ["opt-125m"] and grants[0]["active"] is True


@pytest.mark.parametrize(("overrides", "field"), [
    ({"orcid": "1234-5678-9012-3456"}, "orcid"),
    ({"intended_use": "short"}, "intended_use"),
    ({"country": "Narnia"}, "country"),
    ({"releases": ["no-such-release"]}, "releases"),
    ({"releases": []}, "releases"),
    ({"role": "wizard"}, "role"),
    ({"accept_licence": False}, "accept_licence"),
    ({"signature_name": "A. L."}, "signature_name"),
    ({"role": "phd_student"}, "supervisor_name"),
])
def test_bad_input_gets_field_level_400s(researcher_client, release, overrides, field):
    response = researcher_client.post("/api/v1/applications/", payload(**overrides), content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Application.objects.exists()


def test_unverified_users_get_a_403_that_says_why(client, release):
    client.force_login(UserFactory(verified=False))
    response = client.post("/api/v1/applications/", payload(), content_type="application/json")
    assert response.status_code == 403 and "Verify your e-mail" in response.json()["detail"]


def test_another_user_s_application_is_a_404(researcher, release):
    application = apply(researcher, release)
    stranger = bearer(UserFactory())
    assert stranger.get(f"/api/v1/applications/{application.pk}/").status_code == 404
    assert stranger.post(f"/api/v1/applications/{application.pk}/withdraw").status_code == 404
    assert stranger.get("/api/v1/applications/").json() == []
    assert stranger.get(f"/api/v1/applications/{application.pk + 1000}/").status_code == 404


def test_anonymous_and_bad_tokens_are_401(release, researcher):
    assert APIClient().get("/api/v1/applications/").status_code in (401, 403)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer gh_not-a-token")
    response = api.get("/api/v1/applications/")
    assert response.status_code == 401 and "Unknown API token" in response.json()["detail"]
    api.credentials(HTTP_AUTHORIZATION="Bearer gh_one gh_two")
    response = api.get("/api/v1/applications/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Send the token as 'Authorization: Bearer <token>'."

    token, raw = api_token_create(user=researcher, name="old", days=1, scopes=["download"], created_with_mfa=False)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert "expired" in api.get("/api/v1/applications/").json()["detail"]
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(days=1),
                                                revoked_at=timezone.now())
    assert "revoked" in api.get("/api/v1/applications/").json()["detail"]


def test_tokens_are_stored_hashed(researcher):
    token, raw = api_token_create(user=researcher, name="ci", days=10, scopes=["download"], created_with_mfa=False)
    assert raw not in {token.token_hash, token.prefix} and len(token.token_hash) == 64
    assert raw.startswith(token.prefix)


def test_researchers_cannot_use_the_review_api(researcher, release):
    application = apply(researcher, release)
    api = bearer(researcher)
    assert api.get("/api/v1/review/applications/").status_code == 403
    assert api.post(f"/api/v1/review/applications/{application.pk}/approve").status_code == 403


def test_a_reviewer_s_token_without_the_review_scope_cannot_review(reviewer, researcher, release):
    application = apply(researcher, release)
    api = bearer(reviewer, scopes=["download"], created_with_mfa=True)  # made with two-factor, still refused
    message = "This API token lacks the 'review' scope; create a token with it at /access/tokens/."
    listed = api.get("/api/v1/review/applications/")
    assert listed.status_code == 403 and listed.json()["detail"] == message
    approved = api.post(f"/api/v1/review/applications/{application.pk}/approve", {"reason": "ok"}, format="json")
    assert approved.status_code == 403 and approved.json()["detail"] == message
    application.refresh_from_db()
    assert application.status == Application.Status.SUBMITTED


def test_the_applicant_s_own_endpoints_take_a_token_of_any_scope(researcher, release):
    application = apply(researcher, release)
    api = bearer(researcher, scopes=["inference"])
    assert [item["id"] for item in api.get("/api/v1/applications/").json()] == [application.pk]
    assert api.get(f"/api/v1/applications/{application.pk}/").status_code == 200
    assert api.get("/api/v1/grants/").status_code == 200


def test_reviewers_list_filter_and_decide_through_the_api(reviewer_client, researcher, release, run_on_commit,
                                                          django_assert_max_num_queries):
    with run_on_commit():
        first = apply(researcher, release)
        second = apply(UserFactory(), release, legal_name="Bea Second", orcid="", country="FR")
        third = apply(UserFactory(), release, legal_name="Cy Third", orcid="", country="DE")
    listed = reviewer_client.get("/api/v1/review/applications/").json()
    assert [item["id"] for item in listed["results"]] == [first.pk, second.pk, third.pk]  # oldest first
    assert listed["results"][0]["signals"] and listed["results"][0]["sla"] == "ok"
    only_fr = reviewer_client.get("/api/v1/review/applications/?country=FR").json()
    assert [item["id"] for item in only_fr["results"]] == [second.pk]
    bad = reviewer_client.get("/api/v1/review/applications/?status=lost")
    assert bad.status_code == 400 and "status" in bad.json()
    edited = reviewer_client.get("/api/v1/review/applications/?cursor=bm90LWEtY3Vyc29y")
    assert edited.status_code == 400 and "not valid" in edited.json()["cursor"][0]

    with run_on_commit():
        approved = reviewer_client.post(f"/api/v1/review/applications/{first.pk}/approve", {"reason": "Welcome"},
                                        content_type="application/json")
        no_reason = reviewer_client.post(f"/api/v1/review/applications/{second.pk}/reject", {},
                                         content_type="application/json")
        rejected = reviewer_client.post(f"/api/v1/review/applications/{second.pk}/reject",
                                        {"reason": "Not research."}, content_type="application/json")
        asked = reviewer_client.post(f"/api/v1/review/applications/{third.pk}/request-info",
                                     {"reason": "Which lab?"}, content_type="application/json")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    assert rejected.json()["status"] == "rejected" and rejected.json()["decision_reason"] == "Not research."
    assert asked.json()["status"] == "needs_info"
    assert Grant.objects.filter(application=first).exists()
    needs_info = reviewer_client.get("/api/v1/review/applications/?status=needs_info").json()
    assert [item["id"] for item in needs_info["results"]] == [third.pk]
    assert reviewer_client.post("/api/v1/review/applications/999999/approve").status_code == 404


def test_the_review_list_uses_a_constant_number_of_queries(reviewer_client, release, run_on_commit,
                                                            django_assert_max_num_queries):
    for index in range(30):
        with run_on_commit():
            apply(UserFactory(), release, legal_name=f"Person {index}", orcid="")
    with django_assert_max_num_queries(15):
        response = reviewer_client.get("/api/v1/review/applications/")
    assert len(response.json()["results"]) == 30


def test_reviewers_cannot_approve_their_own_application_through_the_api(reviewer_client, reviewer, release,
                                                                        run_on_commit):
    with run_on_commit():
        mine = apply(reviewer, release)
    response = reviewer_client.post(f"/api/v1/review/applications/{mine.pk}/approve")
    assert response.status_code == 403 and "own application" in response.json()["detail"]


def test_a_staff_token_made_after_confirming_two_factor_can_review(reviewer, researcher, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    api = bearer(reviewer, scopes=["review"], created_with_mfa=True)
    assert len(api.get("/api/v1/review/applications/").json()["results"]) == 1
    with run_on_commit():
        response = api.post(f"/api/v1/review/applications/{application.pk}/request-info",
                            {"reason": "Please add your ORCID."}, format="json")
    assert response.status_code == 200


def test_respond_and_submit_a_draft_through_the_api(researcher, reviewer, release, run_on_commit):
    api = bearer(researcher)
    draft = api.post("/api/v1/applications/", payload(draft=True, accept_licence=False), format="json").json()[0]
    assert draft["status"] == "draft"
    refused = api.post(f"/api/v1/applications/{draft['id']}/submit", {"accept_licence": False,
                                                                     "signature_name": "Ada Lovelace"}, format="json")
    assert refused.status_code == 400 and "accept_licence" in refused.json()
    with run_on_commit():
        submitted = api.post(f"/api/v1/applications/{draft['id']}/submit",
                             {"accept_licence": True, "signature_name": "Ada Lovelace"}, format="json")
    assert submitted.json()["status"] == "submitted"
    from access.services.applications import application_request_info

    application_request_info(application=Application.objects.get(pk=draft["id"]), by=reviewer, reason="Which GPU?")
    with run_on_commit():
        answered = api.post(f"/api/v1/applications/{draft['id']}/respond", {"response": "An H100."}, format="json")
    assert answered.json()["status"] == "submitted" and answered.json()["info_response"] == "An H100."


def test_grants_list_only_the_caller_s(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_approve(application=application, by=reviewer)
    assert bearer(UserFactory()).get("/api/v1/grants/").json() == []
    assert len(bearer(researcher).get("/api/v1/grants/").json()) == 1


def test_the_openapi_schema_lists_the_access_endpoints(client):
    client.force_login(UserFactory())
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for path in ["/api/v1/applications/", "/api/v1/applications/{id}/", "/api/v1/applications/{id}/withdraw",
                 "/api/v1/review/applications/", "/api/v1/review/applications/{id}/approve",
                 "/api/v1/review/applications/{id}/reject", "/api/v1/review/applications/{id}/request-info",
                 "/api/v1/grants/"]:
        assert path in schema
    assert "Bearer" in schema or "bearer" in schema


def test_re_applying_after_a_revocation_waits_the_cool_down_then_goes_to_a_reviewer(researcher, reviewer,
                                                                                   open_release, run_on_commit):
    from access.services.grants import grant_revoke

    api = bearer(researcher)
    with run_on_commit():
        first = api.post("/api/v1/applications/", payload(releases=["opt-125m"]), format="json").json()[0]
    assert api.get(f"/api/v1/applications/{first['id']}/").json()["status"] == "approved"
    grant = Grant.objects.get(application_id=first["id"])
    grant_revoke(grant=grant, by=reviewer, reason="Weights redistributed publicly.")

    with run_on_commit():
        refused = api.post("/api/v1/applications/", payload(releases=["opt-125m"]), format="json")
    assert refused.status_code == 400 and "was revoked on" in refused.json()["releases"][0]

    Grant.objects.filter(pk=grant.pk).update(revoked_at=timezone.now() - timedelta(days=31))
    with run_on_commit():
        again = api.post("/api/v1/applications/", payload(releases=["opt-125m"]), format="json")
    assert again.status_code == 201, again.json()
    application = Application.objects.get(pk=again.json()[0]["id"])
    assert application.status == Application.Status.SUBMITTED  # not approved again within seconds
    revoked = application.signals.get(code="revoked_access")
    assert revoked.level == "red" and "Weights redistributed publicly." in revoked.explanation
    assert Grant.objects.filter(user=researcher, revoked_at__isnull=True).count() == 0


def test_a_reference_address_of_the_applicant_s_own_is_refused(researcher, release):
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=researcher, email="ada.private@mail.example", verified=True)
    old_account = UserFactory(email="ada.old@uni.example.edu")
    apply(old_account, release, submit=False)  # the same person (ORCID, name + institution) under another account
    api = bearer(researcher)
    student = {"role": "phd_student", "supervisor_name": "Prof. Me"}
    for own in (researcher.email.upper(), "Ada.Private@mail.example", "ada.old@uni.example.edu"):
        response = api.post("/api/v1/applications/", payload(**student, supervisor_email=own), format="json")
        assert response.status_code == 400, own
        assert "your own e-mail addresses" in response.json()["supervisor_email"][0]
    assert not Application.objects.filter(user=researcher).exists()


def test_reference_e_mails_are_limited_per_recipient_and_per_applicant(researcher, release, run_on_commit, settings):
    from django.core import mail

    settings.ACCESS_REFERENCE_EMAILS_PER_RECIPIENT_PER_DAY = 3
    settings.ACCESS_REFERENCE_EMAILS_PER_APPLICANT_PER_DAY = 4
    api = bearer(researcher)
    student = {"role": "phd_student", "supervisor_name": "Victim", "supervisor_email": "victim@example.org"}
    for _ in range(3):
        with run_on_commit():
            created = api.post("/api/v1/applications/", payload(**student), format="json")
        assert created.status_code == 201
        api.post(f"/api/v1/applications/{created.json()[0]['id']}/withdraw")
    with run_on_commit():
        refused = api.post("/api/v1/applications/", payload(**student), format="json")
    assert refused.status_code == 400 and "too many reference requests" in refused.json()["supervisor_email"][0]
    assert len([message for message in mail.outbox if message.to == ["victim@example.org"]]) == 3

    with run_on_commit():
        other = api.post("/api/v1/applications/", payload(**{**student, "supervisor_email": "prof@uni.example.edu"}),
                         format="json")
    assert other.status_code == 201
    api.post(f"/api/v1/applications/{other.json()[0]['id']}/withdraw")
    with run_on_commit():
        over = api.post("/api/v1/applications/", payload(**{**student, "supervisor_email": "dean@uni.example.edu"}),
                        format="json")
    assert over.status_code == 400 and "You have asked for too many" in over.json()["supervisor_email"][0]
    assert not [message for message in mail.outbox if message.to == ["dean@uni.example.edu"]]


def test_over_long_free_text_answers_400_naming_the_limit(researcher_client, researcher, reviewer, release):
    essay = "x" * 5001
    response = researcher_client.post("/api/v1/applications/", payload(intended_use=essay),
                                      content_type="application/json")
    assert response.status_code == 400
    assert "5000 characters" in response.json()["intended_use"][0]
    publications = researcher_client.post("/api/v1/applications/", payload(publications="p" * 2001),
                                          content_type="application/json")
    assert publications.status_code == 400 and "2000 characters" in publications.json()["publications"][0]
    assert not Application.objects.exists()

    application = apply(researcher, release)
    application_request_info(application=application, by=reviewer, reason="Which checkpoints?")
    answer = researcher_client.post(f"/api/v1/applications/{application.pk}/respond", {"response": essay},
                                    content_type="application/json")
    assert answer.status_code == 400 and "5000 characters" in answer.json()["response"][0]


def test_the_review_api_pages_by_next_and_previous_links_in_a_constant_number_of_queries(
        reviewer_client, release, run_on_commit, settings, django_assert_max_num_queries):
    settings.ACCESS_REVIEW_PAGE_SIZE = 4
    with run_on_commit():
        applied = [apply(UserFactory(), release, legal_name=f"Person {index}", orcid="") for index in range(10)]
    pages, counts, url = [], [], "/api/v1/review/applications/"
    while url:
        with django_assert_max_num_queries(15) as captured:
            page = reviewer_client.get(url).json()
        counts.append(len(captured))
        pages.append([item["id"] for item in page["results"]])
        url = page["next"]
    assert pages == [[a.pk for a in applied[i:i + 4]] for i in (0, 4, 8)]
    assert len(set(counts)) == 1  # the same on every page: no count, no offset
    back = reviewer_client.get(reviewer_client.get(page["previous"]).json()["previous"]).json()
    assert [item["id"] for item in back["results"]] == pages[0] and back["previous"] is None
