"""The playground's pages: who may open what, the notices a researcher sees, bad input, flags and their
moderation, staff-set limits, and model text shown as text."""

import json
import re
from collections import Counter

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from access.models import AuditEvent, Grant
from inference_worker import streams
from inference_worker.models import OutputFlag, PromptJob
from tests.access.conftest import apply, log_in_with_totp, reviewer  # noqa: F401  (a fixture)
from tests.access.factories import ReleaseFactory
from tests.artifacts.conftest import grant_for
from tests.factories import StaffFactory, UserFactory
from tests.inference_worker.playground import playground_redis

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
PARAMS = {"n": 1, "best_of": None, "max_tokens": 5, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "seed": 1234,
          "stop": [], "stop_token_ids": [], "logprobs": None, "echo": False, "min_tokens": 0,
          "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "ignore_eos": False}


@pytest.fixture(autouse=True)
def clean_playground_redis():
    """Heartbeats and streams live in Redis: no test sees another's."""
    playground_redis().flushdb()
    yield
    playground_redis().flushdb()


@pytest.fixture
def release(db):
    return ReleaseFactory(slug="opt-1-3b", name="OPT-1.3B")


@pytest.fixture
def researcher(release):
    user = UserFactory()
    grant_for(user, release)
    return user


@pytest.fixture
def researcher_client(researcher):
    client = Client()
    client.force_login(researcher)
    return client




@pytest.fixture
def reviewer_client(reviewer):
    client = Client()
    log_in_with_totp(client, reviewer)
    return client


def heartbeat(release, worker_id: str = "gpu-a:101:opt", *, draining: bool = False) -> dict:
    """A worker's heartbeat as the worker writes it (``WorkerRuntime.heartbeat``)."""
    beat = {"worker": worker_id, "release": release.slug, "tp": 2, "device": "cuda", "dtype": "bfloat16",
            "max_batch": 16, "jobs_in_flight": 1, "tokens_per_second": 41.5, "tokens_total": 12345,
            "load_seconds": 7.25, "uptime_seconds": 600, "draining": draining, "at": timezone.now().isoformat()}
    client = playground_redis()
    client.set(streams.worker_key(worker_id), json.dumps(beat), ex=60)
    client.sadd(streams.workers_index_key(release.slug), worker_id)
    return beat


def job_of(user, release, **fields) -> PromptJob:
    grant = Grant.objects.filter(user=user, release=release).first()
    values = dict(source=PromptJob.Source.PAGE, status=PromptJob.Status.SUCCEEDED, params=PARAMS, seed=1234,
                  prompts=["Hello"], prompt_ids=[[2, 31414]], prompt_tokens=2, completion_tokens=2, tokens_charged=4,
                  outputs=[{"index": 0, "prompt_index": 0, "text": " world, again", "token_ids": [232, 6],
                            "finish_reason": "length", "logprobs": None}],
                  started_at=timezone.now(), first_token_at=timezone.now(), finished_at=timezone.now(),
                  finish_reason="length")
    values.update(fields)
    return PromptJob.objects.create(user=user, grant=grant, licence_version=grant.licence_version, release=release,
                                    **values)


def post_json(client, url, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data, content_type="application/json", **extra)


def input_tag(page: str, name: str) -> str:
    return re.search(rf'<input[^>]* name="{name}"[^>]*>', page).group(0)


def html(response) -> str:
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


# -- who may open what ------------------------------------------------------------------------------

def test_visitors_are_sent_to_sign_in_and_the_event_stream_answers_401(client, researcher, release):
    job = job_of(researcher, release)
    flag = OutputFlag.objects.create(job=job, flagged_by=researcher, category="other")
    gets = [reverse("inference_worker:playground"), reverse("inference_worker:history"),
            reverse("inference_worker:job_detail", args=[job.pk]), reverse("inference_worker:moderation"),
            reverse("inference_worker:workers"), reverse("inference_worker:user_limits", args=[researcher.pk])]
    posts = [reverse("inference_worker:token_count"), reverse("inference_worker:job_create"),
             reverse("inference_worker:job_cancel", args=[job.pk]), reverse("inference_worker:job_flag", args=[job.pk]),
             reverse("inference_worker:moderation_resolve", args=[flag.pk])]
    for url in gets:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("account_login")), url
    for url in posts:
        response = post_json(client, url, {})
        assert response.status_code == 302 and response["Location"].startswith(reverse("account_login")), url

    events = client.get(reverse("inference_worker:job_events", args=[job.pk]))
    assert events.status_code == 401
    assert events.json()["error"]["message"] == "Sign in first."
    assert OutputFlag.objects.get(pk=flag.pk).status == "open"
    assert PromptJob.objects.get(pk=job.pk).status == "succeeded"


def test_another_researchers_job_is_not_found(researcher, release):
    job = job_of(researcher, release, outputs=[{"index": 0, "prompt_index": 0, "text": "private words",
                                                "token_ids": [1], "finish_reason": "stop", "logprobs": None}])
    other = UserFactory()
    grant_for(other, release)
    client = Client()
    client.force_login(other)

    assert client.get(reverse("inference_worker:job_detail", args=[job.pk])).status_code == 404
    assert client.get(reverse("inference_worker:job_events", args=[job.pk])).status_code == 404
    assert client.post(reverse("inference_worker:job_cancel", args=[job.pk])).status_code == 404
    assert client.post(reverse("inference_worker:job_flag", args=[job.pk]), {"category": "other"}).status_code == 404
    assert client.get(reverse("inference_worker:playground"), {"rerun": job.pk}).status_code == 404
    assert "private words" not in html(client.get(reverse("inference_worker:history"), {"q": "private"}))
    assert not OutputFlag.objects.exists()


def test_staff_pages_need_a_reviewer_who_has_confirmed_two_factor(researcher_client, reviewer_client, researcher):
    urls = [reverse("inference_worker:moderation"), reverse("inference_worker:workers"),
            reverse("inference_worker:user_limits", args=[researcher.pk])]
    staff_without_totp = Client()
    staff_without_totp.force_login(StaffFactory())
    for url in urls:
        assert researcher_client.get(url).status_code == 403, url
        response = staff_without_totp.get(url)
        assert response.status_code == 302 and response["Location"] == reverse("mfa_activate_totp"), url
        assert reviewer_client.get(url).status_code == 200, url


def test_the_review_queue_links_to_the_moderation_queue_and_the_workers(reviewer_client):
    page = html(reviewer_client.get(reverse("access:review_queue")))
    assert f'href="{reverse("inference_worker:moderation")}"' in page
    assert f'href="{reverse("inference_worker:workers")}"' in page


# -- the playground page ------------------------------------------------------------------------------

def test_a_researcher_without_a_grant_is_told_to_apply_first(client):
    client.force_login(UserFactory())
    page = html(client.get(reverse("inference_worker:playground")))
    assert "You need approved access first" in page
    assert f'href="{reverse("access:apply")}"' in page and f'href="{reverse("access:my_access")}"' in page
    assert 'id="playground-form"' not in page


def test_the_page_has_the_form_the_retention_notice_and_the_limits(researcher_client, release, settings):
    settings.PLAYGROUND_RETENTION_DAYS = 30
    heartbeat(release)
    page = html(researcher_client.get(reverse("inference_worker:playground")))
    assert "Prompts and outputs are kept for safety research and deleted after 30 days" in page
    assert "Flagged ones are kept until their flag is resolved" in page
    assert 'id="playground-form"' in page and f'<option value="{release.slug}"' in page
    assert 'data-workers="1"' in page and "no worker is serving" not in page
    assert '<button type="submit" id="pg-submit">Generate</button>' in page
    assert f"0 / {settings.PLAYGROUND_DAILY_TOKENS}</strong> tokens used" in page
    assert f'max="{settings.PLAYGROUND_MAX_NEW_TOKENS}"' in page
    assert f'data-token-count-url="{reverse("inference_worker:token_count")}"' in page
    assert 'src="/static/inference_worker/playground.' in page and "defer" in page
    assert f'href="{reverse("inference_worker:history")}"' in page
    duplicates = [name for name, count in Counter(re.findall(r' id="([^"]+)"', page)).items() if count > 1]
    assert not duplicates, f"the page's script finds its elements by id: {duplicates}"
    for label_for in re.findall(r'<label for="([^"]+)"', page):
        assert f' id="{label_for}"' in page, label_for


def test_a_release_whose_licence_must_be_accepted_disables_the_form(release):
    user = UserFactory()
    grant_for(user, release, signed=False)
    heartbeat(release)
    client = Client()
    client.force_login(user)
    page = html(client.get(reverse("inference_worker:playground")))
    assert "accept version 1 of its licence before you prompt it" in page
    assert f'href="{reverse("access:licence_accept", args=[release.slug])}"' in page
    assert '<fieldset id="pg-inputs" class="bare" disabled>' in page
    assert '<button type="submit" id="pg-submit" disabled>' in page


def test_a_release_with_no_live_worker_says_so_and_disables_submit(researcher_client, release):
    heartbeat(release, draining=True)  # a draining worker takes no new requests
    page = html(researcher_client.get(reverse("inference_worker:playground")))
    assert "OPT-1.3B: no worker is serving this model right now" in page
    assert 'data-workers="0"' in page
    assert '<button type="submit" id="pg-submit" disabled>' in page
    assert '<fieldset id="pg-inputs" class="bare">' in page, "the prompt can still be written"


def test_rerun_fills_the_form_with_the_earlier_prompt_parameters_and_seed(researcher_client, researcher, release):
    heartbeat(release)
    job = job_of(researcher, release, prompts=["Once upon a time"], seed=987654321,
                 params={**PARAMS, "seed": 987654321, "max_tokens": 33, "temperature": 0.25, "top_p": 0.5,
                         "top_k": 7, "n": 2, "stop": ["END", "###"]})
    page = html(researcher_client.get(reverse("inference_worker:playground"), {"rerun": job.pk}))
    assert 'aria-describedby="pg-token-count">Once upon a time</textarea>' in page
    for name, value in [("max_tokens", "33"), ("temperature", "0.25"), ("top_p", "0.5"), ("top_k", "7"), ("n", "2"),
                        ("seed", "987654321")]:
        assert f'value="{value}"' in input_tag(page, name), name
    assert '<textarea id="pg-stop-sequences" name="stop" rows="2">END&#10;###</textarea>' in page
    assert f'<option value="{release.slug}" data-context-length="" data-workers="1" selected>' in page


# -- bad input --------------------------------------------------------------------------------------

def test_token_count_refuses_a_bad_body_with_a_clear_message(researcher_client, release):
    url = reverse("inference_worker:token_count")
    for body in ["not json", {"model": release.slug}, {"model": 3, "prompt": "x"}, [1, 2]]:
        response = post_json(researcher_client, url, body)
        assert response.status_code == 400, body
        assert response.json()["error"]["message"] == 'Send {"model": "<release>", "prompt": "<text>"}.'
    unknown = post_json(researcher_client, url, {"model": "opt-nope", "prompt": "Hello"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "model"
    assert "does not exist or you do not have access" in unknown.json()["error"]["message"]


def test_job_create_answers_400_naming_the_bad_parameter(researcher_client, release):
    url = reverse("inference_worker:job_create")
    not_json = post_json(researcher_client, url, "{not json")
    assert not_json.status_code == 400
    assert not_json.json() == {"error": {"message": "The body must be JSON.", "type": "invalid_request_error",
                                         "param": None, "code": None}}

    hot = post_json(researcher_client, url, {"model": release.slug, "prompt": "Hello", "temperature": 5})
    assert hot.status_code == 400
    assert hot.json()["error"]["param"] == "temperature"
    assert hot.json()["error"]["message"] == "'temperature' must be a number from 0 to 2; got 5."

    stops = post_json(researcher_client, url, {"model": release.slug, "prompt": "Hello", "stop": list("abcde")})
    assert stops.status_code == 400 and stops.json()["error"]["param"] == "stop"

    unknown = post_json(researcher_client, url, {"model": release.slug, "prompt": "Hello", "colour": "blue"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
    assert researcher_client.get(url).status_code == 405
    assert not PromptJob.objects.exists()


def test_job_create_without_a_live_worker_is_a_503_with_retry_after(researcher_client, release):
    response = post_json(researcher_client, reverse("inference_worker:job_create"),
                         {"model": release.slug, "prompt": "Hello", "max_tokens": 4})
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json()["error"]["message"] == f"No worker is serving '{release.slug}' right now; try again later."


def test_job_create_with_a_licence_to_accept_is_a_403_that_says_where(release):
    user = UserFactory()
    grant_for(user, release, signed=False)
    heartbeat(release)
    client = Client()
    client.force_login(user)
    response = post_json(client, reverse("inference_worker:job_create"), {"model": release.slug, "prompt": "Hello"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "licence_required"
    assert reverse("access:licence_accept", args=[release.slug]) in response.json()["error"]["message"]


def test_the_page_endpoints_need_the_csrf_token(researcher, release):
    client = Client(enforce_csrf_checks=True)
    client.force_login(researcher)
    for url in [reverse("inference_worker:token_count"), reverse("inference_worker:job_create")]:
        assert post_json(client, url, {"model": release.slug, "prompt": "Hello"}).status_code == 403, url


# -- job page and history ---------------------------------------------------------------------------

def test_the_job_page_shows_prompt_parameters_outputs_times_and_rerun(researcher_client, researcher, release):
    job = job_of(researcher, release, prompts=["The capital of France"], seed=55,
                 params={**PARAMS, "seed": 55, "stop": ["\n\n"], "n": 2}, completion_tokens=4, tokens_charged=8,
                 outputs=[{"index": 0, "prompt_index": 0, "text": " is Paris.", "token_ids": [1, 2],
                           "finish_reason": "stop", "logprobs": None},
                          {"index": 1, "prompt_index": 0, "text": " is big.", "token_ids": [3, 4],
                           "finish_reason": "length", "logprobs": None}])
    page = html(researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])))
    assert '<pre class="output">The capital of France</pre>' in page
    assert '<pre class="output"> is Paris.</pre>' in page and '<pre class="output"> is big.</pre>' in page
    assert "finish reason: stop" in page and "finish reason: length" in page
    assert "<dt>Seed</dt><dd><code>55</code></dd>" in page
    assert '&quot;seed&quot;: 55' in page, "all the parameters, as JSON"
    assert f'href="{reverse("inference_worker:playground")}?rerun={job.pk}">Re-run with the same seed</a>' in page
    assert "2 prompt + 4 completion; 8 counted against your daily limit" in page
    assert page.count('name="choice_index"') == 2 and 'value="1"' in page
    assert "Harmful or dangerous content" in page


def test_an_open_job_shows_its_queue_position_and_follows_its_events(researcher_client, researcher, release):
    job = job_of(researcher, release, status=PromptJob.Status.QUEUED, outputs=[], started_at=None,
                 first_token_at=None, finished_at=None, finish_reason="")
    page = html(researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])))
    assert "This request is still queued: position 1 in the queue" in page
    assert f'data-follow-events="{reverse("inference_worker:job_events", args=[job.pk])}"' in page
    assert "No output yet." in page


def test_a_failed_job_shows_its_error(researcher_client, researcher, release):
    message = "The worker generating this job was lost (no heartbeat); run it again with the same seed."
    job = job_of(researcher, release, status=PromptJob.Status.FAILED, outputs=[], error_code="worker_lost",
                 error_message=message)
    page = html(researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])))
    assert message in page
    assert "(worker_lost)" in page


def test_texts_deleted_by_retention_are_explained(researcher_client, researcher, release):
    job = job_of(researcher, release, prompts=[], prompt_ids=[], outputs=[], texts_deleted_at=timezone.now())
    page = html(researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])))
    assert "were deleted on" in page and "at the end of the retention period" in page
    assert "Re-run with the same seed" not in page
    assert "deleted after the retention period" in html(researcher_client.get(reverse("inference_worker:history")))


def test_history_searches_and_pages_the_researchers_own_jobs(researcher_client, researcher, release):
    for i in range(27):
        job_of(researcher, release, prompts=[f"Prompt number {i} about owls"])
    job_of(researcher, release, prompts=["Something about cats"])
    other = UserFactory()
    grant_for(other, release)
    job_of(other, release, prompts=["Not mine, about owls"])

    first = html(researcher_client.get(reverse("inference_worker:history")))
    assert "28 requests" in first and "Page 1 of 2" in first and 'href="?q=&amp;page=2"' in first
    owls = html(researcher_client.get(reverse("inference_worker:history"), {"q": "owls"}))
    assert "27 requests matching “owls”" in owls and "cats" not in owls
    assert 'href="?q=owls&amp;page=2"' in owls
    cats = html(researcher_client.get(reverse("inference_worker:history"), {"q": "cats"}))
    [job] = PromptJob.objects.filter(prompts__icontains="cats")
    assert f'href="{reverse("inference_worker:job_detail", args=[job.pk])}"' in cats
    assert f'?rerun={job.pk}">Re-run</a>' in cats


def test_model_output_and_prompts_are_shown_as_text(researcher_client, researcher, release, reviewer_client):
    job = job_of(researcher, release, prompts=[SCRIPT], outputs=[
        {"index": 0, "prompt_index": 0, "text": SCRIPT, "token_ids": [1], "finish_reason": "stop", "logprobs": None}])
    OutputFlag.objects.create(job=job, flagged_by=researcher, category="harmful", comment=SCRIPT)
    pages = [researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])),
             researcher_client.get(reverse("inference_worker:history")),
             researcher_client.get(reverse("inference_worker:playground")),
             reviewer_client.get(reverse("inference_worker:moderation"))]
    for response in pages:
        page = html(response)
        assert ESCAPED in page, response.request["PATH_INFO"]
        assert SCRIPT not in page, response.request["PATH_INFO"]


# -- flags and moderation ---------------------------------------------------------------------------

def test_a_researcher_flags_an_output_and_staff_dismiss_it(researcher_client, researcher, release, reviewer_client,
                                                          reviewer):
    job = job_of(researcher, release)
    response = researcher_client.post(reverse("inference_worker:job_flag", args=[job.pk]),
                                      {"category": "misinformation", "comment": "Wrong capital.", "choice_index": "0"},
                                      follow=True)
    page = html(response)
    assert "Thank you: the output was flagged for the moderation team." in page
    assert "False or misleading information" in page and "Wrong capital." in page
    flag = OutputFlag.objects.get(job=job)
    assert (flag.category, flag.choice_index, flag.flagged_by, flag.status) == ("misinformation", 0, researcher, "open")

    queue = html(reviewer_client.get(reverse("inference_worker:moderation")))
    assert f"Flag #{flag.pk}: False or misleading information" in queue
    assert researcher.email in queue and "Wrong capital." in queue and " world, again" in queue
    assert f'href="{reverse("inference_worker:user_limits", args=[researcher.pk])}"' in queue
    assert f'href="{reverse("admin:access_grant_change", args=[job.grant_id])}"' in queue, "no application: the admin"
    assert f"<tr><td>{release.slug}</td><td>misinformation</td><td>1</td><td>1</td></tr>" in queue

    response = reviewer_client.post(reverse("inference_worker:moderation_resolve", args=[flag.pk]),
                                    {"status": "dismissed", "note": ""})
    assert response.status_code == 302
    flag.refresh_from_db()
    assert (flag.status, flag.resolved_by) == ("dismissed", reviewer)
    assert AuditEvent.objects.filter(action="playground.flag_dismissed", actor=reviewer,
                                     target_id=str(flag.pk)).exists()
    assert f"Flag #{flag.pk}" not in html(reviewer_client.get(reverse("inference_worker:moderation")))
    resolved = html(reviewer_client.get(reverse("inference_worker:moderation"), {"status": "dismissed"}))
    assert f"Flag #{flag.pk}" in resolved and f"Dismissed by {reviewer.email}" in resolved
    assert "Dismissed" in html(researcher_client.get(reverse("inference_worker:job_detail", args=[job.pk])))


def test_noting_a_flag_needs_a_note_and_is_audited(release, reviewer_client, reviewer):
    user = UserFactory()
    application = apply(user, release)
    Grant.objects.filter(pk=grant_for(user, release).pk).update(application=application)
    job = job_of(user, release)
    flag = OutputFlag.objects.create(job=job, flagged_by=user, category="hate")
    queue = html(reviewer_client.get(reverse("inference_worker:moderation")))
    assert f'href="{reverse("access:review_detail", args=[application.pk])}"' in queue

    url = reverse("inference_worker:moderation_resolve", args=[flag.pk])
    page = html(reviewer_client.post(url, {"status": "noted", "note": "  "}, follow=True))
    assert "Write the note." in page
    assert OutputFlag.objects.get(pk=flag.pk).status == "open"

    reviewer_client.post(url, {"status": "noted", "note": "Known failure mode; shared with the safety team."})
    flag.refresh_from_db()
    assert flag.status == "noted" and flag.staff_note == "Known failure mode; shared with the safety team."
    event = AuditEvent.objects.get(action="playground.flag_noted", target_id=str(flag.pk))
    assert event.actor == reviewer and event.reason == "Known failure mode; shared with the safety team."


def test_a_researcher_cannot_flag_with_an_unknown_category(researcher_client, researcher, release):
    job = job_of(researcher, release)
    page = html(researcher_client.post(reverse("inference_worker:job_flag", args=[job.pk]),
                                       {"category": "boring", "choice_index": "0"}, follow=True))
    assert "Choose one of the categories." in page
    assert not OutputFlag.objects.exists()


# -- staff: workers and limits ----------------------------------------------------------------------

def test_the_workers_page_lists_live_workers(reviewer_client, release):
    assert "No live workers." in html(reviewer_client.get(reverse("inference_worker:workers")))
    heartbeat(release, "gpu-a:101:opt")
    heartbeat(release, "gpu-b:202:opt", draining=True)
    page = html(reviewer_client.get(reverse("inference_worker:workers")))
    assert "<code>gpu-a:101:opt</code>" in page and "<code>gpu-b:202:opt</code>" in page
    assert "Serving" in page and "Draining" in page and "41.5" in page and "12345" in page
    assert "No live workers." not in page


def test_staff_set_a_users_limit_and_it_takes_effect(reviewer_client, reviewer, researcher_client, researcher, release):
    url = reverse("inference_worker:user_limits", args=[researcher.pk])
    page = html(reviewer_client.get(url))
    assert f'placeholder="{settings.PLAYGROUND_MAX_NEW_TOKENS}"' in page
    assert f"In effect: <strong>{settings.PLAYGROUND_MAX_NEW_TOKENS}</strong> (the default)" in page

    bad = reviewer_client.post(url, {"max_new_tokens": "lots"})
    assert bad.status_code == 400
    assert "Give a whole number, or leave it empty for the default." in bad.content.decode()
    assert 'value="lots"' in bad.content.decode()

    response = reviewer_client.post(url, {"max_new_tokens": "100", "daily_tokens": "5000", "max_prompt_tokens": ""})
    assert response.status_code == 302
    page = html(reviewer_client.get(url))
    assert f"In effect: <strong>100</strong> (default {settings.PLAYGROUND_MAX_NEW_TOKENS})" in page
    assert 'name="max_new_tokens" id="limit-max_new_tokens" value="100"' in page
    assert AuditEvent.objects.filter(action="playground.limits", actor=reviewer).exists()

    playground = html(researcher_client.get(reverse("inference_worker:playground")))
    assert "up to 100 new tokens per output" in playground and "0 / 5000</strong> tokens used" in playground
    assert 'max="100"' in input_tag(playground, "max_tokens")


def test_text_and_numbers_the_database_cannot_hold_are_refused_not_500(researcher_client, researcher, release,
                                                                       reviewer_client):
    job = job_of(researcher, release)
    flag_url = reverse("inference_worker:job_flag", args=[job.pk])
    refused = researcher_client.post(flag_url, {"category": "hate", "comment": "a\x00b"})
    assert refused.status_code == 400 and "contains a NUL character" in refused.content.decode()
    page = html(researcher_client.post(flag_url, {"category": "hate", "comment": "x" * 5001}, follow=True))
    assert "Keep this to at most 5,000 characters (you wrote 5,001)." in page
    assert not OutputFlag.objects.exists(), "nothing is cut short or stored half"

    flag = OutputFlag.objects.create(job=job, flagged_by=researcher, category="hate")
    resolve_url = reverse("inference_worker:moderation_resolve", args=[flag.pk])
    refused = reviewer_client.post(resolve_url, {"status": "noted", "note": "\x00"})
    assert refused.status_code == 400 and "contains a NUL character" in refused.content.decode()
    assert OutputFlag.objects.get(pk=flag.pk).status == "open"

    limits_url = reverse("inference_worker:user_limits", args=[researcher.pk])
    bad = reviewer_client.post(limits_url, {"daily_tokens": str(10**12)})
    assert bad.status_code == 400 and "Give a whole number from 0 to 2147483647" in bad.content.decode()
