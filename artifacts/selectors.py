"""Reads of the artifacts app, always scoped to what the requesting user may see."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from access.models import Grant, User
from artifacts.models import ArtifactFile, DownloadEvent, Release, Variant


def release_list_public() -> QuerySet[Release]:
    return Release.objects.filter(is_listed=True).select_related("licence")


def release_get_public(*, slug: str) -> Release | None:
    return release_list_public().filter(slug=slug).first()


def variants_with_totals(*, release: Release) -> QuerySet[Variant]:
    ok = Q(files__integrity=ArtifactFile.Integrity.OK)
    return release.variants.annotate(
        file_count=Count("files"),
        total_size=Sum("files__size"),
        withheld_count=Count("files", filter=~ok),
    ).order_by("name")


def grant_active_for(*, user: User, release: Release, now: datetime.datetime | None = None) -> Grant | None:
    """The user's active grant for the release (not revoked, not expired), newest first."""
    if not user.is_authenticated:
        return None
    now = now or timezone.now()
    return (
        Grant.objects.filter(user=user, release=release, revoked_at__isnull=True, expires_at__gt=now)
        .select_related("licence_version")
        .order_by("-granted_at")
        .first()
    )


def downloads_counted_since(*, user_id: int, file_ids: list[int]) -> dict[int, int]:
    """Distinct downloads per file in the current limit window (retries of a link count once)."""
    since = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
    rows = (
        DownloadEvent.objects.filter(user_id=user_id, file_id__in=file_ids, counts_as_download=True, at__gte=since)
        .values("file_id")
        .annotate(count=Count("link_id", distinct=True))
    )
    return {row["file_id"]: row["count"] for row in rows}
