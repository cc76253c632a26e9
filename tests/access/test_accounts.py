"""Sign-up, e-mail verification, login, password reset and login rate limiting."""

from urllib.parse import urlparse

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.urls import reverse

from tests.conftest import link_in
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a much better passphrase 42"


def sign_up(client, capture, email="new.researcher@uni.example.edu"):
    with capture(execute=True):
        return client.post(
            reverse("account_signup"), {"email": email, "password1": DEFAULT_PASSWORD, "password2": DEFAULT_PASSWORD}
        )


def log_in(client, email, password=DEFAULT_PASSWORD):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def test_sign_up_sends_a_verification_link_and_login_waits_for_it(client, mailoutbox, django_capture_on_commit_callbacks):
    response = sign_up(client, django_capture_on_commit_callbacks)

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    user = get_user_model().objects.get(email="new.researcher@uni.example.edu")
    assert user.password.startswith("argon2")
    assert "_auth_user_id" not in client.session
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["new.researcher@uni.example.edu"]

    # Not verified yet: logging in only re-sends the verification e-mail.
    response = log_in(client, "new.researcher@uni.example.edu")
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session

    assert "Hello from Gatehouse!" in mailoutbox[0].body, "the portal's name, not the host it was reached at"
    confirm_path = urlparse(link_in(mailoutbox[0].body, "/accounts/confirm-email/")).path
    assert client.get(confirm_path).status_code == 200
    client.post(confirm_path)
    assert EmailAddress.objects.get(user=user).verified
    assert int(client.session["_auth_user_id"]) == user.pk, "confirming in the browser that signed up signs in"
    assert "Signed in as" in client.get(reverse("home")).content.decode()


def test_an_address_confirmed_in_another_browser_is_told_to_sign_in(client, mailoutbox,
                                                                    django_capture_on_commit_callbacks):
    from django.test import Client

    sign_up(client, django_capture_on_commit_callbacks)
    other = Client()
    confirm_path = urlparse(link_in(mailoutbox[0].body, "/accounts/confirm-email/")).path
    response = other.post(confirm_path, follow=True)
    assert "_auth_user_id" not in other.session
    assert "new.researcher@uni.example.edu is verified: sign in to apply for access." in response.content.decode()

    response = log_in(other, "new.researcher@uni.example.edu")
    assert response.status_code == 302 and "_auth_user_id" in other.session


def test_sign_up_rejects_a_weak_password_with_a_field_error(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("account_signup"), {"email": "x@uni.example.edu", "password1": "12345678", "password2": "12345678"}
        )
    assert response.status_code == 200
    page = response.content.decode()
    assert "This password is too short" in page
    assert not get_user_model().objects.filter(email="x@uni.example.edu").exists()
    # the error sits with the password field (after its input, before the next label), and in the summary
    assert page.index('id="id_password1"') < page.index("This password is too short", page.index('id="id_password1"'))
    assert page.index('id="id_password1_error"') < page.index('for="id_password2"')
    assert page.index('for="id_email"') < page.index('for="id_password1"') < page.index('id="id_password1_error"')
    assert 'id="error-summary"' in page and '<a href="#id_password1">' in page
    assert "<h1>Sign up</h1>" in page and "E-mail address" in page


def test_e_mail_addresses_are_unique_whatever_their_case(client, mailoutbox, django_capture_on_commit_callbacks):
    UserFactory(email="taken@uni.example.edu")
    sign_up(client, django_capture_on_commit_callbacks, email="Taken@Uni.Example.edu")
    assert get_user_model().objects.filter(email__iexact="taken@uni.example.edu").count() == 1
    # Enumeration is prevented: the owner is told by e-mail, the visitor sees the usual page.
    assert len(mailoutbox) == 1
    assert "already" in mailoutbox[0].body.lower()


class CountingHasher(MD5PasswordHasher):
    """A fast hasher that counts the passwords it hashes."""

    algorithm = "counting_md5"
    hashed = 0

    def encode(self, password, salt):
        CountingHasher.hashed += 1
        return super().encode(password, salt)


def test_sign_up_hashes_the_password_whether_or_not_the_address_is_registered(
        client, settings, mailoutbox, django_capture_on_commit_callbacks):
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    UserFactory(email="taken@uni.example.edu")
    work = {}
    for email in ["new@uni.example.edu", "taken@uni.example.edu"]:
        CountingHasher.hashed, sent = 0, len(mailoutbox)
        response = sign_up(client, django_capture_on_commit_callbacks, email=email)
        work[email] = (response.status_code, response["Location"], CountingHasher.hashed, len(mailoutbox) - sent)
    assert work["new@uni.example.edu"] == work["taken@uni.example.edu"] == (
        302, reverse("account_email_verification_sent"), 1, 1)


def test_password_reset_by_e_mail_link(client, user, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("account_reset_password"), {"email": user.email})
    assert response.status_code == 302
    assert len(mailoutbox) == 1

    reset_path = urlparse(link_in(mailoutbox[0].body, "/accounts/password/reset/key/")).path
    form_page = client.get(reset_path, follow=True)
    assert form_page.status_code == 200
    set_path = form_page.redirect_chain[-1][0] if form_page.redirect_chain else reset_path
    response = client.post(set_path, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302

    client.logout()
    assert "_auth_user_id" not in log_in(client, user.email).wsgi_request.session
    log_in(client, user.email, NEW_PASSWORD)
    assert int(client.session["_auth_user_id"]) == user.pk


def test_repeated_failed_logins_are_rate_limited_even_with_the_right_password(client, user):
    for _ in range(5):
        response = log_in(client, user.email, "not the password")
        assert response.status_code == 200
        assert "_auth_user_id" not in client.session

    response = log_in(client, user.email, DEFAULT_PASSWORD)
    assert "_auth_user_id" not in client.session
    assert "Too many failed login attempts" in response.content.decode()


def test_the_per_address_login_limit_counts_the_address_the_trusted_proxy_saw(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/ip"}

    def fail_from(forwarded, n):
        return client.post(reverse("account_login"), {"login": f"someone{n}@uni.example.edu", "password": "wrong"},
                           HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.1")

    for n in range(3):
        assert "Too many failed login attempts" not in fail_from(f"{n}.6.6.6, 203.0.113.9", n).content.decode()
    # A new spoofed leftmost entry is still the same client; another client behind the proxy is not.
    assert "Too many failed login attempts" in fail_from("7.7.7.7, 203.0.113.9", 3).content.decode()
    assert "Too many failed login attempts" not in fail_from("203.0.113.10", 4).content.decode()


def test_logout_ends_the_session(client, user):
    log_in(client, user.email)
    client.post(reverse("account_logout"))
    assert "_auth_user_id" not in client.session
    assert "Sign in" in client.get(reverse("home")).content.decode()
