"""The playground in a real browser over the whole streaming path: chromium, uvicorn, the broker, a
GPU-worker process on a tiny CPU model and the Redis stream back to the page."""

import re

import pytest
from django.db import connections
from playwright.sync_api import expect

from inference_worker.models import PlaygroundLimit, PromptJob
from inference_worker.release_model import release_model_info
from inference_worker.selectors import limits_for
from tests.access.test_browser import sign_in
from tests.artifacts.conftest import grant_for
from tests.browser import chromium_page, tasks_sent_to_the_broker
from tests.factories import UserFactory
from tests.inference_worker.playground import asgi_server, gpu_worker, release_from_checkpoint, reset_playground_redis

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STREAM_TIMEOUT_MS = 60_000


def test_type_submit_watch_it_stream_then_stop_a_long_one(playground_checkpoint, tmp_path):
    reset_playground_redis()
    release = release_from_checkpoint(playground_checkpoint)
    user = UserFactory()
    grant_for(user, release)
    context = release_model_info(release=release).max_positions
    long_job = min(context - 64, 1500)  # new tokens: seconds of generation, still running at Stop
    PlaygroundLimit.objects.create(user=user, max_new_tokens=long_job)
    shown_limit = min(context, limits_for(user=user).max_prompt_tokens)

    with (tasks_sent_to_the_broker(), gpu_worker(playground_checkpoint, tmp_path / "worker.log"),
          asgi_server(tmp_path / "web.log") as url, chromium_page() as page):
        try:
            use_the_playground(page, url, user, shown_limit=shown_limit, long_job=long_job, shots=tmp_path)
        finally:
            # Inside Playwright's event loop the ORM used a connection of its own: close it before
            # teardown drops the test database.
            connections.close_all()


def use_the_playground(page, url: str, user, *, shown_limit: int, long_job: int, shots) -> None:
    """Type, submit and watch a short job stream in; Stop a long one; flag its output on its page."""
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, url, user.email)
    page.goto(f"{url}/playground/")
    expect(page.get_by_text("deleted after 90 days")).to_be_visible()

    prompt = page.get_by_role("textbox", name="Prompt")
    prompt.press_sequentially("The quick brown", delay=20)
    count = page.locator("#pg-token-count")
    expect(count).to_have_text(re.compile(rf"^\d+ / {shown_limit} tokens"))
    short = int(count.text_content().split(" ")[0])
    prompt.press_sequentially(" fox jumps over the lazy dog.", delay=20)
    expect(count).not_to_have_text(re.compile(rf"^{short} / "))
    assert int(count.text_content().split(" ")[0]) > short, "the count follows the typing"

    page.get_by_label("Temperature").fill("5")
    page.get_by_role("button", name="Generate").click()
    refusal = "'temperature' must be a number from 0 to 2; got 5."
    expect(page.locator('[data-error-for="temperature"]')).to_have_text(refusal)
    expect(page.get_by_role("alert")).to_have_text(refusal)

    page.get_by_label("Max tokens").fill("16")
    page.get_by_label("Temperature").fill("0.8")
    page.get_by_label("Seed").fill("1234")
    page.get_by_label("Outputs (n)").fill("2")
    page.get_by_role("button", name="Generate").click()
    status = page.locator("#pg-status")
    expect(status).to_have_text(re.compile(r"^Status: succeeded\."), timeout=STREAM_TIMEOUT_MS)
    expect(page.locator('[data-error-for="temperature"]')).to_be_hidden()
    expect(page.locator("#pg-seed-used")).to_have_text("1234")
    expect(page.locator("#pg-ttft")).to_have_text(re.compile(r"^\d+\.\d\d s$"))
    expect(page.locator("#pg-rate")).to_have_text(re.compile(r"^\d+\.\d$"))
    job = PromptJob.objects.get(user=user)
    assert job.seed == 1234 and job.params["n"] == 2
    for output in job.outputs:
        shown = page.locator(f"#pg-output-{output['index']}").text_content()
        assert shown == output["text"] and shown, "each box holds exactly its streamed text, once"
    assert f"{job.prompt_tokens} prompt + {job.completion_tokens} completion tokens" in status.text_content()
    page.screenshot(path=shots / "playground-desktop.png", full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    page.screenshot(path=shots / "playground-390.png", full_page=True)

    page.get_by_label("Max tokens").fill(str(long_job))
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Outputs (n)").fill("1")
    first_job = page.locator("#pg-job-link").get_attribute("href")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-job-link")).not_to_have_attribute("href", first_job)
    expect(page.locator("#pg-ttft")).to_have_text(re.compile(r"^\d+\.\d\d s$"), timeout=STREAM_TIMEOUT_MS)
    page.get_by_role("button", name="Stop").click()
    expect(status).to_have_text(re.compile(r"^Status: cancelled\. Finish reason: cancelled\."),
                                timeout=STREAM_TIMEOUT_MS)
    expect(page.locator("#pg-output-0").locator("xpath=..")).to_contain_text("finish reason: cancelled")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    stopped = PromptJob.objects.filter(user=user).order_by("-queued_at").first()
    assert stopped.status == "cancelled" and stopped.completion_tokens < long_job
    shown = page.locator("#pg-output-0").text_content()
    assert stopped.outputs[0]["text"] == shown, "the streamed text, once, in order, with what a cancel flushed"
    page.screenshot(path=shots / "playground-stopped-390.png", full_page=True)

    page.get_by_role("link", name="Job page (flag an output)").click()
    page.wait_for_url(f"**/playground/jobs/{stopped.pk}/")
    expect(page.get_by_text("finish reason: cancelled")).to_be_visible()
    assert page.locator(".output-box pre.output").text_content() == stopped.outputs[0]["text"], "the stored text"
    page.get_by_text("Flag this output", exact=True).first.click()
    page.get_by_label("What is wrong with it?").select_option("misinformation")
    page.get_by_label("Comment for the moderation team (optional)").fill("Repeats itself.")
    page.get_by_role("button", name="Flag this output").click()
    expect(page.get_by_text("Thank you: the output was flagged for the moderation team.")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=shots / "job-390.png", full_page=True)
    assert stopped.flags.get().category == "misinformation"
