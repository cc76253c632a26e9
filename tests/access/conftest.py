"""Fixtures of the access tests: releases, reviewers with two-factor, applications made the real way."""

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth.models import Group
from django.urls import reverse

from access.models import Application
from access.services.applications import application_create
from artifacts.models import Release
from tests.access.factories import InstitutionFactory, ReleaseFactory
from tests.conftest import totp_code
from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

INTENDED_USE = ("We study how large language models memorise rare facts from pre-training data. We will probe "
                "OPT checkpoints with controlled prompts, measure extraction rates against the data frequency, and "
                "publish the results and code openly at a peer-reviewed venue, without any commercial use.")


def profile(**overrides) -> dict:
    data = {"legal_name": "Ada Lovelace", "institution_name": "Example University", "institution_ror_id": "",
            "role": "researcher", "sector": "academia", "country": "GB", "orcid": "0000-0002-1825-0097",
            "publications": "https://example.edu/~ada", "intended_use": INTENDED_USE,
            "supervisor_name": "", "supervisor_email": ""}
    data.update(overrides)
    return data


def apply(user, release, *, submit=True, **overrides) -> Application:
    """Apply through the service, the way the form and the API do."""
    fields = profile(**overrides)
    [application] = application_create(user=user, releases=[release], fields=fields, submit=submit,
                                       accept_licence=True, signature_name=fields["legal_name"],
                                       ip_address="192.0.2.10", user_agent="pytest")
    return application


@pytest.fixture
def institution(db):
    return InstitutionFactory()


@pytest.fixture
def release(db):
    """The 175B release: manual review."""
    return ReleaseFactory(slug="opt-175b", name="OPT-175B")


@pytest.fixture
def open_release(db):
    """An open size: automatic approval when every signal is green."""
    return ReleaseFactory(slug="opt-125m", name="OPT-125M", parameter_count=125_000_000,
                          approval_policy=Release.ApprovalPolicy.AUTOMATIC)


@pytest.fixture
def reviewer(db):
    """Staff in the Reviewers group (not superuser), with an authenticator app."""
    user = StaffFactory(is_superuser=False)
    user.groups.add(Group.objects.get(name="Reviewers"))
    user.totp_secret = generate_totp_secret()
    TOTP.activate(user, user.totp_secret)
    return user


def log_in_with_totp(client, user) -> None:
    response = client.post(reverse("account_login"), {"login": user.email, "password": DEFAULT_PASSWORD})
    assert response["Location"] == reverse("mfa_authenticate")
    response = client.post(reverse("mfa_authenticate"), {"code": totp_code(user.totp_secret)})
    assert response.status_code == 302, response.content.decode()


@pytest.fixture
def reviewer_client(client, reviewer):
    log_in_with_totp(client, reviewer)
    return client


@pytest.fixture
def researcher(db):
    return UserFactory(first_name="Ada", last_name="Lovelace")


@pytest.fixture
def researcher_client(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Run after-commit work (Celery tasks run eagerly in tests) as a committed transaction would."""
    def runner():
        return django_capture_on_commit_callbacks(execute=True)
    return runner
