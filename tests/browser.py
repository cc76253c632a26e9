"""Real services for end-to-end tests: a Celery worker process and headless chromium."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from playwright.sync_api import sync_playwright

from portal.celery import app as celery_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def database_url_of_the_test_db() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextlib.contextmanager
def celery_worker(mail_dir: Path, log_path: Path):
    """A real `celery worker` on the test broker, using the test database, writing mail to files."""
    env = dict(os.environ,
               DATABASE_URL=database_url_of_the_test_db(),
               CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
               CELERY_TASK_ALWAYS_EAGER="0",
               EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
               EMAIL_FILE_PATH=str(mail_dir))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "portal", "worker", "--pool=solo",
             "--queues=default", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            assert process.poll() is None, f"celery worker exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"celery worker did not start:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def chromium_page():
    """A headless chromium page; the test fails if the browser reports a Content-Security-Policy violation."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            violations = []
            page.on("console", lambda message: violations.append(message.text)
                    if "Content Security Policy" in message.text else None)
            yield page
            assert not violations, violations  # every page works under the Content-Security-Policy
        finally:
            browser.close()


def wait_for_mail(mail_dir: Path, containing: str, timeout: float = 60) -> str:
    """The text of the first e-mail file in ``mail_dir`` that contains ``containing``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.log")):
            text = path.read_text()
            if containing in text:
                return text
        time.sleep(0.2)
    raise AssertionError(f"No e-mail containing {containing!r} arrived in {timeout} s")


@contextlib.contextmanager
def tasks_sent_to_the_broker():
    """Send tasks to the real broker instead of running them inline, for the duration."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    # Playwright's sync API runs an event loop in this thread; the ORM here stays synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = eager
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
