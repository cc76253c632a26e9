"""Grants after approval: revocation, self-service renewal, expiry reminders and notices."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from access.audit import audit_record
from access.errors import AccessError
from access.models import Grant, User
from access.notifications import absolute_url, notify
from access.roles import is_reviewer
from access.signals import grant_revoked


def _notify_holder(grant: Grant, template: str, **extra) -> None:
    notify(template=template, to=[grant.user.email],
           context={"grant": grant, "my_access_url": absolute_url("access:my_access"), **extra})


@transaction.atomic
def grant_revoke(*, grant: Grant, by: User, reason: str, ip_address: str | None = None) -> Grant:
    """Staff revoke access at once: downloads and the playground check ``grant_active_for``."""
    grant = Grant.objects.select_for_update().select_related("user", "release").get(pk=grant.pk)
    if not is_reviewer(by):
        raise PermissionDenied("Only staff with the review permission can revoke access.")
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required; the researcher will see it."})
    if grant.revoked_at is not None:
        raise AccessError("This grant is already revoked.")
    grant.revoked_at, grant.revoked_by, grant.revoke_reason = timezone.now(), by, reason
    grant.generation += 1  # invalidates every download link issued before
    grant.save(update_fields=["revoked_at", "revoked_by", "revoke_reason", "generation"])
    audit_record(actor=by, action="grant.revoke", target=grant, reason=reason, ip_address=ip_address,
                 after={"revoked_at": grant.revoked_at.isoformat(), "generation": grant.generation})
    grant_revoked.send(sender=Grant, grant=grant)
    _notify_holder(grant, "grant_revoked", reason=reason)
    return grant


def grant_renewal_opens_at(grant: Grant):
    return grant.expires_at - timedelta(days=max(settings.ACCESS_GRANT_REMINDER_DAYS, default=30))


@transaction.atomic
def grant_renew(*, grant: Grant, by: User, ip_address: str | None = None) -> Grant:
    """The holder extends an active grant in its last weeks, by one more period from its expiry."""
    grant = Grant.objects.select_for_update().select_related("user", "release").get(pk=grant.pk)
    if by.pk != grant.user_id:
        raise PermissionDenied("Only the holder can renew this grant.")
    now = timezone.now()
    if not grant.is_active(now):
        raise AccessError("This grant is no longer active; apply again for access.")
    opens = grant_renewal_opens_at(grant)
    if now < opens:
        raise AccessError(f"Renewal opens on {opens:%d %B %Y}.")
    before = grant.expires_at
    grant.expires_at = grant.expires_at + timedelta(days=settings.ACCESS_GRANT_DURATION_DAYS)
    grant.reminded_days_before = None
    grant.generation += 1
    grant.save(update_fields=["expires_at", "reminded_days_before", "generation"])
    audit_record(actor=by, action="grant.renew", target=grant, ip_address=ip_address,
                 before={"expires_at": before.isoformat()}, after={"expires_at": grant.expires_at.isoformat()})
    _notify_holder(grant, "grant_renewed")
    return grant


@transaction.atomic
def grant_remind_expiry(*, grant: Grant, days: int) -> bool:
    """Send the ``days``-ahead reminder once; False when it (or a nearer one) was already sent."""
    grant = Grant.objects.select_for_update().select_related("user", "release").get(pk=grant.pk)
    if not grant.is_active() or (grant.reminded_days_before is not None and grant.reminded_days_before <= days):
        return False
    grant.reminded_days_before = days
    grant.save(update_fields=["reminded_days_before"])
    audit_record(actor=None, action="grant.remind_expiry", target=grant, after={"days_before": days})
    _notify_holder(grant, "grant_expiry_reminder", days=days, renew_url=absolute_url("access:my_access"))
    return True


@transaction.atomic
def grant_notify_expired(*, grant: Grant) -> bool:
    """Tell the holder their access ended; once."""
    grant = Grant.objects.select_for_update().select_related("user", "release").get(pk=grant.pk)
    if grant.expiry_notified_at is not None or grant.revoked_at is not None or grant.expires_at > timezone.now():
        return False
    grant.expiry_notified_at = timezone.now()
    grant.save(update_fields=["expiry_notified_at"])
    audit_record(actor=None, action="grant.expire", target=grant, after={"expires_at": grant.expires_at.isoformat()})
    _notify_holder(grant, "grant_expired", apply_url=absolute_url("access:apply"))
    return True
