"""Reads of the artifacts app, always scoped to what the requesting user may see."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from access.selectors import grant_active_for  # noqa: F401  (re-exported for the release pages)
from artifacts.models import ArtifactFile, DownloadEvent, Release, Variant
from portal.prepared import PreparedQuery, fetch_one


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
        .order_by()  # no ordering column in the DISTINCT: one per (file, link, address)
        .distinct()
    )
    counts: dict[int, int] = {}
    for file_id, _, _ in pairs:
        counts[file_id] = counts.get(file_id, 0) + 1
    return counts


# For /dl/ and the Hub's resolve: the hottest paths of the portal. One hand-written query, prepared
# once per connection (``portal.prepared``), costs a fraction of building, compiling and planning the
# equivalent annotated ORM queries, and every table it reads is read once: on PostgreSQL each extra
# relation scanned costs more than the index probe itself.

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
    file_sha256: str
    file_release_id: int | None
    grant_release_id: int
    variant_location: str
    variant_commit: str
    user_id: int
    user_is_active: bool
    link_counted: bool
    counted_links: int
    oldest_counted_at: datetime.datetime | None


# Both checks read the same facts under the same aliases: the grant g, its user u and release r, the
# licence version in force lv, the file f and its variant v, and the counted downloads of the file.
# They differ in how they find those rows: by the ids a link's claims carry (/dl/), or by the names a
# Hub request carries (the API token, release, revision and path), each row looked up once.
_CHECK_COLUMNS = """g.id, g.generation, g.revoked_at, g.expires_at, r.slug, lv.number,
       EXISTS (SELECT 1 FROM access_licenceacceptance a
                WHERE a.user_id = g.user_id AND a.licence_version_id = lv.id),
       f.id, f.path, f.size, f.storage_key, f.integrity, f.sha256, v.release_id, g.release_id, v.location,
       v.content_commit, u.id, u.is_active, {counted}"""

_LICENCE_IN_FORCE = """LEFT JOIN access_licenceversion lv ON lv.licence_id = r.licence_id AND lv.number =
       (SELECT MAX(latest.number) FROM access_licenceversion latest
         WHERE latest.licence_id = r.licence_id AND latest.published_at IS NOT NULL)"""

# The counted downloads of the file by the user in the limit window: whether this link was counted
# from this address, how many (link, address) pairs were, and the oldest. They are found through the
# partial index of counted downloads (user, file, at) whatever the statistics say: ``e.counts_as_download``
# is in the text, not a parameter, which a prepared statement's generic plan could not match to the
# index's condition.
_COUNTED_VALUES = ("""MAX(CASE WHEN e.link_id = %(link)s AND (e.ip = %(ip)s OR (e.ip IS NULL AND %(ip)s IS NULL))
                         THEN 1 ELSE 0 END)""",
                   "COUNT(DISTINCT e.link_id || '|' || COALESCE(CAST(e.ip AS TEXT), ''))",
                   "MIN(e.at)")
_COUNTED_ROWS = """FROM artifacts_downloadevent e
              WHERE e.user_id = {user} AND e.file_id = {file} AND e.counts_as_download AND e.at >= %(since)s"""
_COUNTED_TABLE_COLUMNS = "counted.this_link, counted.downloads, counted.oldest"
_COUNTING = (("link", "text"), ("since", "timestamptz"), ("ip", "inet"))


def _counted_table(*, user: str, file: str) -> str:
    this_link, downloads, oldest = _COUNTED_VALUES
    return (f"(SELECT {this_link} AS this_link, {downloads} AS downloads, {oldest} AS oldest\n"
            f"               {_COUNTED_ROWS.format(user=user, file=file)}) counted")


# The link's keys are a one-row table; the counted downloads take them as scalar subqueries, computed
# first and then looked up in the index.
DOWNLOAD_CHECK = PreparedQuery(
    sql=f"""
WITH keys AS (SELECT %(grant)s AS grant_id, %(user)s AS user_id, %(file)s AS file_id)
SELECT {_CHECK_COLUMNS.format(counted=_COUNTED_TABLE_COLUMNS)}
  FROM keys k
  JOIN access_grant g ON g.id = k.grant_id AND g.user_id = k.user_id
  JOIN access_user u ON u.id = g.user_id
  JOIN artifacts_release r ON r.id = g.release_id
  {_LICENCE_IN_FORCE}
  LEFT JOIN artifacts_artifactfile f ON f.id = k.file_id
  LEFT JOIN artifacts_variant v ON v.id = f.variant_id
 CROSS JOIN {_counted_table(user="(SELECT user_id FROM keys)", file="(SELECT file_id FROM keys)")}
""",
    parameters=(("grant", "bigint"), ("user", "bigint"), ("file", "bigint"), *_COUNTING),
)

# The Hub's rows: the token's holder, their grant for the release (an unrevoked one first; the check
# judges it), and the file at ``path`` in the revision: the variant of that name or commit id, or for
# ``main`` the first variant by name in Hugging Face's layout (``artifacts.hub.hub_revision``).
_HOLDERS_GRANT = """FROM access_grant candidate WHERE candidate.user_id = t.user_id AND candidate.release_id = r.id
                 ORDER BY CASE WHEN candidate.revoked_at IS NULL THEN 0 ELSE 1 END, candidate.expires_at DESC LIMIT 1"""
_REVISIONS_VARIANT = """FROM artifacts_variant named
                      WHERE named.release_id = r.id
                        AND CASE WHEN %(revision)s = %(main)s
                                 THEN EXISTS (SELECT 1 FROM artifacts_artifactfile c
                                               WHERE c.variant_id = named.id AND c.path = %(config)s)
                                 ELSE named.name = %(revision)s OR named.content_commit = %(revision)s END
                      ORDER BY named.name LIMIT 1"""
_HUB_TOKEN_COLUMNS = "t.id, t.revoked_at, t.expires_at, t.last_used_at, CAST(t.scopes AS TEXT)"  # JSON text: the cheaper load
_HUB_TOKEN_AND_RELEASE = """FROM access_apitoken t
  JOIN access_user u ON u.id = t.user_id
  JOIN artifacts_release r ON r.slug = %(slug)s AND r.is_listed"""

HUB_DOWNLOAD_CHECK = PreparedQuery(
    # Each row is found once, the grant, variant and counted downloads as LATERAL subqueries of the
    # rows found before them.
    sql=f"""
SELECT {_CHECK_COLUMNS.format(counted=_COUNTED_TABLE_COLUMNS)}, {_HUB_TOKEN_COLUMNS}
  {_HUB_TOKEN_AND_RELEASE}
  JOIN LATERAL (SELECT candidate.* {_HOLDERS_GRANT}) g ON TRUE
  {_LICENCE_IN_FORCE}
  LEFT JOIN LATERAL (SELECT named.id, named.release_id, named.location, named.content_commit
                       {_REVISIONS_VARIANT}) v ON TRUE
  LEFT JOIN artifacts_artifactfile f ON f.variant_id = v.id AND f.path = %(path)s
 CROSS JOIN LATERAL {_counted_table(user="t.user_id", file="f.id")}
 WHERE t.token_hash = %(token_hash)s
""",
    # SQLite: the grant and variant by their ids, found by correlated subqueries, and each counted value
    # as a subquery of its own.
    sqlite_sql=f"""
SELECT {_CHECK_COLUMNS.format(counted=", ".join(
           f"(SELECT {value} {_COUNTED_ROWS.format(user='t.user_id', file='f.id')})" for value in _COUNTED_VALUES))},
       {_HUB_TOKEN_COLUMNS}
  {_HUB_TOKEN_AND_RELEASE}
  JOIN access_grant g ON g.id = (SELECT candidate.id {_HOLDERS_GRANT})
  {_LICENCE_IN_FORCE}
  LEFT JOIN artifacts_variant v ON v.id = (SELECT named.id {_REVISIONS_VARIANT})
  LEFT JOIN artifacts_artifactfile f ON f.variant_id = v.id AND f.path = %(path)s
 WHERE t.token_hash = %(token_hash)s
""",
    parameters=(("token_hash", "text"), ("slug", "text"), ("revision", "text"), ("path", "text"), ("main", "text"),
                ("config", "text"), *_COUNTING),
)


@dataclass
class HubToken:
    """The API token a Hub request was made with, as the Hub's download check read it: the fields of
    ``ApiToken`` that ``api_token_check`` and ``api_token_has_scope`` read, under the same names."""

    pk: int
    revoked_at: datetime.datetime | None
    expires_at: datetime.datetime
    last_used_at: datetime.datetime | None
    scopes: list[str]


def _since() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)


def download_check(*, grant_id: int, user_id: int, file_id: int, link_id: str, ip: str | None) -> DownloadCheck | None:
    """The grant (None unless it is this user's), whether the user is still active, its licence
    state, the file, and the user's counted downloads of the file in the limit window.

    A download is one (link, client address) pair: ``link_counted`` says whether this link was
    already counted from this address, ``counted_links`` how many pairs were counted.

    The licence rule is ``access.selectors.licence_acceptance_required``'s: the highest published
    version of the release's licence must have been accepted.
    """
    params = {"grant": grant_id, "user": user_id, "file": file_id, "link": link_id, "since": _since(),
              "ip": connection.ops.adapt_ipaddressfield_value(ip)}
    row = fetch_one(DOWNLOAD_CHECK, params)
    return None if row is None else _download_check_from(row)


def hub_download_check(*, token_hash: str, slug: str, revision: str, path: str, link_id: str,
                       ip: str | None) -> tuple[HubToken, DownloadCheck] | None:
    """``download_check`` for the Hub's resolve, keyed by what the request names, in the same one
    query; None when the token, the release, a grant or the file is not there."""
    params = {"token_hash": token_hash, "slug": slug, "revision": revision, "path": path, "main": "main",
              "config": "config.json", "link": link_id, "since": _since(),
              "ip": connection.ops.adapt_ipaddressfield_value(ip)}
    row = fetch_one(HUB_DOWNLOAD_CHECK, params)
    if row is None:
        return None
    check, (token_id, revoked_at, expires_at, last_used_at, scopes) = _download_check_from(row[:-5]), row[-5:]
    token = HubToken(pk=token_id, revoked_at=_aware(revoked_at), expires_at=_aware(expires_at),
                     last_used_at=_aware(last_used_at), scopes=json.loads(scopes) if isinstance(scopes, str) else scopes)
    return token, check


def _download_check_from(row) -> DownloadCheck:
    (grant_id, generation, revoked_at, expires_at, slug, latest_number, accepted, file_id, path, size, key,
     integrity, sha256, file_release_id, grant_release_id, location, commit, user_id, user_is_active, link_counted,
     counted, oldest) = row
    return DownloadCheck(
        grant_id=grant_id, grant_generation=generation, grant_revoked_at=_aware(revoked_at),
        grant_expires_at=_aware(expires_at), release_slug=slug, latest_licence_number=latest_number,
        latest_licence_accepted=bool(accepted), file_id=file_id, file_path=path or "", file_size=size,
        file_storage_key=key or "", file_integrity=integrity or "", file_sha256=sha256 or "",
        file_release_id=file_release_id, grant_release_id=grant_release_id, variant_location=location or "",
        variant_commit=commit or "", user_id=user_id, user_is_active=bool(user_is_active),
        link_counted=bool(link_counted), counted_links=counted or 0, oldest_counted_at=_aware(oldest),
    )


def _aware(value):
    """SQLite hands back naive UTC datetimes (or strings) from raw queries; PostgreSQL aware ones."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return timezone.make_aware(value, datetime.timezone.utc) if timezone.is_naive(value) else value
