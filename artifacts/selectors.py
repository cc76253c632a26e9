"""Reads of the artifacts app, always scoped to what the requesting user may see."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from access.models import Grant, LicenceAcceptance, LicenceVersion
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


# For /dl/: everything a link check needs in two queries (it is the hottest path of the portal).

def grant_for_download(*, grant_id: int, user_id: int) -> Grant | None:
    """The grant, its release, and whether its holder has accepted the latest licence version.

    Annotates ``latest_licence_number`` (None when the licence has no published version) and
    ``latest_licence_accepted``: the same rule as ``access.selectors.licence_acceptance_required``.
    """
    latest = LicenceVersion.objects.filter(licence_id=OuterRef("release__licence_id"), published_at__isnull=False)
    return (
        Grant.objects.select_related("release")
        .annotate(latest_licence_number=Subquery(latest.order_by("-number").values("number")[:1]))
        .annotate(latest_licence_accepted=Exists(LicenceAcceptance.objects.filter(
            user_id=OuterRef("user_id"),
            licence_version__licence_id=OuterRef("release__licence_id"),
            licence_version__number=OuterRef("latest_licence_number"),
        )))
        .filter(pk=grant_id, user_id=user_id)
        .first()
    )


def file_for_download(*, file_id: int, user_id: int, link_id: str) -> ArtifactFile | None:
    """The file with its variant and the user's counted downloads of it in the limit window.

    Annotates ``link_counted`` (this link already counted), ``counted_links`` (distinct links
    counted) and ``oldest_counted_at`` (when the window's first counted download happened).
    """
    since = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
    counted = DownloadEvent.objects.filter(user_id=user_id, file_id=OuterRef("pk"), counts_as_download=True,
                                           at__gte=since)
    return (
        ArtifactFile.objects.select_related("variant")
        .annotate(
            link_counted=Exists(counted.filter(link_id=link_id)),
            counted_links=Subquery(counted.order_by().values("file_id")
                                   .annotate(n=Count("link_id", distinct=True)).values("n")[:1]),
            oldest_counted_at=Subquery(counted.order_by("at").values("at")[:1]),
        )
        .filter(pk=file_id)
        .first()
    )
