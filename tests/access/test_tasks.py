"""Scheduled and triggered tasks: vetting, expiry reminders and notices, the reviewers' digest."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from access.models import Application, Grant
from access.services.applications import application_approve, application_withdraw
from access.tasks import (
    notify_expired_grants_task, send_grant_expiry_reminders_task, send_review_digest_task, vet_application_task,
)
from tests.access.conftest import apply
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def grant(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_approve(application=application, by=reviewer)
    return Grant.objects.get(application=application)


def expire_in(grant, **delta):
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(**delta))


def reminders():
    return [message for message in mail.outbox if "ends in" in message.subject]


def test_renewal_reminders_30_and_7_days_ahead_each_sent_once(grant, run_on_commit):
    with run_on_commit():
        assert send_grant_expiry_reminders_task() == 0  # a year left
    expire_in(grant, days=29)
    with run_on_commit():
        assert send_grant_expiry_reminders_task() == 1
        assert send_grant_expiry_reminders_task() == 0
    assert "ends in 30 days" in reminders()[-1].subject
    expire_in(grant, days=6)
    with run_on_commit():
        assert send_grant_expiry_reminders_task() == 1
        assert send_grant_expiry_reminders_task() == 0
    assert "ends in 7 days" in reminders()[-1].subject
    assert len(reminders()) == 2
    assert "/access/" in reminders()[-1].body


def test_a_grant_found_late_gets_only_the_nearest_reminder(grant, run_on_commit):
    expire_in(grant, days=3)
    with run_on_commit():
        assert send_grant_expiry_reminders_task() == 1
    assert [message.subject for message in reminders()] == [reminders()[0].subject]
    assert "7 days" in reminders()[0].subject


def test_expired_grants_are_announced_once(grant, run_on_commit):
    expire_in(grant, seconds=-1)
    with run_on_commit():
        assert notify_expired_grants_task() == 1
        assert notify_expired_grants_task() == 0
    assert any("has ended" in message.subject for message in mail.outbox)


def test_the_digest_lists_applications_older_than_the_sla(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        old = apply(researcher, release)
        fresh = apply(UserFactory(), release, legal_name="Bob Newer", orcid="")
    Application.objects.filter(pk=old.pk).update(submitted_at=timezone.now() - timedelta(days=14))
    mail.outbox.clear()
    with run_on_commit():
        assert send_review_digest_task() == 1
    [digest] = mail.outbox
    assert reviewer.email in digest.to
    assert f"#{old.pk}" in digest.body and f"#{fresh.pk}" not in digest.body
    assert "1 application older than the review SLA" in digest.subject


def test_the_digest_is_silent_when_nothing_is_late(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        apply(researcher, release)
    mail.outbox.clear()
    assert send_review_digest_task() == 0
    assert mail.outbox == []


def test_vetting_a_closed_application_does_nothing(researcher, release):
    application = apply(researcher, release)
    application_withdraw(application=application, by=researcher)
    vet_application_task(application_id=application.pk)
    vet_application_task(application_id=987654)  # gone: no error
    application.refresh_from_db()
    assert application.status == Application.Status.WITHDRAWN and not application.signals.exists()


def test_the_beat_schedule_runs_the_digest_and_reminders_daily(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"access.send_review_digest", "access.send_grant_expiry_reminders", "access.notify_expired_grants",
            "access.refresh_figures"} <= tasks
    from portal.celery import app

    app.loader.import_default_modules()
    assert tasks <= set(app.tasks)


def test_public_figures_are_shown_from_the_copy_the_beat_task_keeps(client, reviewer, release, run_on_commit,
                                                                    django_assert_num_queries):
    from django.core.cache import cache
    from django.urls import reverse

    from access.services.figures import expected_wait
    from access.tasks import refresh_figures_task

    cache.clear()
    with run_on_commit():
        decided = [apply(UserFactory(), release, orcid="", legal_name=f"Person {index}") for index in range(5)]
    for application in decided:
        application_approve(application=application, by=reviewer)
    assert refresh_figures_task() >= 1
    with django_assert_num_queries(0):  # the kept figures: no application is read
        before = client.get(reverse("access:transparency")).content.decode()
        assert expected_wait(release=release) is not None
    with run_on_commit():
        late = apply(UserFactory(), release, orcid="", legal_name="Late Person")
    application_approve(application=late, by=reviewer)
    assert "approved <strong>5</strong>" in before
    assert "approved <strong>5</strong>" in client.get(reverse("access:transparency")).content.decode()
    refresh_figures_task()
    assert "approved <strong>6</strong>" in client.get(reverse("access:transparency")).content.decode()
