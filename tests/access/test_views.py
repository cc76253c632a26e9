"""The HTML pages: applying, the status page, licences, tokens, the reviewer queue, transparency."""

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from access.models import ApiToken, Application, Grant
from access.services.applications import application_approve, application_reject, application_request_info
from access.services.licences import licence_version_publish
from access.services.tokens import api_token_create
from tests.access.conftest import INTENDED_USE, apply, log_in_with_totp
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def form_data(release, **overrides) -> dict:
    data = {"releases": [release.pk], "legal_name": "Ada Lovelace", "institution_name": "Example University",
            "institution_ror_id": "", "role": "researcher", "sector": "academia", "country": "GB",
            "orcid": "0000-0002-1825-0097", "publications": "", "intended_use": INTENDED_USE,
            "supervisor_name": "", "supervisor_email": "", "accept_licence": "on", "signature_name": "Ada Lovelace",
            "submit": "1"}
    data.update(overrides)
    return data


def test_apply_page_submits_and_lands_on_the_status_page(researcher_client, researcher, release, run_on_commit):
    page = researcher_client.get(reverse("access:apply"))
    assert page.status_code == 200
    assert "Non-commercial research use only." in page.content.decode()  # the licence text is shown
    with run_on_commit():
        response = researcher_client.post(reverse("access:apply"), form_data(release), follow=True)
    application = Application.objects.get(user=researcher)
    assert response.redirect_chain[-1][0] == reverse("access:application_detail", args=[application.pk])
    body = response.content.decode()
    assert "Submitted" in body and "number 1" in body and "Expected wait" in body
    assert "We received your application" in mail.outbox[0].subject


def test_apply_form_shows_field_errors_and_answers_400(researcher_client, release):
    response = researcher_client.post(reverse("access:apply"), form_data(
        release, orcid="0000-0002-1825-0098", intended_use="Too short.", accept_licence=""))
    assert response.status_code == 400
    body = response.content.decode()
    assert "not a valid ORCID" in body and "at least 200 characters" in body
    assert not Application.objects.exists()


def test_one_failed_submit_shows_every_mistake_in_a_summary_that_links_to_each_field(researcher_client, release):
    """Missing required fields, a bad ORCID, a short description and a mismatched signature, all at once."""
    response = researcher_client.post(reverse("access:apply"), form_data(
        release, legal_name="Ada Lovelace", institution_name="", orcid="0000-0002-1825-0098",
        intended_use="Too short.", signature_name="Someone Else"))
    assert response.status_code == 400
    body = response.content.decode()
    summary = body[body.index('id="error-summary"'):body.index("</div>", body.index('id="error-summary"'))]
    assert "There are 4 problems" in summary
    for field, words in [("id_institution_name", "required"), ("id_orcid", "not a valid ORCID"),
                         ("id_intended_use", "at least 200 characters"), ("id_signature_name", "exactly as given")]:
        assert re.search(rf'<a href="#{field}">[^<]*{words}', summary), field
    assert not Application.objects.exists()


def test_the_apply_form_describes_fields_only_by_help_texts_that_exist_and_counts_characters(researcher_client,
                                                                                             release):
    body = researcher_client.get(reverse("access:apply")).content.decode()
    described = re.findall(r'aria-describedby="([^"]+)"', body)
    assert described, "no field is described: the check would not run"
    for ids in described:
        for id_ in ids.split():
            assert f'id="{id_}"' in body, id_
    assert 'data-counter="id_intended_use"' in body and 'data-min="200"' in body


def test_applying_again_while_an_application_is_open_says_so_before_the_form(researcher_client, release):
    researcher_client.post(reverse("access:apply"), form_data(release))
    application = Application.objects.get()
    body = researcher_client.get(reverse("access:apply") + f"?release={release.slug}").content.decode()
    notice = body[:body.index('class="application-form"')]
    assert f"You already have an open application for {release.name}" in notice
    assert reverse("access:application_detail", args=[application.pk]) in notice


def test_unverified_users_cannot_apply_through_the_form(client, release):
    client.force_login(UserFactory(verified=False))
    assert "Verify your e-mail address before applying" in client.get(reverse("access:apply")).content.decode()
    response = client.post(reverse("access:apply"), form_data(release))
    assert response.status_code == 403
    assert not Application.objects.exists()


def test_a_draft_is_saved_then_submitted_from_its_page(researcher_client, researcher, release, run_on_commit):
    researcher_client.post(reverse("access:apply"), {**form_data(release, accept_licence=""), "save_draft": "1"})
    application = Application.objects.get(user=researcher)
    assert application.status == Application.Status.DRAFT
    unsigned = researcher_client.post(reverse("access:application_submit", args=[application.pk]),
                                      {"signature_name": "Ada Lovelace"})
    assert unsigned.status_code == 400 and "Tick the box" in unsigned.content.decode()
    with run_on_commit():
        researcher_client.post(reverse("access:application_submit", args=[application.pk]),
                               {"accept_licence": "on", "signature_name": "Ada Lovelace"})
    application.refresh_from_db()
    assert application.status == Application.Status.SUBMITTED


def test_status_page_shows_the_reason_and_answers_requests_in_place(researcher_client, researcher, reviewer,
                                                                    release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
        application_request_info(application=application, by=reviewer, reason="Name your lab, please.")
    page = researcher_client.get(reverse("access:application_detail", args=[application.pk])).content.decode()
    assert "Name your lab, please." in page and "Send my answer" in page
    empty = researcher_client.post(reverse("access:application_respond", args=[application.pk]), {"response": ""})
    assert empty.status_code == 400 and "This field is required" in empty.content.decode()
    with run_on_commit():
        researcher_client.post(reverse("access:application_respond", args=[application.pk]),
                               {"response": "The memorisation lab."})
    application.refresh_from_db()
    assert application.status == Application.Status.SUBMITTED
    again = researcher_client.post(reverse("access:application_respond", args=[application.pk]), {"response": "x"})
    assert again.status_code == 409 and "No information has been requested" in again.content.decode()
    application_reject(application=application, by=reviewer, reason="Commercial purpose.")
    page = researcher_client.get(reverse("access:application_detail", args=[application.pk])).content.decode()
    application.refresh_from_db()
    reopens = application.decided_at + timedelta(days=30)
    assert "Commercial purpose." in page and "apply again" in page
    assert f"{reopens.day} {reopens:%B %Y}" in page
    assert "The reviewer asked for more information" in page  # timeline


def test_another_user_s_pages_are_404(client, researcher, release):
    application = apply(researcher, release)
    client.force_login(UserFactory())
    assert client.get(reverse("access:application_detail", args=[application.pk])).status_code == 404
    assert client.post(reverse("access:application_withdraw", args=[application.pk])).status_code == 404
    application.refresh_from_db()
    assert application.status == Application.Status.SUBMITTED


def test_withdraw_from_the_status_page(researcher_client, researcher, release):
    application = apply(researcher, release)
    researcher_client.post(reverse("access:application_withdraw", args=[application.pk]))
    application.refresh_from_db()
    assert application.status == Application.Status.WITHDRAWN


def test_my_access_asks_to_re_accept_a_new_licence_version(researcher_client, researcher, reviewer, release,
                                                           run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_approve(application=application, by=reviewer)
    licence_version_publish(licence=release.licence, text_markdown="# v2\n\nNew terms.", by=reviewer)
    page = researcher_client.get(reverse("access:my_access")).content.decode()
    url = reverse("access:licence_accept", args=[release.slug])
    assert url in page
    assert researcher_client.post(url, {"accept_licence": "on", "signature_name": "Someone"}).status_code == 400
    response = researcher_client.post(url, {"accept_licence": "on", "signature_name": "Ada Lovelace"})
    assert response.status_code == 302
    assert url not in researcher_client.get(reverse("access:my_access")).content.decode()


def test_renew_from_my_access(researcher_client, researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_approve(application=application, by=reviewer)
    Grant.objects.update(expires_at=timezone.now() + timedelta(days=10))
    assert "Renew" in researcher_client.get(reverse("access:my_access")).content.decode()
    grant = Grant.objects.get()
    researcher_client.post(reverse("access:grant_renew", args=[grant.pk]))
    grant.refresh_from_db()
    assert grant.expires_at > timezone.now() + timedelta(days=370)


def test_tokens_are_shown_once_after_a_redirect_and_revocable(researcher_client, researcher):
    url = reverse("access:tokens")
    created = researcher_client.post(url, {"name": "laptop", "days": 30, "scopes": ["download"]})
    assert created.status_code == 302 and created["Location"] == url, "a reload must not create a second token"
    response = researcher_client.get(url)
    body = response.content.decode()
    token = ApiToken.objects.get(user=researcher)
    assert "shown only once" in body and token.prefix in body and 'data-copy="new-token"' in body
    assert "no-store" in response["Cache-Control"]
    assert "shown only once" not in researcher_client.get(url).content.decode()
    assert ApiToken.objects.filter(user=researcher).count() == 1
    assert researcher_client.post(reverse("access:tokens"), {"name": "", "days": 9999}).status_code == 400
    researcher_client.post(reverse("access:token_revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    other = UserFactory()
    researcher_client.force_login(other)
    assert researcher_client.post(reverse("access:token_revoke", args=[token.pk])).status_code == 404


def test_researchers_choose_download_or_inference_scopes_and_see_them_listed(researcher_client, researcher):
    page = researcher_client.get(reverse("access:tokens")).content.decode()
    assert "Download: release manifests" in page and "Inference: the playground API" in page
    assert 'value="review"' not in page
    response = researcher_client.post(reverse("access:tokens"), {"name": "laptop", "days": 30,
                                                                 "scopes": ["download", "inference"]}, follow=True)
    assert response.status_code == 200 and "download, inference" in response.content.decode()
    assert ApiToken.objects.get(user=researcher).scopes == ["download", "inference"]
    none = researcher_client.post(reverse("access:tokens"), {"name": "ci", "days": 30})
    assert none.status_code == 400 and "Choose at least one scope." in none.content.decode()
    review = researcher_client.post(reverse("access:tokens"), {"name": "ci", "days": 30, "scopes": ["review"]})
    assert review.status_code == 400 and ApiToken.objects.count() == 1


def test_staff_get_the_review_scope_only_after_confirming_their_code(client, reviewer):
    unconfirmed = StaffFactory()
    client.force_login(unconfirmed)
    assert 'value="review"' in client.get(reverse("access:tokens")).content.decode()
    refused = client.post(reverse("access:tokens"), {"name": "ci", "days": 30, "scopes": ["review"]})
    assert refused.status_code == 400 and "Confirm your two-factor code first" in refused.content.decode()
    assert not ApiToken.objects.filter(user=unconfirmed).exists()

    client.logout()
    log_in_with_totp(client, reviewer)
    response = client.post(reverse("access:tokens"), {"name": "review bot", "days": 30, "scopes": ["review"]},
                           follow=True)
    assert response.status_code == 200 and "shown only once" in response.content.decode()
    token = ApiToken.objects.get(user=reviewer)
    assert token.scopes == ["review"] and token.created_with_mfa


def test_the_admin_shows_token_scopes_without_letting_them_change(client, researcher):
    token, _ = api_token_create(user=researcher, name="cluster", days=30, scopes=["download"], created_with_mfa=False)
    admin = StaffFactory()
    admin.totp_secret = generate_totp_secret()
    TOTP.activate(admin, admin.totp_secret)
    log_in_with_totp(client, admin)
    assert "download" in client.get("/admin/access/apitoken/").content.decode()
    page = client.get(f"/admin/access/apitoken/{token.pk}/change/").content.decode()
    assert "download" in page and 'name="scopes"' not in page


# Reviewers ---------------------------------------------------------------------------------------

def test_researchers_and_staff_without_the_permission_cannot_open_the_queue(reviewer_client):
    from django.test import Client

    researcher, plain_staff = Client(), Client()
    researcher.force_login(UserFactory())
    assert researcher.get(reverse("access:review_queue")).status_code == 403
    staff = StaffFactory(is_superuser=False)
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    staff.totp_secret = generate_totp_secret()
    TOTP.activate(staff, staff.totp_secret)
    from tests.access.conftest import log_in_with_totp

    log_in_with_totp(plain_staff, staff)
    assert plain_staff.get(reverse("access:review_queue")).status_code == 403  # two-factor, no permission
    assert reviewer_client.get(reverse("access:review_queue")).status_code == 200


def test_staff_without_two_factor_are_stopped_before_the_queue(client):
    client.force_login(StaffFactory())
    response = client.get(reverse("access:review_queue"))
    assert response.status_code == 302 and response["Location"] == reverse("mfa_activate_totp")


def test_the_queue_is_oldest_first_with_age_badges_and_filters(reviewer_client, release, open_release,
                                                               run_on_commit):
    with run_on_commit():
        old = apply(UserFactory(), release, legal_name="Olive Old", orcid="", country="FR")
        apply(UserFactory(), release, legal_name="Nina New", orcid="", country="DE")
    Application.objects.filter(pk=old.pk).update(submitted_at=timezone.now() - timedelta(days=20))
    body = reviewer_client.get(reverse("access:review_queue")).content.decode()
    assert body.index("Olive Old") < body.index("Nina New")
    assert "over SLA" in body
    filtered = reviewer_client.get(reverse("access:review_queue"), {"country": "DE"}).content.decode()
    assert "Nina New" in filtered and "Olive Old" not in filtered
    overdue = reviewer_client.get(reverse("access:review_queue"), {"age": "overdue"}).content.decode()
    assert "Olive Old" in overdue and "Nina New" not in overdue
    assert "Nina New" not in reviewer_client.get(reverse("access:review_queue"),
                                                 {"release": open_release.slug}).content.decode()


def test_the_queue_is_paged_by_next_and_previous_links_in_a_constant_number_of_queries(
        reviewer_client, release, run_on_commit, settings, django_assert_max_num_queries):
    settings.ACCESS_REVIEW_PAGE_SIZE = 10
    with run_on_commit():
        names = [apply(UserFactory(), release, legal_name=f"Person {index:02}", orcid="").legal_name
                 for index in range(25)]
    seen, url, counts = [], reverse("access:review_queue") + "?country=GB", []
    while url:
        with django_assert_max_num_queries(15) as captured:
            body = reviewer_client.get(url).content.decode()
        counts.append(len(captured))
        seen.append(re.findall(r"Person \d\d", body))
        following = re.search(r'<a href="([^"]+)" rel="next">', body)
        url = following and following.group(1).replace("&amp;", "&")
    assert seen == [names[:10], names[10:20], names[20:]]
    assert len(set(counts)) == 1  # the same on the last page as on the first: no count, no offset
    previous = re.search(r'<a href="([^"]+)" rel="prev">', body).group(1).replace("&amp;", "&")
    assert "country=GB" in previous
    assert re.findall(r"Person \d\d", reviewer_client.get(previous).content.decode()) == names[10:20]
    edited = reviewer_client.get(reverse("access:review_queue") + "?cursor=bm90LWEtY3Vyc29y")
    assert edited.status_code == 400 and "This page link is not valid" in edited.content.decode()
    assert "Person 00" in edited.content.decode()  # and the first page instead
    refused_bulk = reviewer_client.post(reverse("access:review_bulk"), {}).content.decode()  # the queue, with errors
    assert re.search(r'<a href="([^"]+)" rel="next">', refused_bulk).group(1).startswith(reverse("access:review_queue") + "?")


def test_signal_filter_finds_applications_needing_a_look(reviewer_client, release, run_on_commit):
    with run_on_commit():
        apply(UserFactory(email="x@gmail.com"), release, legal_name="Gina Gmail", orcid="")
        apply(UserFactory(), release, legal_name="Uma Uni", orcid="")
    body = reviewer_client.get(reverse("access:review_queue"), {"signal": "email_domain"}).content.decode()
    assert "Gina Gmail" in body and "Uma Uni" not in body


def test_reviewer_decides_with_a_template_plus_free_text(reviewer_client, researcher, release, run_on_commit):
    from access.models import ReasonTemplate

    with run_on_commit():
        application = apply(researcher, release)
    detail = reviewer_client.get(reverse("access:review_detail", args=[application.pk])).content.decode()
    assert "Vetting signals" in detail and "academic suffix" in detail
    template = ReasonTemplate.objects.get(title="Intended use out of scope")
    missing = reviewer_client.post(reverse("access:review_decide", args=[application.pk]), {"action": "reject"})
    assert missing.status_code == 400 and "A reason is required" in missing.content.decode()
    unknown = reviewer_client.post(reverse("access:review_decide", args=[application.pk]), {"action": "ban"})
    assert unknown.status_code == 400 and "Select a valid choice" in unknown.content.decode()
    with run_on_commit():
        reviewer_client.post(reverse("access:review_decide", args=[application.pk]),
                             {"action": "reject", "template": template.pk, "reason": "Product demos are commercial."})
    application.refresh_from_db()
    assert application.status == Application.Status.REJECTED
    assert template.text in application.decision_reason and "Product demos" in application.decision_reason
    assert "Product demos are commercial." in mail.outbox[-1].body


def test_the_review_form_keeps_its_action_and_the_reason_box_holds_the_exact_words(reviewer_client, researcher,
                                                                                  release, run_on_commit):
    from access.models import ReasonTemplate

    with run_on_commit():
        application = apply(researcher, release)
    url = reverse("access:review_decide", args=[application.pk])
    refused = reviewer_client.post(url, {"action": "reject"}).content.decode()
    assert 'value="reject" id="action-reject" checked' in refused and 'id="action-approve" checked' not in refused
    template = ReasonTemplate.objects.get(title="Intended use out of scope")
    detail = reviewer_client.get(reverse("access:review_detail", args=[application.pk])).content.decode()
    assert f'data-kind="reject" data-text="{template.text[:20]}' in detail and 'data-fills="reason"' in detail
    assert "the applicant was sent an acknowledgement" in detail and "sent you" not in detail  # third person
    edited = template.text + "\n\nProduct demos are commercial."  # the box as the page filled and the reviewer edited it
    response = reviewer_client.post(url, {"action": "reject", "template": template.pk, "reason": edited}, follow=True)
    application.refresh_from_db()
    assert application.decision_reason == edited, "the template's words are not added a second time"
    assert f"Application #{application.pk} rejected." in response.content.decode()


def test_an_empty_filtered_queue_says_nothing_matches_and_bulk_decisions_have_no_default(reviewer_client, release):
    body = reviewer_client.get(reverse("access:review_queue"), {"country": "FR"}).content.decode()
    assert "No applications match these filters" in body and "Nothing waiting" not in body
    assert "Nothing waiting" in reviewer_client.get(reverse("access:review_queue")).content.decode()
    assert '<select name="action"><option value="" selected>Choose…</option>' in body
    refused = reviewer_client.post(reverse("access:review_bulk"), {"reason": ""})
    assert refused.status_code == 400 and "Choose approve or reject." in refused.content.decode()


def test_assignment_notes_and_revocation(reviewer_client, reviewer, researcher, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    reviewer_client.post(reverse("access:review_assign", args=[application.pk]), {"assignee": reviewer.pk})
    application.refresh_from_db()
    assert application.assigned_to == reviewer and application.status == Application.Status.IN_REVIEW
    notes = reviewer_client.post(reverse("access:review_note", args=[application.pk]),
                                 {"text": "Checked the lab page."}, HTTP_HX_REQUEST="true")
    assert "Checked the lab page." in notes.content.decode()
    assert "Checked the lab page." not in reviewer_client.get(
        reverse("access:application_detail", args=[application.pk])).content.decode()  # 404 for the reviewer
    application_approve(application=application, by=reviewer)
    grant = Grant.objects.get()
    assert reviewer_client.post(reverse("access:review_grant_revoke", args=[grant.pk]), {"reason": ""}).status_code == 400
    reviewer_client.post(reverse("access:review_grant_revoke", args=[grant.pk]), {"reason": "Licence breach."})
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoke_reason == "Licence breach."


def test_bulk_approve_and_reject(reviewer_client, release, run_on_commit):
    with run_on_commit():
        apps = [apply(UserFactory(), release, legal_name=f"Bulk {i}", orcid="") for i in range(3)]
    reviewer_client.post(reverse("access:review_bulk"), {"applications": [apps[0].pk, apps[1].pk],
                                                         "action": "approve", "reason": ""})
    assert Application.objects.filter(status="approved").count() == 2
    response = reviewer_client.post(reverse("access:review_bulk"), {"applications": [apps[2].pk],
                                                                    "action": "reject", "reason": ""})
    assert response.status_code == 400 and "A reason is required" in response.content.decode()
    nothing = reviewer_client.post(reverse("access:review_bulk"), {"action": "approve"})
    assert nothing.status_code == 400 and "Select at least one application" in nothing.content.decode()
    reviewer_client.post(reverse("access:review_bulk"), {"applications": [apps[2].pk], "action": "reject",
                                                         "reason": "Duplicate account."})
    assert Application.objects.get(pk=apps[2].pk).status == "rejected"


def test_own_applications_show_no_decision_form(reviewer_client, reviewer, release, run_on_commit):
    with run_on_commit():
        mine = apply(reviewer, release)
    page = reviewer_client.get(reverse("access:review_detail", args=[mine.pk])).content.decode()
    assert "your own application" in page and "Record decision" not in page
    refused = reviewer_client.post(reverse("access:review_decide", args=[mine.pk]), {"action": "approve"})
    assert refused.status_code == 403 and "own application" in refused.content.decode()
    assert Application.objects.get(pk=mine.pk).status == Application.Status.SUBMITTED


def test_export_a_release_s_requests_and_decisions(reviewer_client, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(UserFactory(), release, orcid="")
    application_reject(application=application, by=reviewer, reason="No.")
    as_csv = reviewer_client.get(reverse("access:review_export", args=[release.slug, "csv"]))
    assert as_csv.streaming  # read and written a chunk at a time, whatever the size
    rows = list(csv.DictReader(io.StringIO(as_csv.getvalue().decode())))
    assert rows[0]["status"] == "rejected" and rows[0]["decision_reason"] == "No."
    assert rows[0]["decided_by"] == reviewer.email
    assert reviewer_client.get(f"/review/export/{release.slug}.xml").status_code == 404
    as_json = json.loads(reviewer_client.get(reverse("access:review_export", args=[release.slug, "json"])).getvalue())
    assert as_json["applications"][0]["id"] == application.pk


def test_the_csv_export_shows_formulas_typed_by_applicants_as_text(reviewer_client, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(UserFactory(), release, legal_name='=HYPERLINK("http://evil.example","x")', orcid="")
    application_reject(application=application, by=reviewer, reason="+cmd|' /C calc'!A0")
    as_csv = reviewer_client.get(reverse("access:review_export", args=[release.slug, "csv"]))
    [row] = list(csv.DictReader(io.StringIO(as_csv.getvalue().decode())))
    assert row["legal_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert row["decision_reason"] == "'+cmd|' /C calc'!A0"
    assert row["status"] == "rejected"  # ordinary cells are untouched
    as_json = json.loads(reviewer_client.get(reverse("access:review_export", args=[release.slug, "json"])).getvalue())
    assert as_json["applications"][0]["legal_name"].startswith("=HYPERLINK")  # JSON is data, not a sheet


def test_transparency_suppresses_small_cells_and_names_nobody(client, reviewer, release, run_on_commit):
    with run_on_commit():
        applications = [apply(UserFactory(), release, legal_name=f"Gb Person {index}", orcid="", country="GB")
                        for index in range(6)]
        apply(UserFactory(), release, legal_name="Lonely Icelander", orcid="", country="IS")
    for application in applications[:5]:
        application_approve(application=application, by=reviewer)
    body = client.get(reverse("access:transparency")).content.decode()
    assert "United Kingdom" in body
    assert "Iceland" not in body and "Other countries" in body  # one application: pooled
    assert "&lt;5" in body
    assert "Lonely Icelander" not in body and "Gb Person" not in body


def test_admin_publishes_a_new_licence_version_without_editing_old_ones(client, release):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    from access.models import AuditEvent
    from tests.access.conftest import log_in_with_totp

    admin_user = StaffFactory()
    admin_user.totp_secret = generate_totp_secret()
    TOTP.activate(admin_user, admin_user.totp_secret)
    log_in_with_totp(client, admin_user)
    reviewer_client = client
    licence = release.licence
    url = reverse("admin:access_licence_change", args=[licence.pk])
    page = reviewer_client.get(url)
    assert page.status_code == 200
    response = reviewer_client.post(url, {
        "slug": licence.slug, "title": licence.title,
        "versions-TOTAL_FORMS": "2", "versions-INITIAL_FORMS": "1", "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        "versions-0-id": licence.versions.get().pk, "versions-0-licence": licence.pk,
        "versions-1-id": "", "versions-1-licence": licence.pk, "versions-1-text_markdown": "# v2\n\nNew terms.",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    current = licence.current_version()
    assert current.number == 2 and current.text_markdown == "# v2\n\nNew terms."
    assert licence.versions.get(number=1).text_markdown.startswith("# Licence")
    assert AuditEvent.objects.filter(action="licence.publish").exists()


def test_bulk_decisions_skip_the_reviewer_s_own_application(reviewer_client, reviewer, release, run_on_commit):
    with run_on_commit():
        mine = apply(reviewer, release)
        theirs = apply(UserFactory(), release, legal_name="Someone Else", orcid="")
    response = reviewer_client.post(reverse("access:review_bulk"), {"applications": [mine.pk, theirs.pk],
                                                                    "action": "approve", "reason": ""}, follow=True)
    assert "own application" in response.content.decode()
    assert Application.objects.get(pk=mine.pk).status == Application.Status.SUBMITTED
    assert Application.objects.get(pk=theirs.pk).status == Application.Status.APPROVED


def test_the_apply_form_refuses_the_applicant_s_own_address_as_reference(researcher_client, researcher, release):
    response = researcher_client.post(reverse("access:apply"), form_data(
        release, role="phd_student", supervisor_name="Me", supervisor_email=researcher.email.upper()))
    assert response.status_code == 400
    assert "one of your own e-mail addresses" in response.content.decode()
    assert not Application.objects.exists()


def test_the_apply_form_limits_the_intended_use_and_says_so(researcher_client, release):
    page = researcher_client.get(reverse("access:apply")).content.decode()
    assert 'maxlength="5000"' in page and "to 5,000 characters" in page
    response = researcher_client.post(reverse("access:apply"), form_data(release, intended_use="x" * 2_400_000))
    assert response.status_code == 400
    assert "at most 5000 characters" in response.content.decode()
    assert not Application.objects.exists()
