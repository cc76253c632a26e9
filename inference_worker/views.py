"""The playground page and its JSON and event-stream endpoints (session login), and the staff pages.

The page posts the same JSON body as the completions API to ``/playground/jobs``, then follows
``/playground/jobs/<id>/events`` (server-sent events from the job's Redis stream; on reconnect
the browser's ``Last-Event-ID`` resumes after the last event it saw). While a page follows a
job it keeps the job's watch key alive; a page job nobody follows for
``PLAYGROUND_PAGE_UNWATCHED_SECONDS`` is cancelled by its worker.
"""

from __future__ import annotations

import asyncio
import json
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from access.http import validation_errors
from access.models import User
from access.views.common import lookup_or_404, reviewer_required, run_with_messages
from inference_worker import selectors, services, streams
from inference_worker.apis import error_response
from inference_worker.completions import CompletionError, parse_completion_request
from inference_worker.models import OutputFlag, PromptJob
from inference_worker.release_model import ReleaseModelUnavailable, release_model_info

QUEUE_UPDATE_SECONDS = 1.0
WATCH_REFRESH_SECONDS = 5.0


def _page_context(user: User) -> dict:
    limits = selectors.limits_for(user=user)
    releases = []
    for row in selectors.playground_releases_of(user=user):
        try:
            context_length = release_model_info(release=row.release).max_positions
        except ReleaseModelUnavailable:
            context_length = None
        workers = [w for w in selectors.live_workers(release_slug=row.release.slug) if not w.get("draining")]
        releases.append({"release": row.release, "licence_to_accept": row.licence_to_accept,
                         "context_length": context_length, "workers": len(workers)})
    return {
        "releases": releases, "limits": limits, "tokens_used": selectors.tokens_used_today(user=user),
        "retention_days": settings.PLAYGROUND_RETENTION_DAYS, "categories": OutputFlag.Category.choices,
        "recent": selectors.jobs_of(user=user)[:10],
    }


@login_required
def playground(request: HttpRequest) -> HttpResponse:
    """The prompt form for the releases the user holds; ``?rerun=<job>`` fills it from an earlier job."""
    context = _page_context(request.user)
    rerun = request.GET.get("rerun")
    if rerun:
        try:
            job = selectors.job_of(user=request.user, pk=rerun)
        except (ObjectDoesNotExist, ValidationError):
            raise Http404 from None
        prompt = job.prompts[0] if job.prompts else ""
        if not isinstance(prompt, str) or len(job.prompts) > 1:
            messages.info(request, "This job was sent through the API with token ids or several prompts; the page "
                                   "re-runs one text prompt, so only its parameters were filled in.")
            prompt = prompt if isinstance(prompt, str) else ""
        context["rerun"] = {"model": job.release.slug, "prompt": prompt, "params": job.params}
    return render(request, "inference_worker/playground.html", context)


@login_required
@require_POST
def job_create(request: HttpRequest) -> JsonResponse:
    """Submit from the page: the completions API's body; 201 with the job and its event stream."""
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return error_response(CompletionError.invalid("The body must be JSON.", param=None))
    try:
        parsed = parse_completion_request(body)
        job = services.job_submit(user=request.user, request=parsed, source=PromptJob.Source.PAGE)
    except CompletionError as error:
        return error_response(error)
    except streams.PlaygroundUnavailable as error:
        return error_response(CompletionError.unavailable(str(error)))
    return JsonResponse(_job_json(job), status=201)


def _job_json(job: PromptJob) -> dict:
    return {"id": str(job.pk), "model": job.release.slug, "status": job.status, "seed": job.seed,
            "prompt_tokens": job.prompt_tokens, "events": reverse("inference_worker:job_events", args=[job.pk]),
            "cancel": reverse("inference_worker:job_cancel", args=[job.pk]),
            "url": reverse("inference_worker:job_detail", args=[job.pk])}


@login_required
@require_POST
def token_count(request: HttpRequest) -> JsonResponse:
    """The live token count of a prompt for a release the user holds: {"tokens", "context_length"}."""
    try:
        body = json.loads(request.body or b"null")
        model, prompt = body["model"], body["prompt"]
        if not isinstance(model, str) or not isinstance(prompt, str):
            raise TypeError
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return error_response(CompletionError.invalid('Send {"model": "<release>", "prompt": "<text>"}.', param=None))
    try:
        release = services.playground_access_for(user=request.user, model=model).release
        [ids] = services.prompt_token_ids(release=release, prompts=[prompt])
        context_length = release_model_info(release=release).max_positions
    except CompletionError as error:
        return error_response(error)
    return JsonResponse({"tokens": len(ids), "context_length": context_length,
                         "max_prompt_tokens": selectors.limits_for(user=request.user).max_prompt_tokens})


def _own_job_or_404(user: User, pk) -> PromptJob:
    try:
        return selectors.job_of(user=user, pk=pk)
    except (ObjectDoesNotExist, ValidationError):
        raise Http404 from None


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk) -> JsonResponse:
    job = services.job_cancel(job=_own_job_or_404(request.user, pk))
    return JsonResponse(_job_json(job))


@login_required
@require_GET
def job_detail(request: HttpRequest, pk) -> HttpResponse:
    job = _own_job_or_404(request.user, pk)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({**_job_json(job), "outputs": job.outputs, "params": job.params,
                             "error": job.error_message, "finish_reason": job.finish_reason})
    return render(request, "inference_worker/job_detail.html", {
        "job": job, "categories": OutputFlag.Category.choices, "flags": job.flags.all(),
        "position": selectors.queue_position(job=job), "params_json": json.dumps(job.params, indent=2, sort_keys=True),
    })


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")[:200]
    page = Paginator(selectors.jobs_of(user=request.user, search=search), 25).get_page(request.GET.get("page"))
    return render(request, "inference_worker/history.html", {"page": page, "q": search})


@login_required
@require_POST
def job_flag(request: HttpRequest, pk) -> HttpResponse:
    job = _own_job_or_404(request.user, pk)
    try:
        choice_index = int(request.POST.get("choice_index", "0"))
    except ValueError:
        choice_index = -1
    ok = run_with_messages(request, services.output_flag_create, job=job, by=request.user,
                           category=request.POST.get("category", ""), comment=request.POST.get("comment", ""),
                           choice_index=choice_index)
    if ok:
        messages.success(request, "Thank you: the output was flagged for the moderation team.")
    return redirect("inference_worker:job_detail", pk=job.pk)


# -- the page's event stream ------------------------------------------------------------------------

def _event_text(event: streams.Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"


async def job_events(request: HttpRequest, pk) -> HttpResponse:
    """Server-sent events of the user's own job, from just after ``Last-Event-ID``."""
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse(CompletionError(401, "Sign in first.").body(), status=401)
    try:
        job = await sync_to_async(selectors.job_of)(user=user, pk=pk)
    except (ObjectDoesNotExist, ValidationError):
        raise Http404 from None
    last_id = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0-0"
    if not _valid_entry_id(last_id):
        return error_response(CompletionError.invalid("Last-Event-ID must be an event id like 1700000000000-0.",
                                                   param="Last-Event-ID"))
    response = StreamingHttpResponse(_page_events(job, last_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _valid_entry_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit()) and len(value) < 40


async def _page_events(job: PromptJob, last_id: str):
    client = await sync_to_async(streams.redis_client)()
    watch = streams.watch_key(job.pk)
    subscription = None
    try:
        subscription = await streams.stream_hub().subscribe(job.pk, last_id)
        started = False
        next_watch = 0.0
        yield "retry: 1000\n\n"
        while True:
            if time.monotonic() >= next_watch:
                await sync_to_async(client.set)(watch, "1", ex=settings.PLAYGROUND_PAGE_UNWATCHED_SECONDS)
                next_watch = time.monotonic() + WATCH_REFRESH_SECONDS
            event = await subscription.next(QUEUE_UPDATE_SECONDS)
            if event is None:
                if not started:
                    position = await sync_to_async(_queue_position)(job.pk)
                    if position is not None:
                        yield f"event: queue\ndata: {json.dumps({'position': position})}\n\n"
                    else:
                        started = True
                else:
                    yield ": keep-alive\n\n"
                continue
            if event.type in {"started", "token"}:
                started = True
            elif event.type == "queued":
                started = False
            yield _event_text(event)
            if event.type == streams.TERMINAL:
                return
    except streams.StreamError as error:
        yield f"event: error\ndata: {json.dumps({'code': 'stream_interrupted', 'message': str(error)})}\n\n"
    except asyncio.CancelledError:  # the page went away; its job runs on unless nobody returns in time
        raise
    finally:
        if subscription is not None:
            subscription.close()


def _queue_position(job_id) -> int | None:
    job = PromptJob.objects.filter(pk=job_id).first()
    return selectors.queue_position(job=job) if job is not None else None


# -- staff: moderation, workers, limits (under /review/: TOTP required by the middleware) ----------

LIMIT_LABELS = {
    "max_prompt_tokens": "Prompt tokens per request",
    "max_new_tokens": "New tokens per output (max_tokens)",
    "max_sequences": "Outputs per request (prompts × max(n, best_of))",
    "max_concurrent": "Requests queued or running at once",
    "daily_tokens": "Tokens per day (prompt and completion)",
}

@reviewer_required
def moderation(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", OutputFlag.Status.OPEN)
    if status not in {"", *OutputFlag.Status.values}:
        status = OutputFlag.Status.OPEN
    page = Paginator(selectors.flags_for_moderation(status=status), 25).get_page(request.GET.get("page"))
    return render(request, "inference_worker/moderation.html", {
        "page": page, "status": status, "statuses": OutputFlag.Status.choices, "counts": selectors.flag_counts(),
    })


@reviewer_required
@require_POST
def moderation_resolve(request: HttpRequest, pk) -> HttpResponse:
    flag = lookup_or_404(selectors.flag_for_moderation, pk=pk)
    run_with_messages(request, services.output_flag_resolve, flag=flag, by=request.user,
                      status=request.POST.get("status", ""), note=request.POST.get("note", ""))
    return redirect("inference_worker:moderation")


@reviewer_required
def workers(request: HttpRequest) -> HttpResponse:
    return render(request, "inference_worker/workers.html", {"workers": selectors.live_workers()})


@reviewer_required
def user_limits(request: HttpRequest, user_pk: int) -> HttpResponse:
    subject = lookup_or_404(lambda pk: User.objects.get(pk=pk), pk=user_pk)
    errors: dict = {}
    if request.method == "POST":
        values = {}
        for name in selectors.Limits.FIELDS:
            raw = request.POST.get(name, "").strip()
            try:
                values[name] = int(raw) if raw else None
            except ValueError:
                errors[name] = ["Give a whole number, or leave it empty for the default."]
        if not errors:
            try:
                services.playground_limits_set(user=subject, by=request.user, values=values)
                return redirect("inference_worker:user_limits", user_pk=subject.pk)
            except ValidationError as error:
                errors = validation_errors(error)
    override = getattr(subject, "playground_limit", None)
    effective, defaults = selectors.limits_for(user=subject), selectors.default_limits()
    rows = [{"name": name, "label": LIMIT_LABELS[name], "default": getattr(defaults, name),
             "effective": getattr(effective, name), "errors": errors.get(name, []),
             "value": request.POST.get(name, "") if errors else getattr(override, name, None)}
            for name in selectors.Limits.FIELDS]
    return render(request, "inference_worker/user_limits.html", {
        "subject": subject, "effective": effective, "defaults": defaults,
        "override": override, "errors": errors, "fields": selectors.Limits.FIELDS, "rows": rows,
        "tokens_used": selectors.tokens_used_today(user=subject),
    }, status=400 if errors else 200)
