"""The base layout every page extends: login state, navigation, accessibility, local assets."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def page(client: Client, path: str = "/") -> str:
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def test_visitors_see_sign_in_and_sign_up(client):
    html = page(client)
    assert '<html lang="en">' in html
    assert 'href="#main"' in html and 'id="main"' in html
    assert reverse("account_login") in html and reverse("account_signup") in html
    assert "Signed in as" not in html


def test_signed_in_users_see_who_they_are_and_can_sign_out(client):
    user = UserFactory()
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    html = page(client)
    assert f"Signed in as <strong>{user.email}</strong>" in html
    assert reverse("account_logout") in html
    assert ">staff<" not in html


def test_every_asset_is_served_by_the_portal_itself(client):
    html = page(client)
    assets = re.findall(r'<(?:link|script)[^>]+(?:href|src)="([^"]+)"', html)
    assert assets, "the layout loads its stylesheet and htmx"
    for url in assets:
        assert url.startswith("/static/"), f"{url} is not served locally"
        assert client.get(url).status_code == 200, f"{url} is not served"


def test_form_fields_have_labels(client):
    html = page(client, reverse("account_signup"))
    for field_id in re.findall(r'<input[^>]+type="(?:email|password)"[^>]+id="([^"]+)"', html):
        assert f'<label for="{field_id}"' in html


def main_nav(html: str) -> str:
    return re.search(r'<nav aria-label="Main".*?</nav>', html, re.S).group(0)


def test_navigation_shows_the_review_queue_to_staff_only(client):
    researcher, reviewer = UserFactory(), StaffFactory()

    client.login(email=researcher.email, password=DEFAULT_PASSWORD)
    nav = main_nav(page(client))
    assert all(label in nav for label in ("Releases", "Apply", "My access"))
    assert "Review queue" not in nav

    client.login(email=reviewer.email, password=DEFAULT_PASSWORD)
    assert "Review queue" in main_nav(page(client))


def test_the_current_section_is_marked_for_screen_readers(client):
    html = page(client, reverse("artifacts:release_list"))
    assert f'href="{reverse("artifacts:release_list")}" aria-current="page"' in main_nav(html)


def test_health_endpoint_reports_the_database(client):
    assert client.get("/healthz").json() == {"status": "ok"}
