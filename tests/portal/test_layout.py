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
    assert html.lower().count("signed in as") == 1, "the header says it; the page does not repeat it"
    assert reverse("account_logout") in html
    assert ">Staff<" not in html


def test_the_home_page_offers_a_signed_in_user_their_next_step(client):
    from access.models import Application, Institution, Licence
    from artifacts.models import Release

    def next_step() -> str:
        html = page(client)
        return html[html.index('id="next-step-heading"'):html.index("</div>", html.index('id="next-step-heading"'))]

    client.force_login(UserFactory(verified=False))
    assert "Verify your e-mail address" in next_step()
    user = UserFactory()
    client.force_login(user)
    assert reverse("access:apply") in next_step()
    release = Release.objects.create(slug="opt-x", name="OPT x", licence=Licence.objects.create(slug="l", title="L"))
    application = Application.objects.create(
        user=user, release=release, status="needs_info", legal_name="Ada Lovelace", role="researcher",
        country="GB", institution=Institution.objects.create(name="Example University"), intended_use="x" * 200)
    step = next_step()
    assert "Answer the reviewer" in step and reverse("access:application_detail", args=[application.pk]) in step
    application.status = "in_review"
    application.save()
    assert "is in review" in next_step()


def test_flash_messages_keep_their_list_semantics_and_the_menu_collapses_behind_a_button(client):
    from access.models import ApiToken

    user = UserFactory()
    client.force_login(user)
    client.post(reverse("access:tokens"), {"name": "laptop", "days": 30, "scopes": ["download"]})
    client.post(reverse("access:token_revoke", args=[ApiToken.objects.get(user=user).pk]))
    html = page(client, reverse("access:tokens"))
    assert re.search(r'<div class="messages" role="status">\s*<ul><li class="message message-success">Token laptop revoked',
                     html)
    assert 'class="menu-toggle" aria-expanded="false" aria-controls="site-menu"' in html and 'id="site-menu"' in html


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
