"""Reads of the playground, each scoped to who is asking."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from access.models import Grant, User
from access.selectors import grants_active_of, licence_acceptance_required
from artifacts.models import Release
from inference_worker import streams
from inference_worker.models import OutputFlag, PlaygroundLimit, PromptJob

S = PromptJob.Status


# -- jobs -------------------------------------------------------------------------------------------

def jobs_of(*, user: User, search: str = "") -> QuerySet[PromptJob]:
    jobs = PromptJob.objects.filter(user=user).select_related("release").order_by("-queued_at")
    if search.strip():
        jobs = jobs.filter(Q(prompts__icontains=search.strip()) | Q(outputs__icontains=search.strip()))
    return jobs


def job_of(*, user: User, pk) -> PromptJob:
    """The user's own job; anybody else's is PromptJob.DoesNotExist (a 404)."""
    return PromptJob.objects.select_related("release").get(user=user, pk=pk)


def queue_position(*, job: PromptJob) -> int | None:
    """1 for the next job to start on its release; None once it has started."""
    if job.status != S.QUEUED:
        return None
    ahead = PromptJob.objects.filter(release_id=job.release_id, status=S.QUEUED, queued_at__lt=job.queued_at).count()
    return ahead + 1


# For job_submit: the playground's hottest write. One hand-written query (as the download links'
# ``artifacts.selectors.download_check``) costs a fraction of the four ORM queries it replaces.

@dataclass(frozen=True)
class SubmissionCheck:
    """What a new job of a user on a release is checked against, read in one query."""

    licence_version_id: int | None  # the release's licence version in force
    licence_accepted: bool
    limits: Limits
    open_jobs: int  # the user's jobs queued or running
    tokens_today: int  # charged to the user's quota today (as ``tokens_used_today``)
    queued_on_release: int  # every user's jobs waiting on the release


SUBMISSION_CHECK_SQL = """
SELECT lv.id,
       EXISTS (SELECT 1 FROM access_licenceacceptance a WHERE a.user_id = u.id AND a.licence_version_id = lv.id),
       pl.max_prompt_tokens, pl.max_new_tokens, pl.max_sequences, pl.max_concurrent, pl.daily_tokens,
       (SELECT COUNT(*) FROM inference_worker_promptjob j
         WHERE j.user_id = u.id AND j.status IN (%(queued)s, %(running)s)),
       (SELECT COALESCE(SUM(j.tokens_charged), 0) FROM inference_worker_promptjob j
         WHERE j.user_id = u.id AND j.queued_at >= %(day)s),
       (SELECT COUNT(*) FROM inference_worker_promptjob j WHERE j.release_id = r.id AND j.status = %(queued)s)
  FROM access_user u
  JOIN artifacts_release r ON r.id = %(release)s
  LEFT JOIN access_licenceversion lv ON lv.licence_id = r.licence_id AND lv.number =
       (SELECT MAX(latest.number) FROM access_licenceversion latest
         WHERE latest.licence_id = r.licence_id AND latest.published_at IS NOT NULL)
  LEFT JOIN inference_worker_playgroundlimit pl ON pl.user_id = u.id
 WHERE u.id = %(user)s
"""


def submission_check(*, user: User, release: Release, now: datetime) -> SubmissionCheck:
    """The licence state, the user's limits and usage, and the release's queue, locking the user's
    row until the transaction ends (one submission per user at a time).

    The licence rule is ``access.selectors.licence_status``'s: the highest published version of the
    release's licence must have been accepted. The limits are ``limits_for``'s.
    """
    sql = SUBMISSION_CHECK_SQL + (" FOR UPDATE OF u" if connection.features.has_select_for_update_of else "")
    params = {"user": user.pk, "release": release.pk, "day": day_start(now), "queued": S.QUEUED.value,
              "running": S.RUNNING.value}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (version_id, accepted, *overrides, open_jobs, tokens_today, queued) = cursor.fetchone()
    limits = _limits_with(dict(zip(Limits.FIELDS, overrides)))
    return SubmissionCheck(version_id, bool(accepted), limits, open_jobs, tokens_today, queued)


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def tokens_used_today(*, user: User, now: datetime | None = None) -> int:
    """Tokens charged to the daily quota since midnight UTC (reservations of unfinished jobs included)."""
    start = day_start(now or timezone.now())
    return PromptJob.objects.filter(user=user, queued_at__gte=start).aggregate(total=Sum("tokens_charged"))["total"] or 0


def jobs_open_for(*, user: User, release: Release | None = None) -> QuerySet[PromptJob]:
    jobs = PromptJob.objects.filter(user=user, status__in=PromptJob.OPEN_STATUSES)
    return jobs.filter(release=release) if release is not None else jobs


def jobs_running() -> QuerySet[PromptJob]:
    return PromptJob.objects.filter(status=S.RUNNING)


def jobs_queued_before(*, cutoff: datetime) -> list[PromptJob]:
    """Jobs still waiting for a worker since before ``cutoff`` (a retried job waits from its first queueing)."""
    return list(PromptJob.objects.filter(status=S.QUEUED, queued_at__lt=cutoff))


# -- limits -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_new_tokens: int
    max_sequences: int
    max_concurrent: int
    daily_tokens: int

    FIELDS = ("max_prompt_tokens", "max_new_tokens", "max_sequences", "max_concurrent", "daily_tokens")


def default_limits() -> Limits:
    return Limits(
        max_prompt_tokens=settings.PLAYGROUND_MAX_PROMPT_TOKENS,
        max_new_tokens=settings.PLAYGROUND_MAX_NEW_TOKENS,
        max_sequences=settings.PLAYGROUND_MAX_SEQUENCES,
        max_concurrent=settings.PLAYGROUND_MAX_CONCURRENT,
        daily_tokens=settings.PLAYGROUND_DAILY_TOKENS,
    )


def limits_for(*, user: User) -> Limits:
    """The site defaults, with this user's overrides set by staff."""
    override = PlaygroundLimit.objects.filter(user=user).first()
    return _limits_with({name: getattr(override, name) for name in Limits.FIELDS} if override else {})


def _limits_with(overrides: dict[str, int | None]) -> Limits:
    """The defaults, but where staff set a value (None: not set)."""
    defaults = default_limits()
    return Limits(**{name: getattr(defaults, name) if overrides.get(name) is None else overrides[name]
                     for name in Limits.FIELDS})


# -- releases and workers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PlaygroundRelease:
    release: Release
    grant: Grant
    licence_to_accept: object | None  # the LicenceVersion still to accept, or None


def playground_releases_of(*, user: User) -> list[PlaygroundRelease]:
    """The releases the user holds an active grant for, and whether a licence must be accepted first."""
    grants = (grants_active_of(user=user).select_related("release__licence").order_by("release__slug", "-expires_at"))
    seen, rows = set(), []
    for grant in grants:
        if grant.release_id in seen:
            continue
        seen.add(grant.release_id)
        rows.append(PlaygroundRelease(grant.release, grant, licence_acceptance_required(user=user, release=grant.release)))
    return rows


def live_workers(*, release_slug: str | None = None) -> list[dict]:
    """Workers whose last heartbeat is fresh, as they reported themselves (all releases when None)."""
    client = streams.redis_client()
    if release_slug is None:
        index_keys = list(client.scan_iter(match=streams.workers_index_key("*"), count=100))
    else:
        index_keys = [streams.workers_index_key(release_slug)]
    workers = []
    for index_key in index_keys:
        ids = sorted(client.smembers(index_key))
        if not ids:
            continue
        for worker_id, raw in zip(ids, client.mget([streams.worker_key(i) for i in ids])):
            if raw is None:
                client.srem(index_key, worker_id)  # its heartbeat expired: it is gone
            else:
                workers.append(json.loads(raw))
    return sorted(workers, key=lambda w: (w.get("release", ""), w.get("worker", "")))


def live_worker_ids() -> set[str]:
    return {w["worker"] for w in live_workers()}


# -- moderation -------------------------------------------------------------------------------------

def flags_for_moderation(*, status: str = OutputFlag.Status.OPEN) -> QuerySet[OutputFlag]:
    flags = OutputFlag.objects.select_related("job__release", "job__user", "job__grant", "flagged_by")
    return flags.filter(status=status) if status else flags


def flag_counts() -> list[dict]:
    """Open and total flags by release and category, for the moderation queue's summary."""
    return list(OutputFlag.objects.values("job__release__slug", "category")
                .annotate(total=Count("id"), open=Count("id", filter=Q(status=OutputFlag.Status.OPEN)))
                .order_by("job__release__slug", "category"))


def flag_for_moderation(*, pk) -> OutputFlag:
    return flags_for_moderation(status="").get(pk=pk)


def jobs_with_expired_texts(*, now: datetime | None = None) -> QuerySet[PromptJob]:
    """Ended jobs older than the retention period whose texts are still kept (an open flag keeps them)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PLAYGROUND_RETENTION_DAYS)
    return (PromptJob.objects.filter(texts_deleted_at__isnull=True, queued_at__lt=cutoff)
            .exclude(status__in=PromptJob.OPEN_STATUSES)
            .exclude(flags__status=OutputFlag.Status.OPEN))
