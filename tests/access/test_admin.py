"""The admin: changes to records that decide access are audited, and audited records are not deleted there."""

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.urls import reverse

from access.audit import audit_verify
from access.models import AuditEvent, Grant, Institution
from access.services.applications import application_approve
from access.services.tokens import api_token_create
from tests.access.conftest import apply, log_in_with_totp
from tests.access.factories import InstitutionFactory
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(db):
    user = StaffFactory(email="admin@gatehouse.example")
    user.totp_secret = generate_totp_secret()
    TOTP.activate(user, user.totp_secret)
    return user


@pytest.fixture
def admin_client(client, admin_user):
    log_in_with_totp(client, admin_user)
    return client


def institution_form(institution: Institution, **changes) -> dict:
    data = {"name": institution.name, "ror_id": institution.ror_id, "sector": institution.sector,
            "email_domains": '["' + '", "'.join(institution.email_domains) + '"]' if institution.email_domains
            else "[]"}
    if institution.confirmed:
        data["confirmed"] = "on"
    data.update(changes)
    return data


def test_an_institution_edit_is_audited_with_before_after_and_the_admins_address(admin_client, admin_user):
    institution = InstitutionFactory(name="Example University", email_domains=["example.edu"])
    url = reverse("admin:access_institution_change", args=[institution.pk])
    assert admin_client.post(url, institution_form(institution)).status_code == 302
    assert not AuditEvent.objects.filter(action="institution.admin_change").exists()  # nothing changed
    response = admin_client.post(reverse("admin:access_institution_change", args=[institution.pk]),
                                 institution_form(institution, email_domains='["example.edu", "gatehouse.example"]'),
                                 REMOTE_ADDR="::ffff:198.51.100.4")
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="institution.admin_change")
    assert (event.actor, event.target_id) == (admin_user, str(institution.pk))
    assert event.before == {"email_domains": ["example.edu"]}
    assert event.after == {"email_domains": ["example.edu", "gatehouse.example"]}
    assert event.ip_address == "198.51.100.4"


def test_creating_and_deleting_an_institution_in_the_admin_is_audited(admin_client, admin_user):
    response = admin_client.post(reverse("admin:access_institution_add"),
                                 {"name": "Typo Univeristy", "ror_id": "", "sector": "academia",
                                  "email_domains": '["typo.edu"]'})
    assert response.status_code == 302, response.content.decode()[:2000]
    institution = Institution.objects.get(name="Typo Univeristy")
    created = AuditEvent.objects.get(action="institution.admin_create", target_id=str(institution.pk))
    assert created.after["email_domains"] == ["typo.edu"] and created.actor == admin_user

    response = admin_client.post(reverse("admin:access_institution_delete", args=[institution.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Institution.objects.filter(pk=institution.pk).exists()
    deleted = AuditEvent.objects.get(action="institution.admin_delete", target_id=str(institution.pk))
    assert deleted.before["name"] == "Typo Univeristy" and deleted.before["email_domains"] == ["typo.edu"]
    assert audit_verify()[1] == []


def test_making_a_user_staff_or_inactive_in_the_admin_is_audited(admin_client):
    person = UserFactory(email="someone@example.edu")
    url = reverse("admin:access_user_change", args=[person.pk])
    response = admin_client.post(url, {
        "email": person.email, "first_name": person.first_name, "last_name": person.last_name,
        "is_staff": "on", "date_joined_0": person.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": person.date_joined.strftime("%H:%M:%S"),
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.admin_change", target_id=str(person.pk))
    assert event.before["is_staff"] is False and event.after["is_staff"] is True
    assert event.before["is_active"] is True and event.after["is_active"] is False
    assert "password" not in event.after


def test_changing_a_release_approval_policy_in_the_admin_is_audited(admin_client, open_release):
    url = reverse("admin:artifacts_release_change", args=[open_release.pk])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "is_listed"}
    data.update({"approval_policy": "manual", "licence": open_release.licence_id,
                 "documents-TOTAL_FORMS": "0", "documents-INITIAL_FORMS": "0"})
    if open_release.is_listed:
        data["is_listed"] = "on"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="release.admin_change")
    assert event.before == {"approval_policy": "automatic"} and event.after == {"approval_policy": "manual"}


@pytest.fixture
def audited_records(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_approve(application=application, by=reviewer)
    token, _ = api_token_create(user=researcher, name="cluster", days=30, scopes=["download"],
                                created_with_mfa=False)
    return {"application": application, "grant": Grant.objects.get(user=researcher), "apitoken": token}


@pytest.mark.parametrize("model", ["application", "grant", "apitoken"])
def test_audited_records_cannot_be_deleted_in_the_admin(admin_client, audited_records, model):
    record = audited_records[model]
    change_page = admin_client.get(reverse(f"admin:access_{model}_change", args=[record.pk]))
    assert change_page.status_code == 200
    assert reverse(f"admin:access_{model}_delete", args=[record.pk]) not in change_page.content.decode()
    assert admin_client.get(reverse(f"admin:access_{model}_delete", args=[record.pk])).status_code == 403
    assert admin_client.post(reverse(f"admin:access_{model}_delete", args=[record.pk]),
                             {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse(f"admin:access_{model}_changelist"))
    assert "delete_selected" not in changelist.content.decode()
    bulk = admin_client.post(reverse(f"admin:access_{model}_changelist"),
                             {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert type(record).objects.filter(pk=record.pk).exists()
