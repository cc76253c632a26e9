"""Reads of the access app, each scoped to who is asking.

The download side and the playground call ``grant_active_for`` and ``licence_acceptance_required``.
"""

from django.utils import timezone

from access.models import Grant, LicenceAcceptance, LicenceVersion, User
from artifacts.models import Release


def grant_active_for(*, user: User, release: Release) -> Grant | None:
    """The user's active (not expired, not revoked) grant for ``release``, or None."""
    if not user.is_authenticated:
        return None
    return (Grant.objects.filter(user=user, release=release, revoked_at__isnull=True, expires_at__gt=timezone.now())
            .order_by("-expires_at").first())


def licence_acceptance_required(*, user: User, release: Release) -> LicenceVersion | None:
    """The licence version the user must (re)accept before using ``release``, or None when signed."""
    current = release.licence.current_version()
    if current is None:
        return None
    if LicenceAcceptance.objects.filter(user=user, licence_version=current).exists():
        return None
    return current
