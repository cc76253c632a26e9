"""The playground's jobs through real processes: GPU-worker processes on a tiny CPU model, the Redis
broker and streams, and (where HTTP matters) the portal under uvicorn. Jobs are submitted with the
same service the API and the page call."""

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
from django.test import Client

from access.services.grants import grant_revoke
from inference_worker import services, streams
from inference_worker.completions import parse_completion_request
from inference_worker.models import PromptJob
from tests.access.conftest import reviewer  # noqa: F401  (a fixture)
from tests.inference_worker.playground import (
    SLUG, asgi_server, gpu_worker, playground_redis, release_from_checkpoint, reset_playground_redis,
    researcher_with_token, wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)
LONG = {"max_tokens": 1500, "ignore_eos": True, "temperature": 0}


@pytest.fixture
def release(slow_checkpoint, settings):
    reset_playground_redis()
    settings.PLAYGROUND_MAX_NEW_TOKENS = 2000
    settings.PLAYGROUND_MAX_CONCURRENT = 4
    yield release_from_checkpoint(slow_checkpoint)
    reset_playground_redis()


def submit(user, source=PromptJob.Source.API, **body) -> PromptJob:
    request = parse_completion_request({"model": SLUG, "prompt": "Hello world!", "max_tokens": 8, **body})
    return services.job_submit(user=user, request=request, source=source)


def job(pk) -> PromptJob:
    return PromptJob.objects.get(pk=pk)


def has_tokens(pk) -> bool:
    return streams.stream_has_tokens(pk)


def ended(pk, timeout: float = 60) -> PromptJob:
    return wait_until(lambda: (j := job(pk)).status not in PromptJob.OPEN_STATUSES and j, timeout, message=f"job {pk}")


def session_cookie(user) -> dict:
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


def test_twenty_concurrent_prompts_from_several_users_all_complete(release, slow_checkpoint, tmp_path):
    researchers = [researcher_with_token(release) for _ in range(10)]
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log", max_batch=8), \
            asgi_server(tmp_path / "web.log", PLAYGROUND_MAX_NEW_TOKENS=2000) as url:
        def ask(args):
            (user, token), i = args
            client = openai.OpenAI(base_url=f"{url}/api/v1", api_key=token, max_retries=0, timeout=120)
            return client.completions.create(model=SLUG, prompt=f"Request {i} of many", max_tokens=20,
                                             temperature=1.0, seed=i)

        with ThreadPoolExecutor(20) as pool:  # two at a time each: the default per-user limit
            answers = list(pool.map(ask, [(researchers[i % 10], i) for i in range(20)]))
    assert len({a.id for a in answers}) == 20 and all(a.choices[0].finish_reason in {"stop", "length"} for a in answers)
    assert PromptJob.objects.filter(status="succeeded").count() == 20

    (alice, _), (bob, _) = researchers[:2]
    web = Client()
    web.force_login(bob)
    alices = PromptJob.objects.filter(user=alice).first()
    assert web.get(f"/playground/jobs/{alices.pk}/").status_code == 404, "another user's job does not exist for you"
    assert web.get(f"/playground/jobs/{PromptJob.objects.filter(user=bob).first().pk}/").status_code == 200


def test_cancelling_frees_the_slot_for_a_queued_job(release, slow_checkpoint, tmp_path):
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log", max_batch=1, concurrency=1):
        long = submit(user, **LONG)
        waiting = submit(user)
        wait_until(lambda: has_tokens(long.pk), message="the long job's first tokens")
        assert job(waiting.pk).status == "queued"
        services.job_cancel(job=long)
        assert ended(waiting.pk).status == "succeeded"
    cancelled = job(long.pk)
    assert cancelled.status == "cancelled" and cancelled.outputs[0]["finish_reason"] == "cancelled"
    assert 0 < cancelled.completion_tokens < 1500
    assert cancelled.tokens_charged == cancelled.prompt_tokens + cancelled.completion_tokens, "the rest is refunded"


def test_revocation_cancels_queued_and_running_jobs(release, slow_checkpoint, reviewer, tmp_path):
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log", max_batch=1, concurrency=1):
        running, queued = submit(user, **LONG), submit(user, **LONG)
        wait_until(lambda: has_tokens(running.pk), message="tokens")
        grant_revoke(grant=running.grant, by=reviewer, reason="Shared the weights")
        assert job(queued.pk).status == "cancelled", "a queued job stops at once"
        assert ended(running.pk, timeout=10).status == "cancelled", "a running one at its next token"


def test_a_killed_worker_s_jobs_are_retried_or_failed(release, slow_checkpoint, tmp_path):
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "one.log", max_batch=1, concurrency=2) as first:
        jobs = [submit(user, **LONG), submit(user, **LONG)]
        # both claimed, one in the batch's only slot: which one is up to the two pool threads
        wait_until(lambda: all(job(j.pk).status == "running" for j in jobs) and any(has_tokens(j.pk) for j in jobs),
                   message="both claimed")
        streaming, waiting = sorted(jobs, key=lambda j: not has_tokens(j.pk))
        first.send_signal(signal.SIGKILL)
        first.wait()
    with gpu_worker(slow_checkpoint, tmp_path / "two.log", max_batch=1, concurrency=1):
        wait_until(lambda: services.jobs_reap() or job(streaming.pk).status == "failed", timeout=15,
                   message="the reaper to see the lost heartbeat")
        lost = ended(streaming.pk)
        assert (lost.status, lost.error_code) == ("failed", "worker_lost")
        retried = ended(waiting.pk)
        assert (retried.status, retried.attempt) == ("succeeded", 2)
        assert retried.worker != job(streaming.pk).worker
    events = playground_redis().xrange(streams.job_stream_key(lost.pk))
    assert [e[1]["type"] for e in events][-2:] == ["error", "done"], "its stream ends with an error event"


def test_sigterm_drains_then_exits_0(release, slow_checkpoint, tmp_path):
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "one.log", max_batch=1, drain_seconds=30) as worker:
        short = submit(user, max_tokens=200, ignore_eos=True)
        wait_until(lambda: has_tokens(short.pk), message="tokens")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    assert job(short.pk).status == "succeeded", "a job finishing within the grace period finishes"

    with gpu_worker(slow_checkpoint, tmp_path / "two.log", max_batch=1, concurrency=2,
                    drain_seconds=0.5) as worker:
        jobs = [submit(user, **LONG), submit(user, **LONG)]
        # both claimed, one in the batch's only slot: which one is up to the two pool threads
        wait_until(lambda: all(job(j.pk).status == "running" for j in jobs) and any(has_tokens(j.pk) for j in jobs),
                   message="both claimed")
        streaming, waiting = sorted(jobs, key=lambda j: not has_tokens(j.pk))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    assert (job(streaming.pk).status, job(streaming.pk).error_code) == ("failed", "worker_lost")
    assert (job(waiting.pk).status, job(waiting.pk).attempt) == ("queued", 2), "handed back, for the next worker"
    assert not playground_redis().keys("gh:worker:*"), "its heartbeat is gone"


def test_a_page_stream_that_reconnects_misses_nothing(release, slow_checkpoint, tmp_path):
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log"), asgi_server(tmp_path / "web.log", PLAYGROUND_MAX_NEW_TOKENS=2000) as url:
        page_job = submit(user, source=PromptJob.Source.PAGE, max_tokens=300, ignore_eos=True, temperature=0.9, seed=3)
        events_url = f"{url}/playground/jobs/{page_job.pk}/events"
        assert httpx.get(events_url).status_code == 401, "the stream front checks the session like Django"
        stranger, _ = researcher_with_token(release)
        assert httpx.get(events_url, cookies=session_cookie(stranger)).status_code == 404
        received, last_id = [], None
        with httpx.Client(base_url=url, cookies=session_cookie(user), timeout=30) as http:
            with http.stream("GET", f"/playground/jobs/{page_job.pk}/events") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for event in parse_sse(response.iter_lines()):
                    if event.get("event") == "token":
                        received.append(event)
                        last_id = event["id"]
                        if len(received) == 5:
                            break
            with http.stream("GET", f"/playground/jobs/{page_job.pk}/events",
                             headers={"Last-Event-ID": last_id}) as response:
                for event in parse_sse(response.iter_lines()):
                    if event.get("event") == "token":
                        received.append(event)
                    if event.get("event") == "done":
                        break
    import json

    text = "".join(json.loads(e["data"])["text"] for e in received)
    final = job(page_job.pk)
    assert final.status == "succeeded" and text == final.outputs[0]["text"]
    assert len(received) == 300 and len({e["id"] for e in received}) == 300


def test_an_api_stream_whose_client_leaves_is_cancelled(release, slow_checkpoint, tmp_path):
    user, token = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log"), asgi_server(tmp_path / "web.log", PLAYGROUND_MAX_NEW_TOKENS=2000) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            body = {"model": SLUG, "prompt": "Go on", "stream": True, **LONG}
            with http.stream("POST", "/api/v1/completions", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status_code == 200
                next(line for line in response.iter_lines() if line.startswith("data:"))
        left = ended(PromptJob.objects.get(user=user).pk, timeout=20)
    assert left.status == "cancelled" and left.completion_tokens < 1500


def test_one_web_process_holds_500_streams_on_a_few_redis_connections(release, slow_checkpoint, tmp_path):
    user, _ = researcher_with_token(release)
    cookies = session_cookie(user)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log"), asgi_server(tmp_path / "web.log", PLAYGROUND_MAX_NEW_TOKENS=2000) as url:
        page_job = submit(user, source=PromptJob.Source.PAGE, max_tokens=40, temperature=0)
        baseline, threads_before = playground_redis().client_list(), url.threads()

        async def follow(http: httpx.AsyncClient, opened: asyncio.Event) -> int:
            tokens, lines = 0, []
            async with http.stream("GET", f"/playground/jobs/{page_job.pk}/events") as response:
                opened.set()
                async for line in response.aiter_lines():
                    lines.append(line)
                    tokens += line == "event: token"
                    if line == "event: done":
                        return tokens
            return (response.status_code, lines[-6:])  # what a stream that broke off got last

        async def main() -> tuple[list[int], int]:
            limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=120, limits=limits) as http:
                opened = [asyncio.Event() for _ in range(500)]
                tasks = [asyncio.create_task(follow(http, o)) for o in opened]
                await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 120)
                connections = len(playground_redis().client_list()) - len(baseline)
                threads = url.threads() - threads_before
                return await asyncio.gather(*tasks), connections, threads

        counts, redis_connections, threads = asyncio.run(main())
    assert counts == [40] * 500, "every stream got every token"
    assert redis_connections <= 10, f"{redis_connections} Redis connections for 500 streams"
    assert threads <= 10, f"{threads} more threads for 500 streams"


def parse_sse(lines):
    """Server-sent events as dicts of their fields."""
    event = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def test_a_page_job_nobody_follows_is_cancelled(release, slow_checkpoint, tmp_path, settings):
    settings.PLAYGROUND_PAGE_UNWATCHED_SECONDS = 2
    user, _ = researcher_with_token(release)
    with gpu_worker(slow_checkpoint, tmp_path / "worker.log"):
        page_job = submit(user, source=PromptJob.Source.PAGE, **LONG)
        left = ended(page_job.pk, timeout=20)
    assert left.status == "cancelled" and 0 < left.completion_tokens < 1500


def test_a_stream_whose_worker_dies_ends_with_an_error_the_client_raises(release, slow_checkpoint, tmp_path):
    _, token = researcher_with_token(release)
    with asgi_server(tmp_path / "web.log", PLAYGROUND_MAX_NEW_TOKENS=2000) as url:
        with gpu_worker(slow_checkpoint, tmp_path / "worker.log") as worker:
            client = openai.OpenAI(base_url=f"{url}/api/v1", api_key=token, max_retries=0, timeout=60)
            stream = client.completions.create(model=SLUG, prompt="Go on", stream=True, max_tokens=1500,
                                               temperature=0, extra_body={"ignore_eos": True})
            chunks = iter(stream)
            next(chunks)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            wait_until(lambda: services.jobs_reap(), timeout=15, message="the reaper")
            with pytest.raises(openai.APIError) as error:
                for _ in chunks:
                    pass
    assert "worker" in str(error.value.message)
