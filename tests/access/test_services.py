"""The application state machine and its rules, through the services."""

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from access.errors import AccessError, TransitionError
from access.models import Application, AuditEvent, Grant
from access.selectors import grant_active_for, licence_acceptance_required
from access.services.applications import (
    application_approve, application_assign, application_reject, application_request_info, application_respond,
    application_submit, application_withdraw,
)
from access.services.grants import grant_renew, grant_revoke
from access.services.licences import licence_accept, licence_version_publish
from tests.access.conftest import apply, profile
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
S = Application.Status


def vetted(application, run_on_commit) -> Application:
    application.refresh_from_db()
    return application


def submitted(user, release, run_on_commit, **overrides) -> Application:
    with run_on_commit():
        application = apply(user, release, **overrides)
    application.refresh_from_db()
    return application


def test_submitting_acknowledges_at_once_and_signs_the_licence(researcher, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)

    assert application.status == S.SUBMITTED
    acceptance = application.licence_acceptance
    assert acceptance.signature_name == "Ada Lovelace"
    assert acceptance.text_sha256 == release.licence.current_version().sha256
    assert acceptance.ip_address == "192.0.2.10" and acceptance.user_agent == "pytest"
    subjects = [message.subject for message in mail.outbox]
    assert any("We received your application" in subject for subject in subjects)
    assert application.vetting == Application.Vetting.GREEN  # the vetting task ran after commit


def test_every_transition_of_the_state_machine(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release, submit=False)
    assert application.status == S.DRAFT
    with run_on_commit():
        application_submit(application=application, by=researcher, accept_licence=True,
                           signature_name="Ada Lovelace")
        application_assign(application=application, by=reviewer, assignee=reviewer)
    application.refresh_from_db()
    assert application.status == S.IN_REVIEW and application.assigned_to == reviewer

    with run_on_commit():
        application_request_info(application=application, by=reviewer, reason="Which checkpoints?")
    application.refresh_from_db()
    assert application.status == S.NEEDS_INFO and application.info_request == "Which checkpoints?"

    with run_on_commit():
        application_respond(application=application, by=researcher, response="All of them, fp16.")
    application.refresh_from_db()
    assert application.status == S.SUBMITTED and application.info_response == "All of them, fp16."

    with run_on_commit():
        application_approve(application=application, by=reviewer, reason="Welcome.")
    application.refresh_from_db()
    assert application.status == S.APPROVED and application.decided_by == reviewer
    grant = Grant.objects.get(application=application)
    assert grant.user == researcher and grant.release == release
    assert grant.expires_at - timezone.now() > timedelta(days=364)
    assert grant_active_for(user=researcher, release=release) == grant

    actions = list(AuditEvent.objects.filter(target_type="access.application", target_id=str(application.pk))
                   .values_list("action", flat=True))
    for action in ["application.create", "application.submit", "application.start_review",
                   "application.request_info", "application.respond", "application.approve"]:
        assert action in actions
    subjects = " | ".join(message.subject for message in mail.outbox)
    for expected in ["We received", "A reviewer is looking", "Information needed", "back in the queue", "Approved"]:
        assert expected in subjects
    approval = next(message.body for message in mail.outbox if message.subject.endswith(f"access to {release.name}"))
    assert f"/releases/{release.slug}/download/" in approval and "/playground/" in approval

    with pytest.raises(TransitionError):
        application_withdraw(application=application, by=researcher)


def test_rejection_and_withdrawal_are_final(researcher, reviewer, release, open_release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    with run_on_commit():
        application_reject(application=application, by=reviewer, reason="Commercial use is not allowed.")
    application.refresh_from_db()
    assert application.status == S.REJECTED and application.decision_reason == "Commercial use is not allowed."
    rejection = mail.outbox[-1]
    assert "Commercial use is not allowed." in rejection.body
    with pytest.raises(TransitionError):
        application_approve(application=application, by=reviewer)

    other = apply(researcher, open_release, submit=False)
    application_withdraw(application=other, by=researcher)
    other.refresh_from_db()
    assert other.status == S.WITHDRAWN
    with pytest.raises(TransitionError):
        application_withdraw(application=other, by=researcher)


def test_reject_and_request_info_require_a_reason(researcher, reviewer, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    for service in (application_reject, application_request_info):
        with pytest.raises(ValidationError) as error:
            service(application=application, by=reviewer, reason="   ")
        assert "reason" in error.value.message_dict
    application.refresh_from_db()
    assert application.status == S.SUBMITTED


def test_nobody_reviews_their_own_application(release, run_on_commit):
    staff = StaffFactory()  # a superuser reviewer applying for themselves
    application = submitted(staff, release, run_on_commit)
    with pytest.raises(PermissionDenied, match="own application"):
        application_approve(application=application, by=staff)
    application.refresh_from_db()
    assert application.status == S.SUBMITTED and not Grant.objects.exists()


def test_researchers_and_staff_without_the_permission_cannot_decide(researcher, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    other_researcher = UserFactory()
    plain_staff = StaffFactory(is_superuser=False)
    for person in (other_researcher, plain_staff):
        with pytest.raises(PermissionDenied):
            application_approve(application=application, by=person)
        with pytest.raises(PermissionDenied):
            application_reject(application=application, by=person, reason="no")


def test_unverified_users_cannot_apply(release):
    unverified = UserFactory(verified=False)
    with pytest.raises(PermissionDenied, match="Verify your e-mail"):
        apply(unverified, release)
    assert not Application.objects.exists()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"orcid": "0000-0002-1825-0098"}, "orcid"),
    ({"intended_use": "Research."}, "intended_use"),
    ({"role": "phd_student"}, "supervisor_name"),
    ({"role": "phd_student", "supervisor_name": "Prof. B", "supervisor_email": "not-an-email"}, "supervisor_email"),
    ({"country": "XX"}, "country"),
    ({"legal_name": ""}, "legal_name"),
    ({"institution_ror_id": "https://ror.org/not-a-ror"}, "institution_ror_id"),
])
def test_bad_profile_fields_are_refused_by_name(researcher, release, overrides, field):
    with pytest.raises(ValidationError) as error:
        apply(researcher, release, **overrides)
    assert field in error.value.message_dict


def test_orcid_and_ror_ids_are_stored_in_their_canonical_form(researcher, release):
    application = apply(researcher, release, orcid="0000000218250097", institution_name="University of Oxford",
                        institution_ror_id="052GG0110")
    assert application.orcid == "0000-0002-1825-0097"
    assert application.institution.ror_id == "https://ror.org/052gg0110"


def test_the_licence_needs_the_box_ticked_and_the_legal_name_typed(researcher, release):
    from access.services.applications import application_create

    with pytest.raises(ValidationError) as error:
        application_create(user=researcher, releases=[release], fields=profile(), submit=True,
                           accept_licence=False, signature_name="Someone Else")
    assert set(error.value.message_dict) == {"accept_licence", "signature_name"}
    assert not Application.objects.exists()


def test_reapplying_waits_for_the_cool_down_and_links_the_earlier_decision(researcher, reviewer, release,
                                                                         run_on_commit, settings):
    settings.ACCESS_REAPPLY_COOLDOWN_DAYS = 30
    first = submitted(researcher, release, run_on_commit)
    application_reject(application=first, by=reviewer, reason="Describe the research better.")
    with pytest.raises(ValidationError, match="re-apply from"):
        apply(researcher, release)

    Application.objects.filter(pk=first.pk).update(decided_at=timezone.now() - timedelta(days=31))
    second = submitted(researcher, release, run_on_commit)
    assert second.previous_application == first
    assert second.status == S.SUBMITTED


def test_one_open_application_per_release(researcher, release, run_on_commit):
    submitted(researcher, release, run_on_commit)
    with pytest.raises(ValidationError, match="already have an open application"):
        apply(researcher, release)


def test_a_new_licence_version_requires_re_acceptance_without_a_new_application(researcher, reviewer, release,
                                                                              run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    application_approve(application=application, by=reviewer)
    assert licence_acceptance_required(user=researcher, release=release) is None

    new_version = licence_version_publish(licence=release.licence, text_markdown="# Licence v2\n\nStricter.",
                                          by=reviewer)
    assert licence_acceptance_required(user=researcher, release=release) == new_version
    assert grant_active_for(user=researcher, release=release) is not None  # the grant itself stays

    with pytest.raises(ValidationError):
        licence_accept(user=researcher, licence_version=new_version, accepted=True, signature_name="",
                       expected_name="Ada Lovelace")
    licence_accept(user=researcher, licence_version=new_version, accepted=True, signature_name="ada lovelace",
                   expected_name="Ada Lovelace", ip_address="198.51.100.7", user_agent="Firefox")
    assert licence_acceptance_required(user=researcher, release=release) is None
    assert Application.objects.filter(user=researcher).count() == 1


def test_revocation_stops_access_at_once_and_says_why(researcher, reviewer, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    application_approve(application=application, by=reviewer)
    grant = Grant.objects.get()
    with run_on_commit():
        grant_revoke(grant=grant, by=reviewer, reason="Weights were redistributed publicly.")
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.generation == 2 and grant.revoked_by == reviewer
    assert grant_active_for(user=researcher, release=release) is None
    assert "Weights were redistributed publicly." in mail.outbox[-1].body
    with pytest.raises(AccessError):
        grant_revoke(grant=grant, by=reviewer, reason="again")
    with pytest.raises(PermissionDenied):
        grant_revoke(grant=grant, by=researcher, reason="me")


def test_grants_expire_and_renew_in_their_last_weeks(researcher, reviewer, release, run_on_commit):
    application = submitted(researcher, release, run_on_commit)
    application_approve(application=application, by=reviewer)
    grant = Grant.objects.get()
    with pytest.raises(AccessError, match="Renewal opens"):
        grant_renew(grant=grant, by=researcher)

    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(days=5))
    grant.refresh_from_db()
    old_expiry = grant.expires_at
    renewed = grant_renew(grant=grant, by=researcher)
    assert renewed.expires_at == old_expiry + timedelta(days=365)
    assert renewed.generation == 2

    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert grant_active_for(user=researcher, release=release) is None
    with pytest.raises(AccessError, match="no longer active"):
        grant_renew(grant=Grant.objects.get(), by=researcher)


def test_approval_needs_finished_checks(researcher, reviewer, release):
    application = apply(researcher, release)  # no commit: the vetting task has not run
    with pytest.raises(TransitionError, match="not finished"):
        application_approve(application=application, by=reviewer)


def test_the_database_keeps_one_open_application_per_release_even_under_a_race(researcher, release):
    from django.db import IntegrityError, transaction

    first = apply(researcher, release)
    with pytest.raises(IntegrityError), transaction.atomic():
        Application.objects.create(user=researcher, release=release, institution=first.institution,
                                   legal_name="Ada Lovelace", role="researcher", country="GB",
                                   intended_use="x", status=S.SUBMITTED)


def test_the_application_service_refuses_over_long_free_text(researcher, release):
    with pytest.raises(ValidationError) as refused:
        apply(researcher, release, intended_use="x" * 5001, publications="p" * 2001)
    errors = refused.value.message_dict
    assert errors["intended_use"] == ["Keep this to at most 5,000 characters (you wrote 5,001)."]
    assert errors["publications"] == ["Keep this to at most 2,000 characters (you wrote 2,001)."]
