"""The demo that `make run` seeds: logins printed once, a release, a pending application."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from access.models import Application

pytestmark = pytest.mark.django_db


def test_seed_demo_prints_working_logins_and_leaves_an_application_for_review(settings, tmp_path, capsys):
    settings.STORAGE_BACKEND, settings.STORAGE_LOCAL_ROOT = "local", tmp_path
    call_command("make_demo_release")
    call_command("seed_demo")

    output = capsys.readouterr().out
    logins = dict(re.findall(r"e-mail:\s+(\S+)\s+password:\s+(\S+)", output))
    users = get_user_model().objects
    assert users.get(email="reviewer@gatehouse.example").is_staff
    for email, password in logins.items():
        assert users.get(email=email).check_password(password)
    application = Application.objects.get(user__email="researcher@gatehouse.example")
    assert application.release.slug == "opt-demo" and application.status != "draft"
    assert application.licence_acceptance.ip_address == "127.0.0.1", "the seeded signature has an address"

    call_command("seed_demo")  # again: new passwords, no second application
    new_logins = dict(re.findall(r"e-mail:\s+(\S+)\s+password:\s+(\S+)", capsys.readouterr().out))
    assert new_logins.keys() == logins.keys() and new_logins != logins
    assert Application.objects.count() == 1
