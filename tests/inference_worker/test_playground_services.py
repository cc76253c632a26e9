"""Submission rules of the playground: access, limits with their 429s, seeds, cancellation, retention,
and what happens to the jobs of a lost worker. A heartbeat written here stands in for a live worker;
nothing consumes the queue in these tests."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from access.models import AuditEvent
from access.services.grants import grant_revoke
from access.services.licences import licence_version_publish
from inference_worker import selectors, services, streams
from inference_worker.completions import CompletionError, parse_completion_request
from inference_worker.models import OutputFlag, PromptJob
from tests.factories import StaffFactory, UserFactory
from tests.inference_worker.playground import SLUG, playground_redis, release_from_checkpoint, reset_playground_redis
from tests.access.conftest import reviewer  # noqa: F401  (a fixture)
from tests.artifacts.conftest import grant_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def after_commit_now(monkeypatch):
    """These tests run in a transaction that never commits: run what waits for the commit at once
    (stream events, cancel signals and messages to the real broker)."""
    monkeypatch.setattr(services.transaction, "on_commit", lambda callback, *args, **kwargs: callback())


@pytest.fixture
def release(playground_checkpoint):
    reset_playground_redis()
    yield release_from_checkpoint(playground_checkpoint)
    reset_playground_redis()


def heartbeat(worker_id: str = "test-worker", *, draining: bool = False) -> None:
    client = playground_redis()
    client.set(streams.worker_key(worker_id), json.dumps({"worker": worker_id, "release": SLUG, "draining": draining}),
               ex=60)
    client.sadd(streams.workers_index_key(SLUG), worker_id)


@pytest.fixture
def researcher(release):
    user = UserFactory()
    grant_for(user, release)
    return user


def submit(user, **body):
    request = parse_completion_request({"model": SLUG, "prompt": "Hello world!", "max_tokens": 8, **body})
    return services.job_submit(user=user, request=request, source=PromptJob.Source.API)


def refused(user, **body) -> CompletionError:
    with pytest.raises(CompletionError) as error:
        submit(user, **body)
    return error.value


def test_a_job_keeps_everything_needed_to_run_it_again(researcher):
    heartbeat()
    job = submit(researcher, temperature=0.7)
    assert job.status == "queued" and job.grant.user == researcher
    assert job.licence_version == job.release.licence.current_version()
    assert job.seed == job.params["seed"] and isinstance(job.seed, int), "a seed is picked and stored when none is given"
    assert job.prompt_ids[0][0] == 2 and job.prompt_tokens == len(job.prompt_ids[0])
    assert submit(researcher, seed=42).seed == 42


def test_prompt_text_is_text(researcher):
    heartbeat()
    job = submit(researcher, prompt="stop </s> here <pad> <unk>")
    assert job.prompt_ids[0].count(2) == 1 and 1 not in job.prompt_ids[0] and 3 not in job.prompt_ids[0]


def test_access_is_checked_before_anything_is_queued(release, researcher):
    heartbeat()
    stranger = UserFactory()
    assert refused(stranger).status == 403 and refused(stranger).code == "no_grant"
    assert refused(researcher, model="opt-unknown").status == 404
    licence_version_publish(licence=release.licence, text_markdown="# Terms v2", by=None)
    error = refused(researcher)
    assert (error.status, error.code) == (403, "licence_required") and "/access/licences/opt-play/" in error.message


def test_no_live_worker_is_a_503(researcher):
    error = refused(researcher)
    assert (error.status, error.code, error.retry_after) == (503, "no_worker", 30)
    heartbeat(draining=True)
    assert refused(researcher).status == 503, "a draining worker takes no new work"


def test_limits_answer_429_with_retry_after(researcher, release, settings):
    heartbeat()
    error = refused(researcher, prompt=["a", "b", "c", "d", "e"], n=4)
    assert (error.status, error.type) == (429, "sequences") and error.headers()["Retry-After"]

    settings.PLAYGROUND_MAX_CONCURRENT = 2
    submit(researcher), submit(researcher)
    error = refused(researcher)
    assert (error.status, error.type) == (429, "concurrent_requests")

    other = UserFactory()
    grant_for(other, release)
    settings.PLAYGROUND_DAILY_TOKENS = 30
    error = refused(other, max_tokens=40)
    assert (error.status, error.type) == (429, "tokens") and int(error.headers()["Retry-After"]) <= 24 * 3600

    settings.PLAYGROUND_DAILY_TOKENS = 10_000
    settings.PLAYGROUND_QUEUE_CAP = 2
    error = refused(other)
    assert (error.status, error.type) == (429, "queue")


def test_what_can_never_run_is_a_400_naming_the_parameter(researcher, settings):
    heartbeat()
    settings.PLAYGROUND_MAX_NEW_TOKENS, settings.PLAYGROUND_MAX_PROMPT_TOKENS = 16, 100
    assert refused(researcher, max_tokens=17).param == "max_tokens"
    assert refused(researcher, prompt="word " * 150).param == "prompt"
    settings.PLAYGROUND_MAX_NEW_TOKENS, settings.PLAYGROUND_MAX_PROMPT_TOKENS = 4000, 4000
    error = refused(researcher, max_tokens=2040, prompt="word " * 20)
    assert (error.param, error.code) == ("max_tokens", "context_length_exceeded"), "the model has 2048 positions"
    assert refused(researcher, prompt=[2, 5, 10**6]).param == "prompt"


def test_staff_limits_override_the_defaults_and_are_audited(researcher, settings):
    settings.PLAYGROUND_MAX_CONCURRENT = 2
    staff = StaffFactory()
    services.playground_limits_set(user=researcher, by=staff, values={"max_concurrent": 5, "daily_tokens": None})
    limits = selectors.limits_for(user=researcher)
    assert limits.max_concurrent == 5 and limits.daily_tokens == settings.PLAYGROUND_DAILY_TOKENS
    assert AuditEvent.objects.filter(action="playground.limits", actor=staff).exists()


def test_the_daily_quota_is_reserved_then_refunded(researcher):
    heartbeat()
    job = submit(researcher, max_tokens=8)
    assert selectors.tokens_used_today(user=researcher) == job.prompt_tokens + 8
    services.job_cancel(job=job)
    assert selectors.tokens_used_today(user=researcher) == 0, "a job cancelled while queued costs nothing"


def test_cancelling_a_queued_job_ends_its_stream(researcher):
    heartbeat()
    job = services.job_cancel(job=submit(researcher))
    assert job.status == "cancelled"
    assert streams.last_event_type(job.pk) == "done"


def test_revoking_a_grant_or_publishing_a_licence_cancels_open_jobs(researcher, release, reviewer, settings):
    settings.PLAYGROUND_MAX_CONCURRENT = 5
    heartbeat()
    first, second = submit(researcher), submit(researcher)
    grant_revoke(grant=first.grant, by=reviewer, reason="Licence breach")
    assert set(PromptJob.objects.values_list("status", flat=True)) == {"cancelled"}
    assert PromptJob.objects.get(pk=second.pk).error_code == "grant_revoked"

    other = UserFactory()
    grant_for(other, release)
    job = submit(other)
    licence_version_publish(licence=release.licence, text_markdown="# Terms v2", by=None)
    assert PromptJob.objects.get(pk=job.pk).status == "cancelled"


def test_a_lost_worker_s_job_is_run_again_once_unless_it_streamed(researcher, settings):
    settings.PLAYGROUND_MAX_CONCURRENT = 5
    heartbeat("gone")
    silent, spoken = submit(researcher), submit(researcher)
    for job in (silent, spoken):
        services.job_claim(job_id=job.pk, attempt=1, worker="gone")
    streams.append_event(spoken.pk, "token", {"index": 0, "text": "Hi"})
    playground_redis().delete(streams.worker_key("gone"))

    assert services.jobs_reap() == 2
    silent.refresh_from_db(), spoken.refresh_from_db()
    assert (silent.status, silent.attempt) == ("queued", 2)
    assert (spoken.status, spoken.error_code) == ("failed", "worker_lost")
    assert streams.last_event_type(spoken.pk) == "done"
    assert services.job_claim(job_id=silent.pk, attempt=1, worker="late") is None, "a stale delivery runs nothing"

    services.job_claim(job_id=silent.pk, attempt=2, worker="gone-again")
    services.jobs_reap()
    silent.refresh_from_db()
    assert (silent.status, silent.error_code) == ("failed", "worker_lost"), "retried once, never stuck running"


def test_flags_feed_the_moderation_queue(researcher, reviewer):
    heartbeat()
    job = submit(researcher)
    PromptJob.objects.filter(pk=job.pk).update(status="succeeded", outputs=[{"index": 0, "text": "bad"}])
    job.refresh_from_db()
    with pytest.raises(Exception):
        services.output_flag_create(job=job, by=UserFactory(), category="harmful", comment="")
    flag = services.output_flag_create(job=job, by=researcher, category="harmful", comment="Dangerous advice")
    assert [f.pk for f in selectors.flags_for_moderation()] == [flag.pk]
    assert selectors.flag_counts() == [{"job__release__slug": SLUG, "category": "harmful", "total": 1, "open": 1}]
    services.output_flag_resolve(flag=flag, by=reviewer, status=OutputFlag.Status.DISMISSED)
    assert not selectors.flags_for_moderation().exists()


def test_retention_deletes_texts_but_keeps_counts_and_open_flags(researcher):
    heartbeat()
    old, flagged = submit(researcher), submit(researcher)
    past = timezone.now() - timedelta(days=91)
    PromptJob.objects.filter(pk__in=[old.pk, flagged.pk]).update(
        status="succeeded", queued_at=past, outputs=[{"index": 0, "text": "kept for safety research"}])
    services.output_flag_create(job=PromptJob.objects.get(pk=flagged.pk), by=researcher, category="other", comment="")
    assert services.job_texts_purge() == 1
    old.refresh_from_db()
    assert old.prompts == [] and old.outputs == [] and old.texts_deleted_at is not None and old.prompt_tokens > 0
    assert PromptJob.objects.get(pk=flagged.pk).outputs, "kept while its flag is open"


def test_a_job_no_worker_takes_fails_instead_of_waiting_for_ever(researcher, settings):
    heartbeat()
    job = submit(researcher)
    assert services.jobs_reap() == 0
    PromptJob.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(
        seconds=settings.PLAYGROUND_QUEUE_TIMEOUT_SECONDS + 1))
    assert services.jobs_reap() == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "queue_timeout")
    assert streams.last_event_type(job.pk) == "done"


def test_a_job_whose_grant_expired_while_it_waited_never_runs(researcher):
    heartbeat()
    job = submit(researcher)
    job.grant.expires_at = timezone.now() - timedelta(seconds=1)
    job.grant.save()
    assert services.job_claim(job_id=job.pk, attempt=1, worker="w") is None
    job.refresh_from_db()
    assert (job.status, job.error_code, job.tokens_charged) == ("cancelled", "access_ended", 0)


def test_a_claim_is_one_statement_that_returns_the_job_as_stored(researcher, django_assert_num_queries):
    heartbeat()
    job = submit(researcher)
    with django_assert_num_queries(1):
        claimed = services.job_claim(job_id=job.pk, attempt=1, worker="w")
    stored = PromptJob.objects.get(pk=job.pk)
    assert (claimed.pk, claimed.status, claimed.worker, claimed.attempt) == (job.pk, "running", "w", 1)
    assert claimed.started_at == stored.started_at and claimed.params == stored.params
    assert claimed.prompt_ids == stored.prompt_ids == job.prompt_ids
    assert services.job_claim(job_id=job.pk, attempt=1, worker="again") is None, "a repeated delivery runs nothing"


def test_a_generated_nul_character_is_stored_and_the_job_succeeds(researcher):
    """A byte-level token can decode to NUL, which PostgreSQL cannot store in JSON."""
    heartbeat()
    job = submit(researcher)
    services.job_claim(job_id=job.pk, attempt=1, worker="w")
    text = "before\x00after"
    outputs = [{"index": 0, "text": text, "finish_reason": "length",
                "logprobs": {"tokens": ["\x00"], "token_logprobs": [-0.1], "top_logprobs": [{"\x00": -0.1}],
                             "text_offset": [0]}}]
    services.job_complete(job_id=job.pk, attempt=1, outputs=outputs, completion_tokens=1, cancelled=False,
                          first_token_at=timezone.now())
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.outputs[0]["text"] == "before\ufffdafter" and job.outputs[0]["logprobs"]["tokens"] == ["\ufffd"]
    assert job.outputs[0]["logprobs"]["top_logprobs"] == [{"\ufffd": -0.1}]
