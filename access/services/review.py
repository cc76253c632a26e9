"""Reviewer work beyond single transitions: notes, bulk decisions, the daily SLA digest."""

from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from access.audit import audit_record
from access.errors import AccessError
from access.models import Application, ApplicationNote, User
from access.notifications import absolute_url, notify
from access.services.applications import (
    ensure_can_review, application_approve, application_reject, application_request_info,
)
from access.selectors import applications_overdue


@transaction.atomic
def application_note_add(*, application: Application, by: User, text: str) -> ApplicationNote:
    ensure_can_review(by=by, application=application)
    text = text.strip()
    if not text:
        raise ValidationError({"text": "Write the note."})
    note = ApplicationNote.objects.create(application=application, author=by, text=text)
    audit_record(actor=by, action="application.note", target=application, after={"note": note.pk})
    return note


BULK_DECISIONS = {"approve": application_approve, "reject": application_reject}


def application_bulk_decide(*, applications: list[Application], by: User, decision: str, reason: str,
                            ip_address: str | None = None) -> tuple[list[Application], dict[int, str]]:
    """Decide each application in its own transaction: (decided, {id: why it failed})."""
    if decision not in BULK_DECISIONS:
        raise ValidationError({"decision": "Choose approve or reject."})
    if decision == "reject" and not reason.strip():
        raise ValidationError({"reason": "A reason is required to reject; the applicants will see it."})
    decided, failed = [], {}
    for application in applications:
        try:
            decided.append(BULK_DECISIONS[decision](application=application, by=by, reason=reason,
                                                    ip_address=ip_address))
        except (AccessError, PermissionDenied) as error:
            failed[application.pk] = str(error)
    return decided, failed


def reviewers() -> list[User]:
    """Active staff with the review permission (directly, through a group, or as superuser)."""
    permission = Permission.objects.get(codename="review_application", content_type__app_label="access")
    directly = User.user_permissions.through.objects.filter(permission=permission).values("user_id")
    through_a_group = User.groups.through.objects.filter(group__permissions=permission).values("user_id")
    # Staff first (a few rows, by their own index), then the permission: joining the permission
    # tables to every account would read all of them.
    return list(User.objects.filter(is_active=True, is_staff=True).filter(
        Q(is_superuser=True) | Q(pk__in=directly) | Q(pk__in=through_a_group)).order_by("email"))


def review_digest_send(*, now=None) -> int:
    """E-mail reviewers the applications older than the SLA; returns how many were listed."""
    now = now or timezone.now()
    overdue = list(applications_overdue(now=now))
    recipients = [reviewer.email for reviewer in reviewers()]
    if not overdue or not recipients:
        return 0
    with transaction.atomic():
        notify(template="review_digest", to=recipients,
               context={"applications": overdue, "queue_url": absolute_url("access:review_queue"), "now": now})
    return len(overdue)


__all__ = ["application_note_add", "application_bulk_decide", "application_request_info", "review_digest_send",
           "reviewers"]
