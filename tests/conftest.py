import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core.cache import cache

from tests.factories import StaffFactory, UserFactory

DATABASE_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences", "django_db_serialized_rollback"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After every test that used the database, the audit chain it left behind must verify.

    Run here, right after the test body, because fixture teardown would come after the test's
    transaction was rolled back. Tests that tamper on purpose are marked ``audit_tampering``.
    """
    result = yield
    uses_database = item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(item.fixturenames)
    if uses_database and not item.get_closest_marker("audit_tampering"):
        problems = _audit_problems()
        assert not problems, f"The test left a broken audit chain: {problems}"
    return result


def _audit_problems() -> list:
    from access.audit import audit_verify

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return audit_verify()[1]
    # Playwright's sync API keeps an event loop running in this thread (live-server tests, committed rows).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_audit_problems_in_thread).result()


def _audit_problems_in_thread() -> list:
    from django.db import connection

    from access.audit import audit_verify

    try:
        return audit_verify()[1]
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def fresh_cache():
    """Rate-limit counters and used TOTP codes live in Redis: start every test clean."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return StaffFactory()


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    """The code an authenticator app would show now (or ``steps_ahead`` 30 s steps later)."""
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30 + steps_ahead))


def link_in(body: str, path_fragment: str) -> str:
    """The first URL in an e-mail body whose path contains ``path_fragment``."""
    for url in re.findall(r"https?://\S+", body):
        if path_fragment in url:
            return url
    raise AssertionError(f"No link containing {path_fragment!r} in:\n{body}")


@pytest.fixture(autouse=True)
def unhashed_static_files_for_browser_tests(request, settings):
    """pytest-django's live server serves /static/ through the finders, which know no hashed names:
    browser tests link the plain names, so pages load their CSS and scripts (and the CSP is tried)."""
    if request.node.get_closest_marker("browser"):
        settings.STORAGES = {**settings.STORAGES,
                             "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
