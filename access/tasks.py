"""Celery tasks of the access app: thin wrappers over services, JSON arguments only."""

import smtplib

from celery import shared_task
from django.conf import settings

from access.emails import email_build


@shared_task(
    name="access.send_email",
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    max_retries=5,
    retry_backoff=True,
)
def send_email_task(*, subject: str, body: str, from_email: str, to: list[str], alternatives: list) -> None:
    email_build(subject=subject, body=body, from_email=from_email, to=to, alternatives=alternatives).send()


@shared_task(name="access.vet_application", max_retries=3, retry_backoff=True,
             autoretry_for=(ConnectionError, TimeoutError))
def vet_application_task(*, application_id: int) -> None:
    """Run the automated checks; a no-op when the application is no longer open."""
    from access.models import Application
    from access.services.vetting import application_vet

    application = Application.objects.filter(pk=application_id).first()
    if application is not None:
        application_vet(application=application)


@shared_task(name="access.send_review_digest", max_retries=3, retry_backoff=True,
             autoretry_for=(ConnectionError, TimeoutError))
def send_review_digest_task() -> int:
    from access.services.review import review_digest_send

    return review_digest_send()


@shared_task(name="access.send_grant_expiry_reminders", max_retries=3, retry_backoff=True,
             autoretry_for=(ConnectionError, TimeoutError))
def send_grant_expiry_reminders_task() -> int:
    """Send the nearest due reminder (30, then 7 days ahead by default) to each active grant, once."""
    from access.selectors import grants_due_for_reminder
    from access.services.grants import grant_remind_expiry

    sent = 0
    for days in sorted(settings.ACCESS_GRANT_REMINDER_DAYS):  # nearest first: a late grant gets only that one
        for grant in grants_due_for_reminder(days=days):
            sent += grant_remind_expiry(grant=grant, days=days)
    return sent


@shared_task(name="access.notify_expired_grants", max_retries=3, retry_backoff=True,
             autoretry_for=(ConnectionError, TimeoutError))
def notify_expired_grants_task() -> int:
    from access.selectors import grants_expired_unnotified
    from access.services.grants import grant_notify_expired

    return sum(grant_notify_expired(grant=grant) for grant in grants_expired_unnotified())


@shared_task(name="access.refresh_figures")
def refresh_figures_task() -> int:
    """Recompute the transparency page's figures and the releases' expected waits."""
    from access.services.figures import figures_refresh

    return figures_refresh()
