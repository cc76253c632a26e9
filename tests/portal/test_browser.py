"""A new researcher signs up in a real browser; a real Celery worker delivers the e-mail."""

import re

import pytest

from tests.browser import celery_worker, chromium_page, tasks_sent_to_the_broker, wait_for_mail
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_verify_and_sign_in_in_a_browser(live_server, tmp_path):
    mail_dir = tmp_path / "mail"
    with tasks_sent_to_the_broker(), celery_worker(mail_dir, tmp_path / "worker.log"), chromium_page() as page:
        page.goto(f"{live_server.url}/accounts/signup/")
        page.get_by_label("E-mail address").fill("grace@uni.example.edu")
        page.get_by_label("Password:", exact=True).fill(DEFAULT_PASSWORD)
        page.get_by_label("Password again").fill(DEFAULT_PASSWORD)
        page.get_by_role("button", name="Sign Up").click()
        page.wait_for_load_state()
        assert "Verify your e-mail address" in page.content()

        mail = wait_for_mail(mail_dir, "grace@uni.example.edu")
        link = re.search(r"(http://\S+/accounts/confirm-email/\S+)", mail).group(1)
        page.goto(link)
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_load_state()
        assert "Signed in as" in page.content(), "confirming in the browser that signed up signs in"
        assert page.locator("header").get_by_text("grace@uni.example.edu").is_visible()
