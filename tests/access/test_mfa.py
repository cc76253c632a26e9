"""Two-factor authentication: optional for researchers, mandatory for staff functions."""

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY
from django.urls import reverse

from tests.conftest import totp_code
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def log_in(client, user):
    return client.post(reverse("account_login"), {"login": user.email, "password": DEFAULT_PASSWORD})


def activate_totp(client) -> str:
    """Set up an authenticator app the way a person does, re-entering the password first."""
    response = client.get(reverse("mfa_activate_totp"))
    if response.status_code == 302 and response["Location"].startswith(reverse("account_reauthenticate")):
        client.post(response["Location"], {"password": DEFAULT_PASSWORD})
        client.get(reverse("mfa_activate_totp"))
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302, response.content.decode()
    return secret


def test_staff_without_two_factor_are_sent_to_set_it_up_before_admin(client, staff):
    log_in(client, staff)

    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_activate_totp")
    page = client.get(response["Location"], follow=True)
    assert "must set up two-factor authentication" in page.content.decode()


def test_staff_api_calls_without_two_factor_get_a_403_that_says_why(client, staff):
    log_in(client, staff)
    response = client.get("/api/v1/review/applications/")
    assert response.status_code == 403
    assert response.json()["code"] == "mfa_setup"


@pytest.mark.django_db(transaction=True)  # allauth announces the activation on commit, within the request
def test_staff_set_up_with_one_password_and_one_code_and_go_on_where_they_were_going(client, staff):
    log_in(client, staff)
    assert client.get("/review/")["Location"] == reverse("mfa_activate_totp")
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200, "the password typed at sign-in a moment ago is not asked for again"
    secret = client.session[SECRET_SESSION_KEY]
    assert f'<code class="token" id="totp-secret">{secret}</code>' in page.content.decode()
    assert 'data-copy="totp-secret"' in page.content.decode()
    client.get(reverse("mfa_activate_totp"))
    assert client.session[SECRET_SESSION_KEY] == secret, "a reload keeps the secret the app has scanned"

    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=staff, type=Authenticator.Type.TOTP).exists()
    codes = client.get(response["Location"], follow=True).content.decode()
    assert 'href="/review/">I have saved my codes: continue to /review/' in codes
    # The code that activated the app proved it in this session: no second code.
    assert client.get("/review/").status_code == 200
    assert client.get("/admin/").status_code == 200


def test_a_sign_in_long_ago_still_asks_for_the_password_before_setting_up(client, staff, monkeypatch):
    import time

    log_in(client, staff)
    later = time.time() + 301
    monkeypatch.setattr(time, "time", lambda: later)
    response = client.get(reverse("mfa_activate_totp"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_reauthenticate"))


def test_staff_login_with_two_factor_asks_for_the_code_then_opens_admin(client, staff):
    log_in(client, staff)
    secret = activate_totp(client)
    client.post(reverse("account_logout"))

    response = log_in(client, staff)
    assert response["Location"] == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session
    wrong = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert "Incorrect code" in wrong.content.decode()
    client.post(reverse("mfa_authenticate"), {"code": totp_code(secret, steps_ahead=-1)})
    assert int(client.session["_auth_user_id"]) == staff.pk
    assert client.get("/admin/").status_code == 200


def test_researchers_use_the_site_without_two_factor_and_may_turn_it_on(client, user):
    log_in(client, user)
    assert client.get(reverse("home")).status_code == 200
    assert client.get(reverse("mfa_index")).status_code == 200
    activate_totp(client)
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def test_researchers_cannot_enter_admin(client, user):
    log_in(client, user)
    assert client.get("/admin/", follow=True).status_code == 403
