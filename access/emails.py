"""Outgoing e-mail: rendered in the request, delivered by a Celery task after commit."""

from django.core.mail import EmailMultiAlternatives
from django.db import transaction


def email_send_after_commit(message: EmailMultiAlternatives) -> None:
    """Queue ``message`` for delivery once the current transaction commits."""
    from access.tasks import send_email_task

    payload = {
        "subject": message.subject,
        "body": message.body,
        "from_email": message.from_email,
        "to": list(message.to),
        "alternatives": [[content, mimetype] for content, mimetype in message.alternatives],
    }
    transaction.on_commit(lambda: send_email_task.delay(**payload))


def email_build(*, subject: str, body: str, from_email: str, to: list[str], alternatives: list) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(subject=subject, body=body, from_email=from_email, to=to)
    for content, mimetype in alternatives:
        message.attach_alternative(content, mimetype)
    return message
