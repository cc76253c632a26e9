"""Writes of the playground: jobs from submission to their end, limits, flags and retention.

Jobs go to the GPU workers by task name (``gpu.generate`` on the queue ``gpu.<release>``), with
the job id and attempt as plain JSON; this module never imports torch.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import sql
from django.urls import reverse
from django.utils import timezone

from access.audit import audit_record
from access.models import Grant, LicenceVersion, User
from access.roles import is_reviewer
from access.services.applications import too_long_message
from access.selectors import grants_active_of, licence_status
from artifacts.models import Release
from inference_worker import selectors, streams
from inference_worker.completions import CompletionError, CompletionRequest
from inference_worker.models import OutputFlag, PlaygroundLimit, PromptJob
from inference_worker.release_model import ReleaseModelUnavailable, release_model_info

logger = logging.getLogger(__name__)
S = PromptJob.Status
GENERATE_TASK = "gpu.generate"
#: a job with no token streamed yet is re-run once when its worker dies or drains
MAX_ATTEMPTS = 2


def gpu_queue(release_slug: str) -> str:
    return f"gpu.{release_slug}"


# -- submission -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlaygroundAccess:
    release: Release
    grant: Grant
    licence_version: LicenceVersion | None  # the version in force, which the user has accepted


def playground_access_for(*, user: User, model: str) -> PlaygroundAccess:
    """The release named ``model``, the user's grant for it and the licence version they accepted,
    or the error that says what to do."""
    grant = _grant_for(user=user, model=model)
    licence = licence_status(user=user, release=grant.release)
    if licence.to_accept is not None:
        raise _licence_to_accept(model)
    return PlaygroundAccess(grant.release, grant, licence.current)


def _grant_for(*, user: User, model: str) -> Grant:
    """The user's active grant for the release named ``model`` (its release loaded), or a 404/403."""
    grant = (grants_active_of(user=user).filter(release__slug=model).select_related("release")
             .order_by("-expires_at").first())
    if grant is None:
        release = Release.objects.filter(slug=model).first()
        if release is None or not release.is_listed:
            raise CompletionError.model_not_found(model)
        raise CompletionError.forbidden(f"You have no active access to '{model}'. Apply for it at "
                                        f"{settings.SITE_URL}{reverse('access:apply')}.", code="no_grant")
    return grant


def _licence_to_accept(model: str) -> CompletionError:
    url = settings.SITE_URL + reverse("access:licence_accept", args=[model])
    return CompletionError.forbidden(f"A new version of the licence for '{model}' must be accepted first, at {url}.",
                                     code="licence_required")


def model_info_for(*, release: Release):
    """The release's tokenizer and model facts, or a 503 saying why they cannot be read."""
    try:
        return release_model_info(release=release)
    except ReleaseModelUnavailable as error:
        raise CompletionError(503, f"The model '{release.slug}' cannot be served: {error}", type="server_error",
                              code="model_unavailable") from error


def prompt_token_ids(*, release: Release, prompts: list) -> list[list[int]]:
    """Token ids of each prompt: texts tokenized with only ``</s>`` prepended, ids checked against the vocabulary."""
    info = model_info_for(release=release)
    ids = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids.append(info.tokenizer.encode(prompt, add_bos=True))
        else:
            bad = next((i for i in prompt if not 0 <= i < info.vocab_size), None)
            if bad is not None:
                raise CompletionError.invalid(f"Token id {bad} is outside the vocabulary (0 to {info.vocab_size - 1}).",
                                              param="prompt")
            ids.append(list(prompt))
    return ids


def _check_size(*, request: CompletionRequest, ids: list[list[int]], limits: selectors.Limits,
                max_positions: int) -> int:
    """Refuse what can never run; the tokens the job reserves from the daily quota."""
    p = request.params
    longest = max(len(prompt) for prompt in ids)
    if longest > limits.max_prompt_tokens:
        raise CompletionError.invalid(
            f"The prompt has {longest} tokens; your limit is {limits.max_prompt_tokens}.", param="prompt")
    if p["max_tokens"] > limits.max_new_tokens:
        raise CompletionError.invalid(
            f"max_tokens is {p['max_tokens']}; your limit is {limits.max_new_tokens}.", param="max_tokens")
    if longest + p["max_tokens"] > max_positions:
        raise CompletionError(400, f"This model's context is {max_positions} tokens, but the prompt ({longest}) plus "
                              f"max_tokens ({p['max_tokens']}) needs {longest + p['max_tokens']}.",
                              param="max_tokens", code="context_length_exceeded")
    per_prompt = p["best_of"] or p["n"]
    sequences = len(ids) * per_prompt
    if sequences > limits.max_sequences:
        raise CompletionError.rate_limited(f"This request asks for {sequences} sequences (prompts x max(n, best_of)); "
                                           f"your limit is {limits.max_sequences} per request.", limit="sequences",
                                           retry_after=1)
    return sum(per_prompt * (len(prompt) + p["max_tokens"]) for prompt in ids)


def seconds_until_tomorrow(now: datetime) -> int:
    return int((selectors.day_start(now) + timedelta(days=1) - now).total_seconds()) + 1


@transaction.atomic
def job_submit(*, user: User, request: CompletionRequest, source: str) -> PromptJob:
    """Check access, limits and capacity, store the job with its seed, and queue it after commit.

    Raises ``CompletionError``: 403/404 for access, 400 for what can never run, 429 for a limit
    with ``Retry-After``, 503 when no worker serves the release.
    """
    grant = _grant_for(user=user, model=request.model)
    release = grant.release
    now = timezone.now()
    check = selectors.submission_check(user=user, release=release, now=now)  # locks the user's row
    if check.licence_version_id is not None and not check.licence_accepted:
        raise _licence_to_accept(request.model)
    if not any(not worker.get("draining") for worker in selectors.live_workers(release_slug=release.slug)):
        raise CompletionError.unavailable(f"No worker is serving '{release.slug}' right now; try again later.",
                                          retry_after=30)
    limits = check.limits
    info = model_info_for(release=release)
    ids = prompt_token_ids(release=release, prompts=request.prompts)  # the same (cached) model info
    reserved = _check_size(request=request, ids=ids, limits=limits, max_positions=info.max_positions)
    if check.open_jobs >= limits.max_concurrent:
        raise CompletionError.rate_limited(f"You already have {limits.max_concurrent} requests queued or running; "
                                           "wait for one to finish.", limit="concurrent_requests", retry_after=2)
    if check.tokens_today + reserved > limits.daily_tokens:
        raise CompletionError.rate_limited(f"This request may use up to {reserved} tokens and you have "
                                           f"{max(limits.daily_tokens - check.tokens_today, 0)} of your "
                                           f"{limits.daily_tokens} left today (prompt and completion tokens of every "
                                           "sequence).", limit="tokens", retry_after=seconds_until_tomorrow(now))
    if check.queued_on_release >= settings.PLAYGROUND_QUEUE_CAP:
        raise CompletionError.rate_limited(f"The queue for '{release.slug}' is full; try again in a few seconds.",
                                           limit="queue", retry_after=5)

    seed = request.params["seed"] if request.params["seed"] is not None else secrets.randbelow(2**31)
    job = PromptJob.objects.create(
        user=user, grant=grant, licence_version_id=check.licence_version_id, release=release, source=source,
        params={**request.params, "seed": seed}, seed=seed, prompts=request.prompts, prompt_ids=ids,
        client_user=request.user, prompt_tokens=sum(len(p) for p in ids), tokens_charged=reserved, queued_at=now,
    )
    transaction.on_commit(lambda: _enqueue(job))
    return job


def _enqueue(job: PromptJob) -> None:
    from portal.celery import app

    client = streams.redis_client()
    streams.append_event(job.id, "queued", {"attempt": job.attempt}, client=client)
    if job.source == PromptJob.Source.PAGE:
        client.set(streams.watch_key(job.id), "1", ex=settings.PLAYGROUND_PAGE_UNWATCHED_SECONDS)
    app.send_task(GENERATE_TASK, kwargs={"job_id": str(job.id), "attempt": job.attempt},
                  queue=gpu_queue(job.release.slug))


# -- cancellation -----------------------------------------------------------------------------------

@transaction.atomic
def job_cancel(*, job: PromptJob, reason: str = "cancelled") -> PromptJob:
    """Stop a job: a queued one ends now (its reservation refunded); a running one stops at its next
    token boundary, and its worker records what it generated."""
    job = PromptJob.objects.select_for_update().get(pk=job.pk)
    if job.status == S.QUEUED:
        job.status, job.finished_at, job.finish_reason, job.tokens_charged = S.CANCELLED, timezone.now(), "cancelled", 0
        job.error_code = reason if reason != "cancelled" else ""
        job.save(update_fields=["status", "finished_at", "finish_reason", "tokens_charged", "error_code"])
        transaction.on_commit(lambda: streams.append_event(job.id, streams.TERMINAL, _done_data(job)))
    elif job.status == S.RUNNING:
        if reason != "cancelled":
            job.error_code = reason  # why, kept when its worker records the outputs
            job.save(update_fields=["error_code"])
        transaction.on_commit(lambda: _signal_cancel(job.id))
    return job


def _signal_cancel(job_id) -> None:
    client = streams.redis_client()
    client.set(streams.cancel_key(job_id), "1", ex=24 * 3600)
    client.publish(streams.CANCEL_CHANNEL, str(job_id))


def jobs_cancel_for(*, user: User, release: Release | None = None, reason: str) -> int:
    """Cancel the user's queued and running jobs (on revocation, or a licence not yet accepted)."""
    jobs = list(selectors.jobs_open_for(user=user, release=release))
    for job in jobs:
        job_cancel(job=job, reason=reason)
    return len(jobs)


def jobs_cancel_for_licence(*, licence_version, reason: str = "licence_changed") -> int:
    """A new licence version: every open job on its releases stops until its user accepts it."""
    jobs = list(PromptJob.objects.filter(status__in=PromptJob.OPEN_STATUSES, release__licence=licence_version.licence)
                .exclude(licence_version=licence_version))
    for job in jobs:
        job_cancel(job=job, reason=reason)
    return len(jobs)


# -- the worker's side (called by gpu.generate in the worker process) --------------------------------

def _update_returning(queryset, **values) -> list:
    """``queryset.update(**values)`` as one ``UPDATE ... RETURNING`` statement (PostgreSQL, SQLite
    3.35+): the updated rows as stored, without a second query to read them back."""
    model = queryset.model
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(values)
    statement, params = query.get_compiler(queryset.db).as_sql()
    quote = connections[queryset.db].ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return list(model.objects.db_manager(queryset.db).raw(f"{statement} RETURNING {columns}", params))


def job_claim(*, job_id, attempt: int, worker: str) -> PromptJob | None:
    """Mark the job running on ``worker``; None when this delivery is stale (another attempt, or the job
    ended or was cancelled while queued) or its grant ended meanwhile. Revocation and new licence
    versions cancel queued jobs themselves; an expiry does not, so the claim checks the grant."""
    now = timezone.now()
    current = PromptJob.objects.filter(
        pk=job_id, attempt=attempt, status=S.QUEUED, grant__revoked_at__isnull=True, grant__expires_at__gt=now,
    )
    claimed = _update_returning(current, status=S.RUNNING, started_at=now, worker=worker)
    if claimed:
        return claimed[0]
    with transaction.atomic():
        job = PromptJob.objects.select_for_update().filter(pk=job_id, attempt=attempt, status=S.QUEUED).first()
        if job is not None:  # still waiting, so its grant ended: it will never run
            job.status, job.finished_at, job.tokens_charged, job.finish_reason = S.CANCELLED, now, 0, "cancelled"
            job.error_code = "access_ended"
            job.save(update_fields=["status", "finished_at", "tokens_charged", "finish_reason", "error_code"])
            transaction.on_commit(lambda: streams.append_event(job.id, streams.TERMINAL, _done_data(job)))
    return None


NUL_STAND_IN = "\ufffd"  # what a generated NUL character is stored as


def _storable(value):
    """``value`` with every NUL character in its strings (keys too) replaced by U+FFFD: a model can
    generate one (a byte-level token), PostgreSQL cannot store it in text or JSON, and the job must
    not fail for it. The stream has already carried the exact text."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_STAND_IN)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


@transaction.atomic
def job_complete(*, job_id, attempt: int, outputs: list[dict], completion_tokens: int, cancelled: bool,
                 first_token_at: datetime | None) -> PromptJob | None:
    """Record a job's outputs; the daily quota keeps only the tokens actually used."""
    job = PromptJob.objects.select_for_update().filter(pk=job_id, attempt=attempt, status=S.RUNNING).first()
    if job is None:
        return None
    sequences = job.params["best_of"] or job.params["n"]
    job.status = S.CANCELLED if cancelled else S.SUCCEEDED
    job.outputs, job.completion_tokens = _storable(outputs), completion_tokens
    job.tokens_charged = job.prompt_tokens * sequences + completion_tokens
    job.finish_reason = "cancelled" if cancelled else (outputs[0]["finish_reason"] if outputs else "")
    job.first_token_at, job.finished_at = first_token_at, timezone.now()
    job.save()
    return job


@transaction.atomic
def job_fail(*, job_id, code: str, message: str, attempt: int | None = None) -> PromptJob | None:
    """End an open job with an error; its stream gets an OpenAI-style error event and ``done``."""
    jobs = PromptJob.objects.select_for_update().filter(pk=job_id, status__in=PromptJob.OPEN_STATUSES)
    job = (jobs.filter(attempt=attempt) if attempt is not None else jobs).first()
    if job is None:
        return None
    job.status, job.error_code, job.error_message, job.finished_at = S.FAILED, code, message, timezone.now()
    job.finish_reason, job.tokens_charged = "error", 0  # a job that failed costs nothing
    job.save(update_fields=["status", "error_code", "error_message", "finished_at", "finish_reason",
                            "tokens_charged"])

    def announce() -> None:
        streams.append_event(job.id, "error", {"code": code, "message": message})
        streams.append_event(job.id, streams.TERMINAL, _done_data(job))

    transaction.on_commit(announce)
    return job


@transaction.atomic
def job_requeue(*, job_id, attempt: int, reason: str) -> PromptJob | None:
    """Hand a job that streamed nothing back to the queue as its next attempt (once); fail it after that."""
    job = PromptJob.objects.select_for_update().select_related("release").filter(
        pk=job_id, attempt=attempt, status__in=PromptJob.OPEN_STATUSES).first()
    if job is None:
        return None
    if job.attempt >= MAX_ATTEMPTS:
        return job_fail(job_id=job.pk, code="worker_lost", message=f"The job's worker was lost twice ({reason}).")
    job.status, job.attempt, job.worker, job.started_at = S.QUEUED, job.attempt + 1, "", None
    job.save(update_fields=["status", "attempt", "worker", "started_at"])
    logger.info("Requeued job %s as attempt %d: %s", job.pk, job.attempt, reason)
    transaction.on_commit(lambda: _enqueue(job))
    return job


def job_worker_lost(*, job: PromptJob, reason: str) -> PromptJob | None:
    """The job's worker died or left: re-run it if nothing reached a reader yet, else fail ``worker_lost``."""
    if streams.stream_has_tokens(job.id):
        return job_fail(job_id=job.pk, attempt=job.attempt, code="worker_lost",
                        message=f"The worker generating this job was lost ({reason}); run it again with the same seed.")
    return job_requeue(job_id=job.pk, attempt=job.attempt, reason=reason)


def jobs_reap(*, now: datetime | None = None) -> int:
    """Running jobs whose worker's heartbeat stopped: re-run or fail each; and queued jobs no worker
    took in ``PLAYGROUND_QUEUE_TIMEOUT_SECONDS``: fail them (a beat task, every few seconds)."""
    alive = selectors.live_worker_ids()
    lost = [job for job in selectors.jobs_running() if job.worker not in alive]
    for job in lost:
        job_worker_lost(job=job, reason=f"no heartbeat from {job.worker or 'its worker'}")
    stale = selectors.jobs_queued_before(cutoff=(now or timezone.now()) - timedelta(
        seconds=settings.PLAYGROUND_QUEUE_TIMEOUT_SECONDS))
    for job in stale:
        job_fail(job_id=job.pk, attempt=job.attempt, code="queue_timeout",
                 message=f"No worker took this job within {settings.PLAYGROUND_QUEUE_TIMEOUT_SECONDS} s; try again.")
    return len(lost) + len(stale)


def _done_data(job: PromptJob) -> dict:
    return {"status": job.status, "usage": job_usage(job)}


def job_usage(job: PromptJob) -> dict:
    sequences = (job.params.get("best_of") or job.params.get("n") or 1) if job.params else 1
    prompt = job.prompt_tokens
    return {"prompt_tokens": prompt, "completion_tokens": job.completion_tokens,
            "total_tokens": prompt + job.completion_tokens, "sequences": sequences * len(job.prompt_ids or [None])}


# -- limits, flags and retention ---------------------------------------------------------------------

LIMIT_MAX = 2**31 - 1  # PositiveIntegerField
FREE_TEXT_MAX_CHARS = 5000


def _free_text(value: str, *, field: str) -> str:
    """A comment or note as stored: stripped; overlong text is refused whole, never cut short. (A NUL never
    gets here: ``portal.middleware.RefuseNulCharactersMiddleware``.)"""
    text = value.strip()
    if len(text) > FREE_TEXT_MAX_CHARS:
        raise ValidationError({field: too_long_message(FREE_TEXT_MAX_CHARS, text)})
    return text


@transaction.atomic
def playground_limits_set(*, user: User, by: User, values: dict[str, int | None]) -> PlaygroundLimit:
    """Staff set (or clear, with None) one user's limits; audited."""
    if not is_reviewer(by):
        raise ValidationError("Only staff reviewers can change playground limits.")
    unknown = set(values) - set(selectors.Limits.FIELDS)
    if unknown:
        raise ValidationError({name: "Not a playground limit." for name in unknown})
    bad = {name: f"Give a whole number from 0 to {LIMIT_MAX}, or leave it empty for the default."
           for name, value in values.items()
           if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= LIMIT_MAX)}
    if bad:
        raise ValidationError(bad)
    limit, _ = PlaygroundLimit.objects.select_for_update().get_or_create(user=user)
    before = {name: getattr(limit, name) for name in selectors.Limits.FIELDS}
    for name, value in values.items():
        setattr(limit, name, value)
    limit.updated_by = by
    limit.save()
    audit_record(actor=by, action="playground.limits", target=limit, before=before,
                 after={name: getattr(limit, name) for name in selectors.Limits.FIELDS})
    return limit


@transaction.atomic
def output_flag_create(*, job: PromptJob, by: User, category: str, comment: str, choice_index: int = 0) -> OutputFlag:
    """A researcher flags one of their own outputs for the moderation queue."""
    if job.user_id != by.pk:
        raise ValidationError("You can only flag your own outputs.")
    if category not in OutputFlag.Category.values:
        raise ValidationError({"category": "Choose one of the categories."})
    if not 0 <= choice_index < max(len(job.outputs or []), 1):
        raise ValidationError({"choice_index": "This job has no such output."})
    flag = OutputFlag.objects.create(job=job, flagged_by=by, category=category, choice_index=choice_index,
                                     comment=_free_text(comment, field="comment"))
    audit_record(actor=by, action="playground.flag", target=flag, after={"job": str(job.pk), "category": category})
    return flag


@transaction.atomic
def output_flag_resolve(*, flag: OutputFlag, by: User, status: str, note: str = "") -> OutputFlag:
    """Staff dismiss a flag or keep a note on it; either way it leaves the open queue."""
    if not is_reviewer(by):
        raise ValidationError("Only staff reviewers can resolve flags.")
    note = _free_text(note, field="note")
    if status not in {OutputFlag.Status.DISMISSED, OutputFlag.Status.NOTED}:
        raise ValidationError({"status": "Dismiss the flag or note it."})
    if status == OutputFlag.Status.NOTED and not note:
        raise ValidationError({"note": "Write the note."})
    flag = OutputFlag.objects.select_for_update().get(pk=flag.pk)
    flag.status, flag.staff_note, flag.resolved_by, flag.resolved_at = status, note, by, timezone.now()
    flag.save(update_fields=["status", "staff_note", "resolved_by", "resolved_at"])
    audit_record(actor=by, action=f"playground.flag_{status}", target=flag, reason=note.strip())
    return flag


def job_texts_purge(*, now: datetime | None = None) -> int:
    """Delete prompts and outputs past the retention period; counts, times and flags stay."""
    now = now or timezone.now()
    return selectors.jobs_with_expired_texts(now=now).update(
        prompts=[], prompt_ids=[], outputs=[], texts_deleted_at=now)
