"""Automated vetting: every signal explained, the embargo block, references, automatic approval."""

import pytest
from django.core import mail
from django.utils import timezone

from access.errors import TransitionError
from access.models import Application, AuditEvent, Grant, VettingSignal
from access.services.applications import application_approve
from access.services.grants import grant_revoke
from tests.access.conftest import apply
from tests.access.factories import InstitutionFactory
from tests.conftest import link_in
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def submitted(user, release, run_on_commit, **overrides) -> Application:
    with run_on_commit():
        application = apply(user, release, **overrides)
    application.refresh_from_db()
    return application


def signals(application) -> dict[str, VettingSignal]:
    return {signal.code: signal for signal in application.signals.all()}


def test_every_check_reports_a_signal_with_an_explanation(researcher, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    found = signals(application)
    assert set(found) == {"email_verified", "email_domain", "disposable_email", "embargo", "duplicates",
                          "earlier_rejections", "reference", "revoked_access", "staff_applicant"}
    assert all(signal.level == "green" and signal.explanation for signal in found.values())
    assert "academic suffix" in found["email_domain"].explanation or "registered" in found["email_domain"].explanation


def test_institution_domains_count_and_other_domains_need_a_look(release, open_release, run_on_commit):
    InstitutionFactory(name="Acme Research Institute", email_domains=["acme-research.org"])
    member = UserFactory(email="ada@lab.acme-research.org")
    outsider = UserFactory(email="ada@gmail.com")
    good = submitted(member, release, run_on_commit, institution_name="Acme Research Institute")
    odd = submitted(outsider, release, run_on_commit, institution_name="Acme Research Institute",
                    orcid="", legal_name="Ada Other")
    assert signals(good)["email_domain"].level == "green"
    assert "registered e-mail domains" in signals(good)["email_domain"].explanation
    assert signals(odd)["email_domain"].level == "amber"
    assert odd.vetting == Application.Vetting.ATTENTION


def test_disposable_addresses_are_flagged(open_release, run_on_commit):
    user = UserFactory(email="someone@mailinator.com")
    application = submitted(user, open_release, run_on_commit)
    assert signals(application)["disposable_email"].level == "red"
    assert application.status == Application.Status.SUBMITTED  # never auto-approved, never silently rejected


def test_an_embargoed_country_blocks_approval_and_the_applicant_is_told_why(researcher, reviewer, release,
                                                                          run_on_commit, settings):
    settings.ACCESS_EMBARGOED_COUNTRIES = ["KP"]
    application = submitted(researcher, release, run_on_commit, country="KP")
    embargo = signals(application)["embargo"]
    assert embargo.level == "red" and embargo.blocking
    assert application.vetting == Application.Vetting.BLOCKED
    told = [message for message in mail.outbox if "cannot be approved" in message.subject]
    assert told and "embargo list" in told[0].body
    with pytest.raises(TransitionError, match="embargo"):
        application_approve(application=application, by=reviewer)
    assert not Grant.objects.exists()


def test_duplicates_and_earlier_rejections_are_shown(researcher, reviewer, release, open_release, run_on_commit):
    from access.services.applications import application_reject

    first = submitted(researcher, release, run_on_commit)
    application_reject(application=first, by=reviewer, reason="Not research.")
    second_account = UserFactory(email="ada.again@uni.example.edu")
    duplicate = submitted(second_account, open_release, run_on_commit)  # same ORCID, same name + institution
    found = signals(duplicate)
    assert found["duplicates"].level == "amber" and f"#{first.pk}" in found["duplicates"].explanation
    assert found["earlier_rejections"].level == "amber" and "Not research." in found["earlier_rejections"].explanation
    assert duplicate.status == Application.Status.SUBMITTED  # not automatically approved


def test_green_applications_for_an_open_release_are_approved_automatically(researcher, open_release,
                                                                          run_on_commit):
    application = submitted(researcher, open_release, run_on_commit)
    assert application.status == Application.Status.APPROVED
    assert application.decided_by is None and "automatically" in application.decision_reason
    assert Grant.objects.get(application=application).user == researcher
    assert any("Approved" in message.subject for message in mail.outbox)


def test_the_manual_release_waits_for_a_reviewer_even_when_green(researcher, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    assert application.vetting == Application.Vetting.GREEN
    assert application.status == Application.Status.SUBMITTED


def test_a_student_s_reference_confirms_by_signed_link_then_auto_approval(client, open_release, run_on_commit):
    student = UserFactory(email="student@uni.example.edu")
    application = submitted(student, open_release, run_on_commit, role="phd_student", orcid="",
                            legal_name="Sam Student", supervisor_name="Prof. Grace Hopper",
                            supervisor_email="hopper@uni.example.edu")
    assert signals(application)["reference"].level == "amber"
    assert application.status == Application.Status.SUBMITTED
    request = next(m for m in mail.outbox if m.to == ["hopper@uni.example.edu"])
    link = link_in(request.body, "/access/reference/")
    path = link.split("localhost:8000", 1)[1]

    page = client.get(path)
    assert page.status_code == 200 and "Sam Student" in page.content.decode()
    with run_on_commit():
        response = client.post(path, {"decision": "confirm"})
    assert response.status_code == 200 and "confirmed" in response.content.decode()
    application.refresh_from_db()
    assert application.reference_status == Application.Reference.CONFIRMED
    assert signals(application)["reference"].level == "green"
    assert application.status == Application.Status.APPROVED

    again = client.post(path, {"decision": "decline"})
    assert again.status_code == 409
    assert client.get(path[:-5] + "xxxx/").status_code == 404


def test_the_reference_e_mail_is_plain_text_not_html_escaped(open_release, run_on_commit):
    student = UserFactory(email="student@uni.example.edu")
    submitted(student, open_release, run_on_commit, role="phd_student", orcid="", legal_name='Ann "Annie" O\'Neil <& Co>',
              supervisor_name="Prof. Grace Hopper", supervisor_email="hopper@uni.example.edu")
    request = next(m for m in mail.outbox if m.to == ["hopper@uni.example.edu"])
    assert 'Ann "Annie" O\'Neil <& Co>\'s research project' in request.subject
    assert 'Ann "Annie" O\'Neil <& Co>' in request.body
    assert "&quot;" not in request.subject + request.body and "&lt;" not in request.subject + request.body


def test_a_declined_reference_is_red_for_the_reviewer(client, release, run_on_commit):
    student = UserFactory(email="student2@uni.example.edu")
    application = submitted(student, release, run_on_commit, role="masters_student", orcid="",
                            legal_name="Kim Student", supervisor_name="Prof. X", supervisor_email="x@uni.example.edu")
    request = next(m for m in mail.outbox if m.to == ["x@uni.example.edu"])
    path = link_in(request.body, "/access/reference/").split("localhost:8000", 1)[1]
    with run_on_commit():
        client.post(path, {"decision": "decline"})
    application.refresh_from_db()
    assert signals(application)["reference"].level == "red"
    assert "declined" in signals(application)["reference"].explanation


def test_an_expired_reference_link_answers_410(client, release, run_on_commit, settings):
    student = UserFactory(email="student3@uni.example.edu")
    submitted(student, release, run_on_commit, role="undergraduate", orcid="", legal_name="Lee Student",
              supervisor_name="Prof. Y", supervisor_email="y@uni.example.edu")
    request = next(m for m in mail.outbox if m.to == ["y@uni.example.edu"])
    path = link_in(request.body, "/access/reference/").split("localhost:8000", 1)[1]
    settings.ACCESS_REFERENCE_LINK_DAYS = -1
    assert client.get(path).status_code == 410


def test_a_grant_revoked_under_another_account_is_red_and_waits_for_a_reviewer(researcher, reviewer, open_release,
                                                                              run_on_commit):
    first = submitted(researcher, open_release, run_on_commit)
    grant_revoke(grant=Grant.objects.get(application=first), by=reviewer, reason="Weights shared on a forum.")
    other_account = UserFactory(email="ada.second@uni.example.edu")
    again = submitted(other_account, open_release, run_on_commit, orcid="")  # same name + institution
    revoked = signals(again)["revoked_access"]
    assert revoked.level == "red"
    assert "Weights shared on a forum." in revoked.explanation and reviewer.email in revoked.explanation
    assert f"{timezone.now():%d %B %Y}" in revoked.explanation
    assert again.status == Application.Status.SUBMITTED and again.vetting == Application.Vetting.ATTENTION


def test_a_staff_member_s_application_is_never_approved_automatically(open_release, run_on_commit):
    InstitutionFactory(name="Gatehouse Lab", email_domains=["gatehouse.example"])  # staff listed their own domain
    staff = StaffFactory()
    application = submitted(staff, open_release, run_on_commit, institution_name="Gatehouse Lab")
    found = signals(application)
    assert all(signal.level == "green" for code, signal in found.items() if code != "staff_applicant")
    assert found["staff_applicant"].level == "amber" and "another reviewer" in found["staff_applicant"].explanation
    assert application.status == Application.Status.SUBMITTED and not Grant.objects.exists()


def test_the_applicant_signed_in_cannot_answer_their_own_reference(client, open_release, run_on_commit):
    student = UserFactory(email="student4@uni.example.edu")
    application = submitted(student, open_release, run_on_commit, role="phd_student", orcid="",
                            legal_name="Sam Self", supervisor_name="Prof. Z", supervisor_email="z@uni.example.edu")
    request = next(m for m in mail.outbox if m.to == ["z@uni.example.edu"])
    path = link_in(request.body, "/access/reference/").split("localhost:8000", 1)[1]
    client.force_login(student)
    page = client.get(path)
    assert page.status_code == 403 and "signed in as the applicant" in page.content.decode()
    with run_on_commit():
        refused = client.post(path, {"decision": "confirm"})
    assert refused.status_code == 403 and "signed in as the applicant" in refused.content.decode()
    application.refresh_from_db()
    assert application.reference_status == Application.Reference.PENDING
    assert application.status == Application.Status.SUBMITTED
    assert not AuditEvent.objects.filter(action="application.reference").exists()


def test_the_reference_e_mail_carries_only_a_bounded_summary_of_the_applicant_s_text(open_release, run_on_commit):
    student = UserFactory(email="student5@uni.example.edu")
    long_use = "We study memorisation in language models. " * 30 + "Visit http://phish.example/now to claim."
    submitted(student, open_release, run_on_commit, role="phd_student", orcid="", legal_name="Pat Student",
              intended_use=long_use, supervisor_name="Click http://phish.example/name",
              supervisor_email="q@uni.example.edu")
    request = next(m for m in mail.outbox if m.to == ["q@uni.example.edu"])
    assert "Pat Student" in request.body and "Example University" in request.body
    assert "We study memorisation in language models." in request.body
    assert "phish.example" not in request.body
    summary = request.body.split("the link):", 1)[1].split("Please confirm", 1)[0].strip()
    assert len(summary) <= 300


def test_automatic_approval_says_which_checks_must_pass_and_who_decides_when_one_does_not(client, open_release,
                                                                                       run_on_commit):
    from django.urls import reverse

    page = client.get(reverse("artifacts:release_detail", args=[open_release.slug])).content.decode()
    assert "approved within minutes when every check passes" in page
    assert "it is not a disposable address" in page and "working days" in page
    outsider = UserFactory(email="ada@gmail.com")
    application = submitted(outsider, open_release, run_on_commit, orcid="", legal_name="Ada Other")
    assert application.status == Application.Status.SUBMITTED
    client.force_login(outsider)
    status = client.get(reverse("access:application_detail", args=[application.pk])).content.decode()
    assert "<strong>E-mail domain</strong>" in status and "needs a person, so a reviewer decides" in status
