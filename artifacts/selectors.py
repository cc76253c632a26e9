"""Reads of the artifacts app, always scoped to what the requesting user may see."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
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


def variants_in_order(*, release: Release) -> list[Variant]:
    """The release's variants, the Hugging Face one (a ``config.json`` at its top) first as the default:
    what ``from_pretrained`` and most researchers use."""
    hub_format = set(release.variants.filter(files__path="config.json").values_list("pk", flat=True))
    return sorted(release.variants.all(), key=lambda variant: (variant.pk not in hub_format, variant.name))


def downloads_counted_since(*, user_id: int, variant_id: int) -> dict[int, int]:
    """Distinct downloads per file of a variant in the current limit window: one per (link, client
    address), as ``download_check`` counts them."""
    since = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
    pairs = (
        DownloadEvent.objects.filter(user_id=user_id, file__variant_id=variant_id, counts_as_download=True, at__gte=since)
        .values_list("file_id", "link_id", "ip")
        .distinct()
    )
    counts: dict[int, int] = {}
    for file_id, _, _ in pairs:
        counts[file_id] = counts.get(file_id, 0) + 1
    return counts


# For /dl/: the hottest path of the portal. One hand-written query (the same text every time)
# costs about a tenth of what building and compiling the equivalent annotated ORM queries does,
# and every table it reads is read once: on PostgreSQL each extra relation scanned costs more
# than the index probe itself.

@dataclass(frozen=True)
class DownloadCheck:
    """What a link check needs to know about the grant and the file, read in one query."""

    grant_id: int
    grant_generation: int
    grant_revoked_at: datetime.datetime | None
    grant_expires_at: datetime.datetime
    release_slug: str
    latest_licence_number: int | None
    latest_licence_accepted: bool
    file_id: int | None
    file_path: str
    file_size: int | None
    file_storage_key: str
    file_integrity: str
    file_release_id: int | None
    grant_release_id: int
    variant_location: str
    user_is_active: bool
    link_counted: bool
    counted_links: int
    oldest_counted_at: datetime.datetime | None


DOWNLOAD_CHECK_SQL = """
SELECT g.id, g.generation, g.revoked_at, g.expires_at, r.slug, lv.number,
       EXISTS (SELECT 1 FROM access_licenceacceptance a
                WHERE a.user_id = g.user_id AND a.licence_version_id = lv.id),
       f.id, f.path, f.size, f.storage_key, f.integrity, v.release_id, g.release_id, v.location,
       u.is_active, counted.this_link, counted.downloads, counted.oldest
  FROM access_grant g
  JOIN access_user u ON u.id = g.user_id
  JOIN artifacts_release r ON r.id = g.release_id
  LEFT JOIN access_licenceversion lv ON lv.licence_id = r.licence_id AND lv.number =
       (SELECT MAX(latest.number) FROM access_licenceversion latest
         WHERE latest.licence_id = r.licence_id AND latest.published_at IS NOT NULL)
  LEFT JOIN artifacts_artifactfile f ON f.id = %(file)s
  LEFT JOIN artifacts_variant v ON v.id = f.variant_id
 CROSS JOIN (SELECT MAX(CASE WHEN e.link_id = %(link)s AND (e.ip = %(ip)s OR (e.ip IS NULL AND %(ip)s IS NULL))
                                THEN 1 ELSE 0 END) AS this_link,
                    COUNT(DISTINCT e.link_id || '|' || COALESCE(CAST(e.ip AS TEXT), '')) AS downloads,
                    MIN(e.at) AS oldest
               FROM artifacts_downloadevent e
              WHERE e.user_id = %(user)s AND e.file_id = %(file)s AND e.counts_as_download = %(yes)s
                AND e.at >= %(since)s) counted
 WHERE g.id = %(grant)s AND g.user_id = %(user)s
"""


def download_check(*, grant_id: int, user_id: int, file_id: int, link_id: str, ip: str | None) -> DownloadCheck | None:
    """The grant (None unless it is this user's), whether the user is still active, its licence
    state, the file, and the user's counted downloads of the file in the limit window.

    A download is one (link, client address) pair: ``link_counted`` says whether this link was
    already counted from this address, ``counted_links`` how many pairs were counted.

    The licence rule is ``access.selectors.licence_acceptance_required``'s: the highest published
    version of the release's licence must have been accepted.
    """
    since = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
    params = {"grant": grant_id, "user": user_id, "file": file_id, "link": link_id, "since": since, "yes": True,
              "ip": connection.ops.adapt_ipaddressfield_value(ip)}
    with connection.cursor() as cursor:
        cursor.execute(DOWNLOAD_CHECK_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (grant_id, generation, revoked_at, expires_at, slug, latest_number, accepted, file_id, path, size, key,
     integrity, file_release_id, grant_release_id, location, user_is_active, link_counted, counted, oldest) = row
    return DownloadCheck(
        grant_id=grant_id, grant_generation=generation, grant_revoked_at=_aware(revoked_at),
        grant_expires_at=_aware(expires_at), release_slug=slug, latest_licence_number=latest_number,
        latest_licence_accepted=bool(accepted), file_id=file_id, file_path=path or "", file_size=size,
        file_storage_key=key or "", file_integrity=integrity or "", file_release_id=file_release_id,
        grant_release_id=grant_release_id, variant_location=location or "", user_is_active=bool(user_is_active),
        link_counted=bool(link_counted),
        counted_links=counted or 0, oldest_counted_at=_aware(oldest),
    )


def _aware(value):
    """SQLite hands back naive UTC datetimes (or strings) from raw queries; PostgreSQL aware ones."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return timezone.make_aware(value, datetime.timezone.utc) if timezone.is_naive(value) else value
