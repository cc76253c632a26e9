"""End to end in a real browser with a real Celery worker: apply, automatic approval, a reviewer's
keyboard-driven rejection with a reason, and the e-mails the applicant receives."""

import time

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.db import connections

from access.models import Application
from artifacts.models import Release
from tests.access.conftest import INTENDED_USE
from tests.access.factories import ReleaseFactory
from tests.browser import celery_worker, chromium_page, tasks_sent_to_the_broker, wait_for_mail
from tests.conftest import totp_code
from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password:").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_load_state()


def wait_for_status(application_filter: dict, status: str, timeout: float = 60) -> Application:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        application = Application.objects.filter(**application_filter).first()
        if application is not None and application.status == status:
            return application
        time.sleep(0.2)
    raise AssertionError(f"No application {application_filter} reached {status}")


def test_apply_get_approved_automatically_and_rejected_with_a_reason(live_server, tmp_path):
    ReleaseFactory(slug="opt-125m", name="OPT-125M", approval_policy=Release.ApprovalPolicy.AUTOMATIC)
    ReleaseFactory(slug="opt-175b", name="OPT-175B")
    researcher = UserFactory(email="grace@uni.example.edu")
    reviewer = StaffFactory()
    secret = generate_totp_secret()
    TOTP.activate(reviewer, secret)
    mail_dir = tmp_path / "mail"

    with tasks_sent_to_the_broker(), celery_worker(mail_dir, tmp_path / "worker.log"), chromium_page() as page:
        sign_in(page, live_server.url, researcher.email)
        page.goto(f"{live_server.url}/apply/")
        page.get_by_label("OPT-125M").check()
        page.get_by_label("OPT-175B").check()
        page.get_by_label("Full legal name:", exact=True).fill("Grace Hopper")
        page.get_by_label("Institution:", exact=True).fill("Example University")
        page.get_by_label("Role:", exact=True).select_option("researcher")
        page.get_by_label("Country where you work").select_option("US")
        page.get_by_label("Intended research use").fill(INTENDED_USE)
        page.get_by_label("I have read and accept the licence").check()
        page.get_by_label("Signature: type your full legal name").fill("Grace Hopper")
        page.get_by_role("button", name="Submit application").click()
        page.wait_for_load_state()
        assert "Application submitted" in page.content()

        automatic = wait_for_status({"release__slug": "opt-125m"}, "approved")
        wait_for_mail(mail_dir, "Approved: your access to OPT-125M")
        page.goto(f"{live_server.url}/access/applications/{automatic.pk}/")
        assert "Approved automatically" in page.content()

        manual = Application.objects.get(release__slug="opt-175b")
        page.goto(f"{live_server.url}/access/applications/{manual.pk}/")
        assert "number 1" in page.content()

        page.get_by_role("button", name="Sign out").click()
        sign_in(page, live_server.url, reviewer.email)
        page.get_by_label("Code").fill(totp_code(secret))
        page.get_by_role("button", name="Sign In").click()
        page.wait_for_load_state()
        page.goto(f"{live_server.url}/review/")
        assert "Grace Hopper" in page.content()
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/review/applications/{manual.pk}/")
        assert f"#{manual.pk} Grace Hopper" in page.content()
        page.keyboard.press("r")  # choose "reject" and focus the reason
        page.keyboard.type("Please apply with your institutional project page.")
        page.get_by_role("button", name="Record decision").click()
        page.wait_for_url("**/review/")
        assert f"Application #{manual.pk} rejected." in page.content()

        rejection = wait_for_mail(mail_dir, "Please apply with your institutional project page.")
        assert "grace@uni.example.edu" in rejection
        assert Application.objects.get(pk=manual.pk).status == "rejected"
        # Inside Playwright's event loop the ORM used a connection of its own: close it before teardown
        # drops the test database.
        connections.close_all()
