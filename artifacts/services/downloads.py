"""Manifests of signed links, and the decision taken when a link is used."""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from access.models import User
from artifacts.links import LinkClaims, LinkExpired, LinkInvalid, link_token_read, link_tokens_make
from artifacts.models import ArtifactFile, DownloadEvent, Release, Variant
from access.selectors import grant_active_for, licence_acceptance_required
from artifacts.selectors import DownloadCheck, download_check, downloads_counted_since
from artifacts.storage import KeyOutsideRoot, Storage, StorageError, storage_for

logger = logging.getLogger(__name__)
RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")


class ManifestRefused(Exception):
    """No manifest for this user: the message says what to do."""

    def __init__(self, message: str, *, code: str, status: int = 403):
        super().__init__(message)
        self.code, self.status = code, status


def manifest_issue(*, user: User, release: Release, variant: Variant, base_url: str) -> dict:
    """Fresh signed links for every verified file of a variant (self-service, any time)."""
    grant = grant_active_for(user=user, release=release)
    if grant is None:
        raise ManifestRefused(
            f"You have no active access to {release.name}. Apply for it, or renew it if it expired.",
            code="no_active_grant",
        )
    blocker = licence_blocker(user=user, release=release)
    if blocker:
        raise ManifestRefused(blocker, code="licence_acceptance_required")
    now = timezone.now()
    expires_at = min(now + datetime.timedelta(seconds=settings.DOWNLOAD_LINK_TTL_SECONDS), grant.expires_at)
    files = list(variant.files.order_by("path").values_list("pk", "path", "size", "sha256", "md5", "integrity"))
    downloadable = [row for row in files if row[5] == ArtifactFile.Integrity.OK]
    counted = downloads_counted_since(user_id=user.pk, variant_id=variant.pk)
    tokens = link_tokens_make(user_id=user.pk, grant_id=grant.pk, generation=grant.generation,
                              file_ids=[row[0] for row in downloadable])
    link_prefix = base_url + reverse("artifacts:download", args=["TOKEN"]).removesuffix("TOKEN")
    limit = settings.DOWNLOAD_LIMIT_PER_FILE
    entries = [
        {"path": path, "size": size, "sha256": sha256, "md5": md5, "url": link_prefix + token,
         "downloads_remaining": max(limit - counted.get(pk, 0), 0)}
        for (pk, path, size, sha256, md5, _), token in zip(downloadable, tokens)
    ]
    integrity_labels = dict(ArtifactFile.Integrity.choices)
    withheld = [{"path": row[1], "reason": integrity_labels[row[5]]} for row in files if row[5] != ArtifactFile.Integrity.OK]
    return {
        "release": release.slug,
        "variant": variant.name,
        "expires_at": expires_at.isoformat(),
        "grant_expires_at": grant.expires_at.isoformat(),
        "files": entries,
        "withheld": withheld,
    }


def licence_blocker(*, user: User, release: Release) -> str:
    """Why the user must (re)accept the release's licence first, or '' when nothing blocks."""
    version = licence_acceptance_required(user=user, release=release)
    if version is None:
        return ""
    page = settings.SITE_URL + reverse("access:licence_accept", args=[release.slug])
    return f"Accept version {version.number} of the {version.licence.title} before downloading: {page}"


@dataclass
class Decision:
    """What to answer to a use of ``/dl/<token>``."""

    status: int
    code: str = ""
    message: str = ""
    redirect_url: str = ""
    retry_after: int | None = None
    file: ArtifactFile | None = None
    storage: Storage | None = None
    byte_range: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as inclusive (start, end); None for no/unsupported header.

    Raises ValueError when the range cannot be satisfied.
    """
    match = RANGE_PATTERN.match(header.strip()) if header else None
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ValueError("range outside the file")
    return start, end


EVENT_INSERT_SQL = """
INSERT INTO artifacts_downloadevent
       (user_id, grant_id, file_id, link_id, counts_as_download, at, ip, user_agent, range_header, outcome)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def _record(event: DownloadEvent) -> None:
    """Store the event with one fixed statement: on /dl/ the ORM's insert machinery costs more
    than the insert itself."""
    event.at = timezone.now()
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(EVENT_INSERT_SQL, [
            event.user_id, event.grant_id, event.file_id, event.link_id, event.counts_as_download,
            ops.adapt_datetimefield_value(event.at), ops.adapt_ipaddressfield_value(event.ip),
            event.user_agent, event.range_header, event.outcome,
        ])


def _refuse(event: DownloadEvent, status: int, code: str, message: str, **extra) -> Decision:
    event.outcome = code
    _record(event)
    return Decision(status=status, code=code, message=message, **extra)


def download_authorize(*, token: str, range_header: str, ip: str | None, user_agent: str) -> Decision:
    """Check a link, count the download, and say how to serve it; every use is recorded.

    No row lock: two simultaneous first uses of different links may both pass at the limit's edge,
    which costs less than serialising every download of a grant.
    """
    event = DownloadEvent(ip=ip, user_agent=user_agent[:500], range_header=range_header[:100])
    O = DownloadEvent.Outcome
    try:
        claims = link_token_read(token, max_age=settings.DOWNLOAD_LINK_TTL_SECONDS)
    except LinkExpired:
        return _refuse(event, 410, O.EXPIRED,
                       "This download link has expired. Get fresh links from My access or the manifest API: "
                       "they can be re-issued at any time while your access is active.")
    except LinkInvalid:
        return _refuse(event, 403, O.INVALID,
                       "This download link is not valid: it was altered or cut short (e-mail link protection "
                       "does this). Copy links from My access or use the download clients.")
    check = download_check(grant_id=claims.grant_id, user_id=claims.user_id, file_id=claims.file_id,
                           link_id=claims.link_id, ip=ip)
    return download_decide(event=event, claims=claims, check=check, range_header=range_header)


def download_decide(*, event: DownloadEvent, claims: LinkClaims, check: DownloadCheck | None,
                    range_header: str) -> Decision:
    """The download rule, for a link's ``claims`` and what ``download_check`` read for them: refuse
    saying why, or count the download and say how to serve it. The event is recorded either way."""
    O = DownloadEvent.Outcome
    if check is None or check.file_id is None or check.file_release_id != check.grant_release_id:
        return _refuse(event, 403, O.INVALID, "This download link does not match any file you have access to.")
    event.user_id, event.grant_id, event.file_id, event.link_id = (
        claims.user_id, check.grant_id, check.file_id, claims.link_id)
    if check.grant_revoked_at is not None or not check.user_is_active:
        return _refuse(event, 403, O.REVOKED,
                       "Your access to this release was revoked, so its links no longer work. "
                       "My access shows the reason.")
    if check.grant_expires_at <= timezone.now():
        return _refuse(event, 403, O.REVOKED, "Your access to this release has expired. Renew it from My access.")
    if claims.generation != check.grant_generation:
        return _refuse(event, 410, O.EXPIRED,
                       "This link was issued before your access was renewed. Get fresh links from My access.")
    if check.latest_licence_number is not None and not check.latest_licence_accepted:
        page = settings.SITE_URL + reverse("access:licence_accept", args=[check.release_slug])
        return _refuse(event, 403, O.LICENCE_REQUIRED,
                       f"Accept version {check.latest_licence_number} of the licence before downloading: {page}")
    if check.file_integrity != ArtifactFile.Integrity.OK:
        label = ArtifactFile.Integrity(check.file_integrity).label
        return _refuse(event, 409, O.WITHHELD,
                       f"{check.file_path} is withheld: {label}. It will be available again "
                       "once staff have repaired it; the release page shows the notice.")
    try:
        byte_range = parse_range(range_header, check.file_size or 0)
    except ValueError:
        return _refuse(event, 416, O.INVALID, "The requested byte range is outside the file.",
                       extra={"size": check.file_size})
    limit_refusal = _apply_limit(event, check)
    if limit_refusal:
        return limit_refusal
    try:
        storage, _ = storage_for(check.variant_location)
        url = storage.presigned_url(check.file_storage_key, expires_in=settings.DOWNLOAD_PRESIGN_SECONDS,
                                    download_name=check.file_path.rsplit("/", 1)[-1])
    except KeyOutsideRoot:
        logger.error("Refused to serve %s: its storage key escapes the storage root", check.file_path)
        event.counts_as_download = False
        return _refuse(event, 409, O.WITHHELD,
                       f"{check.file_path} is withheld: it is not stored where it should be. Staff have been "
                       "told; your download was not counted.")
    except StorageError:
        logger.exception("Storage failed for %s", check.file_path)
        event.counts_as_download = False
        return _refuse(event, 503, O.STORAGE_ERROR,
                       "The storage service is not answering. Your download was not counted; try again shortly.",
                       retry_after=30)
    event.outcome = O.REDIRECTED if url else O.STREAMED
    _record(event)
    if url:
        return Decision(status=302, redirect_url=url)
    return Decision(status=206 if byte_range else 200, file=ArtifactFile.objects.get(pk=check.file_id),
                    storage=storage, byte_range=byte_range)


def _apply_limit(event: DownloadEvent, check: DownloadCheck) -> Decision | None:
    """Count a new download against the limit: a link counts at its first use from an address,
    whatever its Range; later uses of it from that address (resumes, retries, parallel segments)
    are that same download, and the same link from another address is another download."""
    if check.link_counted:
        return None
    if check.counted_links >= settings.DOWNLOAD_LIMIT_PER_FILE:
        window_start = timezone.now() - datetime.timedelta(seconds=settings.DOWNLOAD_LIMIT_WINDOW_SECONDS)
        retry_after = max(int((check.oldest_counted_at - window_start).total_seconds()) + 1, 1)
        return _refuse(
            event, 429, DownloadEvent.Outcome.OVER_LIMIT,
            f"You have downloaded this file {settings.DOWNLOAD_LIMIT_PER_FILE} times in the last "
            f"{settings.DOWNLOAD_LIMIT_WINDOW_SECONDS // 3600} hours. Resuming a partial download with the same link "
            f"is always allowed; a new download is possible again in {retry_after // 60 + 1} minutes.",
            retry_after=retry_after,
        )
    event.counts_as_download = True
    return None
