"""Celery tasks of the access app: thin wrappers, JSON arguments only."""

import smtplib

from celery import shared_task

from access.emails import email_build


@shared_task(
    name="access.send_email",
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    max_retries=5,
    retry_backoff=True,
)
def send_email_task(*, subject: str, body: str, from_email: str, to: list[str], alternatives: list) -> None:
    email_build(subject=subject, body=body, from_email=from_email, to=to, alternatives=alternatives).send()
