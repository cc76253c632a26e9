"""Institutions: applicants may type any name, but only staff-confirmed ones are suggested to everyone."""

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.urls import reverse

from access.demo import DEMO_INSTITUTION, demo_access_seed
from access.models import AuditEvent, Institution
from access.services.institutions import institution_resolve
from tests.access.conftest import apply
from tests.access.factories import InstitutionFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def suggested(client) -> str:
    page = client.get(reverse("access:apply")).content.decode()
    return page[page.index('<datalist id="institutions">'):].split("</datalist>")[0]


def test_a_name_an_applicant_typed_is_suggested_to_them_but_not_to_others(client, release):
    InstitutionFactory(name="University of Cambridge", confirmed=True)
    typer = UserFactory()
    apply(typer, release, institution_name="Totally Real Institute of Phishing")
    typed = Institution.objects.get(name="Totally Real Institute of Phishing")
    assert not typed.confirmed

    client.force_login(UserFactory())
    others = suggested(client)
    assert "University of Cambridge" in others and "Phishing" not in others
    client.force_login(typer)
    assert "Totally Real Institute of Phishing" in suggested(client)


def test_staff_confirm_institutions_in_the_admin_and_it_is_audited(reviewer_client, reviewer, client, release):
    reviewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_institution", "change_institution"]))
    typed = institution_resolve(name="Institute of Newly Founded Research", by=UserFactory())
    response = reviewer_client.post(reverse("admin:access_institution_changelist"),
                                    {"action": "confirm", "_selected_action": [typed.pk]})
    assert response.status_code == 302
    typed.refresh_from_db()
    assert typed.confirmed
    event = AuditEvent.objects.get(action="institution.confirm", target_id=str(typed.pk))
    assert event.actor == reviewer and event.after == {"confirmed": True}
    client.force_login(UserFactory())
    assert "Institute of Newly Founded Research" in suggested(client)


def test_an_institution_staff_add_in_the_admin_starts_confirmed(reviewer_client, reviewer):
    reviewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_institution", "add_institution"]))
    page = reviewer_client.get(reverse("admin:access_institution_add")).content.decode()
    [checkbox] = [line for line in page.splitlines() if 'name="confirmed"' in line]
    assert " checked" in checkbox


def test_the_migration_confirms_what_staff_made_and_leaves_names_applicants_typed(release):
    staff_made = Institution.objects.create(name="Made In The Admin")  # no audit row: not through the apply form
    with_domains = institution_resolve(name="Typed Then Given Domains", by=UserFactory())
    Institution.objects.filter(pk=with_domains.pk).update(email_domains=["domains.example"])
    typed = institution_resolve(name="Typed By An Applicant", by=UserFactory())
    Institution.objects.update(confirmed=False)  # as the new column is, before the data migration
    migration = importlib.import_module("access.migrations.0009_institution_confirmed_text_limits")
    migration.confirm_institutions_staff_made(apps, None)
    confirmed = set(Institution.objects.filter(confirmed=True).values_list("name", flat=True))
    assert {"Made In The Admin", "Typed Then Given Domains"} <= confirmed
    assert typed.name not in confirmed


def test_the_demo_university_is_confirmed(db):
    UserFactory(email="researcher@gatehouse.example")
    demo_access_seed(researcher_email="researcher@gatehouse.example", release_slug="no-such-release")
    assert Institution.objects.get(name=DEMO_INSTITUTION).confirmed
