"""Errors are the portal's own pages, never Django's defaults."""

import pytest
from django.test import RequestFactory
from django.views import defaults

pytestmark = pytest.mark.django_db


def test_an_unknown_address_is_the_portals_404_with_a_way_on(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and 'class="site-header"' in page
    assert 'href="/releases/"' in page


def test_a_page_the_user_may_not_open_is_the_portals_403_saying_why(client, user):
    client.force_login(user)
    response = client.get("/review/moderation/")
    assert response.status_code == 403
    page = response.content.decode()
    assert "You cannot open this page" in page and "review" in page
    assert 'class="site-header"' in page


def test_a_server_error_is_the_portals_500_page_without_needing_a_request_context():
    response = defaults.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "/static/portal/gatehouse" in page and "Server Error (500)" not in page


def test_the_favicon_is_linked_from_every_page(client):
    assert 'rel="icon"' in client.get("/").content.decode()
