"""The OpenAI-compatible API: ``POST /api/v1/completions`` and ``GET /api/v1/models``.

Async Django views (DRF cannot stream asynchronously) with their own Bearer authentication
(``access.services.tokens``, the same rule DRF uses) and OpenAI's error shape. A streamed
answer follows the job's Redis stream through this process's ``StreamHub``; a client that
disconnects cancels its job at once, streamed or not.
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from access.models import ApiToken, User
from access.services.tokens import (
    ApiTokenInvalid,
    api_token_authenticate,
    api_token_from_header,
    api_token_has_scope,
    api_token_scope_missing_message,
)
from inference_worker import selectors, services, streams
from inference_worker.completions import CompletionError, CompletionRequest, parse_completion_request
from inference_worker.models import PromptJob
from inference_worker.release_model import ReleaseModelUnavailable, release_model_info

KEEPALIVE_SECONDS = 15


def error_response(error: CompletionError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers().items():
        response[name] = value
    if error.status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def token_user(request: HttpRequest, scope: str) -> User:
    """The caller of a personal API token that holds ``scope``; CompletionError 401/403 otherwise."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise CompletionError.unauthenticated(
            "Send your personal API token as 'Authorization: Bearer <token>'; create one at /access/tokens/.")
    try:
        token: ApiToken = api_token_authenticate(raw=api_token_from_header(header))
    except ApiTokenInvalid as error:
        raise CompletionError.unauthenticated(str(error)) from None
    if not api_token_has_scope(token, scope):
        raise CompletionError.forbidden(api_token_scope_missing_message(scope), code="token_scope")
    return token.user


def _json_body(request: HttpRequest) -> object:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise CompletionError.invalid("The body must be a JSON object (Content-Type: application/json).",
                                      param=None) from None


def _method_not_allowed(allowed: str) -> JsonResponse:
    response = JsonResponse(CompletionError(405, f"Use {allowed}.").body(), status=405)
    response["Allow"] = allowed
    return response


# -- /api/v1/models -------------------------------------------------------------------------------

def _model_entry(release) -> dict:
    try:
        context = release_model_info(release=release).max_positions
    except ReleaseModelUnavailable:
        context = None
    return {"id": release.slug, "object": "model", "created": int(release.created_at.timestamp()),
            "owned_by": "gatehouse", "context_length": context}


def _models_for(request: HttpRequest, slug: str | None) -> list[dict]:
    user = token_user(request, ApiToken.Scope.INFERENCE)
    rows = [row for row in selectors.playground_releases_of(user=user) if slug is None or row.release.slug == slug]
    return [_model_entry(row.release) for row in rows]


@csrf_exempt
async def models(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """The releases the caller holds an active grant for, with their context length."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        entries = await sync_to_async(_models_for)(request, slug)
    except CompletionError as error:
        return error_response(error)
    if slug is None:
        return JsonResponse({"object": "list", "data": entries})
    if not entries:
        return error_response(CompletionError.model_not_found(slug))
    return JsonResponse(entries[0])


# -- /api/v1/completions --------------------------------------------------------------------------

@csrf_exempt
async def completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        parsed, job = await sync_to_async(_submit)(request)
    except CompletionError as error:
        return error_response(error)
    except streams.PlaygroundUnavailable as error:
        return error_response(CompletionError.unavailable(str(error)))
    if parsed.stream:
        response = StreamingHttpResponse(_stream_chunks(job, parsed), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass events on as they come
        return response
    try:
        return await _final_response(job)
    except asyncio.CancelledError:  # the client went away: free the slot now
        await sync_to_async(services.job_cancel)(job=job, reason="client_disconnected")
        raise


def _submit(request: HttpRequest) -> tuple[CompletionRequest, PromptJob]:
    """The caller, the request and its queued job, in one trip to the thread that runs the queries."""
    user = token_user(request, ApiToken.Scope.INFERENCE)
    parsed = parse_completion_request(_json_body(request))
    return parsed, services.job_submit(user=user, request=parsed, source=PromptJob.Source.API)


async def _final_response(job: PromptJob) -> JsonResponse:
    try:
        subscription = await streams.stream_hub().subscribe(job.pk)
        try:
            while True:
                event = await subscription.next(KEEPALIVE_SECONDS)
                if event is not None and event.type == streams.TERMINAL:
                    break
        finally:
            subscription.close()
    except streams.StreamError as error:
        await sync_to_async(services.job_cancel)(job=job, reason="stream_interrupted")
        return error_response(CompletionError(503, f"The result could not be read: {error}", type="server_error",
                                              code="stream_interrupted"))
    job = await PromptJob.objects.select_related("release").aget(pk=job.pk)
    if job.status == PromptJob.Status.FAILED:
        return error_response(CompletionError(503, job.error_message or "The job failed.", type="server_error",
                                              code=job.error_code or "job_failed"))
    return JsonResponse(completion_body(job))


def completion_body(job: PromptJob) -> dict:
    """OpenAI's ``text_completion`` object for an ended job."""
    choices = [{"index": c["index"], "text": c["text"], "logprobs": c["logprobs"], "finish_reason": c["finish_reason"]}
               for c in job.outputs]
    usage = services.job_usage(job)
    return {"id": job.completion_id, "object": "text_completion", "created": int(job.queued_at.timestamp()),
            "model": job.release.slug, "choices": choices,
            "usage": {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}}


def sse(data: object) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream_chunks(job: PromptJob, parsed: CompletionRequest):
    """OpenAI's streamed chunks from the job's events: text as it settles, each choice's finish
    reason, the usage chunk when asked, then ``[DONE]``; a failure ends it with an error event."""
    p = parsed.params
    chunk = {"id": job.completion_id, "object": "text_completion", "created": int(job.queued_at.timestamp()),
             "model": parsed.model}
    offsets: dict[int, int] = {}
    subscription = None
    try:
        # without echo no prompt text is sent: stay off the thread that runs the other requests' queries
        prompt_texts = await sync_to_async(_prompt_texts)(job) if p["echo"] else [""] * len(job.prompt_ids)
        subscription = await streams.stream_hub().subscribe(job.pk)
        for prompt_index, text in enumerate(prompt_texts):
            for i in range(p["n"]):
                offsets[prompt_index * p["n"] + i] = 0 if p["echo"] else len(text)
                if p["echo"]:
                    yield sse({**chunk, "choices": [_choice(prompt_index * p["n"] + i, text, None, None)], "usage": None})
                    offsets[prompt_index * p["n"] + i] = len(text)
        while True:
            event = await subscription.next(KEEPALIVE_SECONDS)
            if event is None:
                yield ": keep-alive\n\n"
            elif event.type == "token" and (event.data["text"] or p["logprobs"] is not None):
                index = event.data["index"]
                logprobs = _chunk_logprobs(event.data, offsets.get(index, 0)) if p["logprobs"] is not None else None
                offsets[index] = offsets.get(index, 0) + len(event.data["text"])
                yield sse({**chunk, "choices": [_choice(index, event.data["text"], logprobs, None)], "usage": None})
            elif event.type == "finish":
                yield sse({**chunk, "choices": [_choice(event.data["index"], "", None, event.data["finish_reason"])],
                           "usage": None})
            elif event.type == "error":
                yield sse(CompletionError(503, event.data["message"], type="server_error",
                                          code=event.data["code"]).body())
                return
            elif event.type == streams.TERMINAL:
                if parsed.include_usage:
                    usage = event.data["usage"]
                    yield sse({**chunk, "choices": [], "usage": {
                        key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}})
                yield "data: [DONE]\n\n"
                return
    except asyncio.CancelledError:  # the client disconnected: stop generating at the next token
        await sync_to_async(services.job_cancel)(job=job, reason="client_disconnected")
        raise
    except streams.StreamError as error:
        yield sse(CompletionError(503, f"The stream was interrupted: {error}", type="server_error",
                                  code="stream_interrupted").body())
    except CompletionError as error:
        yield sse(error.body())
    finally:
        if subscription is not None:
            subscription.close()


def _prompt_texts(job: PromptJob) -> list[str]:
    """What ``echo`` returns of each prompt: the text as sent, or the ids' decoded text."""
    tokenizer = services.model_info_for(release=job.release).tokenizer  # read when the job was submitted
    return [prompt if isinstance(prompt, str) else tokenizer.decode(prompt) for prompt in job.prompts]


def _choice(index: int, text: str, logprobs: dict | None, finish_reason: str | None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def _chunk_logprobs(data: dict, offset: int) -> dict:
    top = data.get("top_logprobs")
    return {"tokens": [data["token"]], "token_logprobs": [data["logprob"]],
            "top_logprobs": [top] if top is not None else None, "text_offset": [offset]}
