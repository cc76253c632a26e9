"""E-mails of the access process: plain-text templates rendered now, delivered after commit."""

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template import Context
from django.template.loader import get_template
from django.urls import reverse

from access.emails import email_send_after_commit


def absolute_url(view_name: str, *args) -> str:
    return settings.SITE_URL + reverse(view_name, args=args)


def render_text(name: str, context: dict) -> str:
    """A plain-text template, nothing HTML-escaped: an e-mail's subject and text body are not HTML."""
    return get_template(name).template.render(Context(context, autoescape=False))


def notify(*, template: str, to: list[str], context: dict) -> None:
    """Render ``access/email/<template>_subject.txt`` and ``_body.txt`` and queue the message."""
    context = {"site_url": settings.SITE_URL, "cooldown_days": settings.ACCESS_REAPPLY_COOLDOWN_DAYS, **context}
    subject = settings.ACCOUNT_EMAIL_SUBJECT_PREFIX + " ".join(
        render_text(f"access/email/{template}_subject.txt", context).split()
    )
    body = render_text(f"access/email/{template}_body.txt", context)
    email_send_after_commit(
        EmailMultiAlternatives(subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=to)
    )


def notify_applicant(*, application, template: str, **extra) -> None:
    notify(
        template=template,
        to=[application.user.email],
        context={"application": application, "status_url": absolute_url("access:application_detail", application.pk),
                 **extra},
    )
