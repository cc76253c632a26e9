"""Reads of the artifacts app, always scoped to what the requesting user may see."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from access.selectors import grant_active_for  # noqa: F401  (re-exported for the release pages)
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


def downloads_counted_since(*, user_id: int, file_ids: list[int]) -> dict[int, int]:
    """Distinct downloads per file in the current limit window (retries of a link count once)."""
    since = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
    rows = (
        DownloadEvent.objects.filter(user_id=user_id, file_id__in=file_ids, counts_as_download=True, at__gte=since)
        .values("file_id")
        .annotate(count=Count("link_id", distinct=True))
    )
    return {row["file_id"]: row["count"] for row in rows}
