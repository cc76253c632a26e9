import re
import time

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core.cache import cache

from tests.factories import StaffFactory, UserFactory


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
