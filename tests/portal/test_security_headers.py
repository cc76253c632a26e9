"""Every answer carries a strict Content-Security-Policy and a Permissions-Policy."""

import pytest

from portal.middleware import NUL_MESSAGE
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/admin/login/", "/api/v1/releases/"])
def test_responses_carry_a_strict_content_security_policy_and_permissions_policy(client, path):
    response = client.get(path)
    policy = dict(directive.strip().split(" ", 1) for directive in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'self'" and policy["form-action"] == "'self'"
    assert "unsafe" not in response["Content-Security-Policy"]
    permissions = response["Permissions-Policy"]
    for feature in ["camera=()", "microphone=()", "geolocation=()"]:
        assert feature in permissions


@pytest.mark.parametrize("path", ["/playground/history/?q=a%00b", "/apply/?release=opt%00", "/review/moderation/?s%00=1",
                                  "/access/reference/a%00b/", "/playground/?rerun=%00"])
def test_a_nul_character_anywhere_in_a_request_is_a_clear_400_not_a_database_error(client, path):
    client.force_login(UserFactory())
    response = client.get(path)
    assert response.status_code == 400
    assert "contains a NUL character" in response.content.decode()


def test_a_nul_in_a_form_field_or_a_cookie_is_refused_and_api_clients_get_json(client):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/access/tokens/", {"name": "laptop\x00", "days": "30", "scopes": ["download"]})
    assert response.status_code == 400 and "contains a NUL character" in response.content.decode()
    assert not user.api_tokens.exists()
    assert client.get("/api/v1/grants/?x=%00").json() == {"detail": NUL_MESSAGE}
    client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    assert client.get("/").status_code == 400


def test_json_bodies_pass_through_to_the_parsers_that_refuse_nul_themselves(client):
    response = client.post("/api/v1/applications/", '{"intended_use": "a\\u0000b"}', content_type="application/json")
    assert response.status_code == 401, "not refused by the middleware: authentication answers first"
