"""Personal API tokens through their services: scopes, the Bearer rule, the scopes older tokens got."""

import importlib
from datetime import timedelta

import pytest
from allauth.mfa.models import Authenticator
from django.apps import apps
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import ApiToken, AuditEvent
from access.services.tokens import (
    ApiTokenInvalid, api_token_authenticate, api_token_create, api_token_from_header, api_token_has_scope,
)
from tests.conftest import link_in
from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
Scope = ApiToken.Scope
NEW_PASSWORD = "a-new-Long-passphrase-42"


def create(user, scopes, *, created_with_mfa=False):
    return api_token_create(user=user, name="cluster", days=30, scopes=scopes, created_with_mfa=created_with_mfa)


def scopes_error(user, scopes, **kwargs) -> str:
    with pytest.raises(ValidationError) as refused:
        create(user, scopes, **kwargs)
    return " ".join(refused.value.message_dict["scopes"])


def test_a_token_gets_the_scopes_asked_for_and_its_audit_row_records_them(researcher):
    token, raw = create(researcher, ["inference", "download", "download"])
    assert token.scopes == ["download", "inference"]
    assert api_token_has_scope(token, Scope.DOWNLOAD) and not api_token_has_scope(token, Scope.REVIEW)
    event = AuditEvent.objects.get(action="api_token.create", target_id=str(token.pk))
    assert event.after["scopes"] == ["download", "inference"]


def test_a_token_needs_known_scopes_and_at_least_one(researcher):
    assert "at least one scope" in scopes_error(researcher, [])
    message = scopes_error(researcher, ["download", "admin"])
    assert "Unknown scope: admin" in message and "download, inference, review" in message
    assert not ApiToken.objects.exists()


def test_only_staff_with_a_confirmed_second_factor_get_the_review_scope():
    assert "Only staff reviewers" in scopes_error(UserFactory(), ["review"], created_with_mfa=True)
    staff = StaffFactory()
    assert "Confirm your two-factor code first" in scopes_error(staff, ["download", "review"])
    token, _ = create(staff, ["review"], created_with_mfa=True)
    assert token.scopes == ["review"] and token.created_with_mfa


def test_authenticate_returns_the_usable_token_and_notes_its_use(researcher):
    token, raw = create(researcher, ["download"])
    found = api_token_authenticate(raw=raw)
    assert found == token and found.user == researcher and found.last_used_at is not None
    token.refresh_from_db()
    assert token.last_used_at == found.last_used_at


@pytest.mark.parametrize(("change", "message"), [
    ("unknown", "Unknown API token."),
    ("inactive", "Unknown API token."),
    ("revoked", "This API token was revoked."),
    ("expired", "This API token has expired; create a new one."),
])
def test_authenticate_says_why_a_token_cannot_be_used(researcher, change, message):
    token, raw = create(researcher, ["download"])
    if change == "unknown":
        raw += "x"
    elif change == "inactive":
        researcher.is_active = False
        researcher.save(update_fields=["is_active"])
    elif change == "revoked":
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    else:
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApiTokenInvalid) as refused:
        api_token_authenticate(raw=raw)
    assert str(refused.value) == message


def test_the_authorization_header_must_be_bearer_and_one_token():
    assert api_token_from_header("Bearer gh_abc") == "gh_abc"
    assert api_token_from_header("bearer  gh_abc ") == "gh_abc"
    for value in ["", "Bearer", "Bearer gh_a gh_b", "Basic dXNlcjpwYXNz", "gh_abc"]:
        with pytest.raises(ApiTokenInvalid) as refused:
            api_token_from_header(value)
        assert str(refused.value) == "Send the token as 'Authorization: Bearer <token>'."


def test_tokens_made_before_scopes_keep_what_they_could_do(researcher):
    plain, _ = create(researcher, ["download"])
    staff_token, _ = create(StaffFactory(), ["review"], created_with_mfa=True)
    ApiToken.objects.update(scopes=[])  # as the new column is, before the data migration
    migration = importlib.import_module("access.migrations.0007_apitoken_scopes")
    migration.scope_existing_tokens(apps, None)
    plain.refresh_from_db()
    staff_token.refresh_from_db()
    assert plain.scopes == ["download", "inference"]
    assert staff_token.scopes == ["download", "inference", "review"]


def review_token(reviewer) -> tuple[ApiToken, APIClient]:
    token, raw = create(reviewer, ["download", "review"], created_with_mfa=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return token, api


def test_a_review_token_stops_reviewing_once_its_owner_has_no_authenticator_app(reviewer):
    token, api = review_token(reviewer)
    assert api.get("/api/v1/review/applications/").status_code == 200
    Authenticator.objects.filter(user=reviewer).delete()  # however it went (admin, shell): no TOTP, no review
    refused = api.get("/api/v1/review/applications/")
    assert refused.status_code == 403
    assert "two-factor authentication set up" in refused.json()["detail"]


def test_removing_totp_takes_the_review_scope_off_the_owner_s_tokens_audited(reviewer_client, reviewer):
    token, api = review_token(reviewer)
    other, _ = create(reviewer, ["inference"])
    reauthenticate = reviewer_client.post(reverse("mfa_deactivate_totp"))["Location"]
    response = reviewer_client.post(reauthenticate, {"password": DEFAULT_PASSWORD})  # then allauth resumes the POST
    assert response.status_code == 302, response.content.decode()
    assert not Authenticator.objects.filter(user=reviewer, type=Authenticator.Type.TOTP).exists()
    token.refresh_from_db()
    assert token.scopes == ["download"] and token.revoked_at is None
    event = AuditEvent.objects.get(action="api_token.scope_remove", target_id=str(token.pk))
    assert event.before == {"scopes": ["download", "review"]} and event.after == {"scopes": ["download"]}
    assert event.actor == reviewer and "Two-factor authentication was removed" in event.reason
    assert not AuditEvent.objects.filter(action="api_token.scope_remove", target_id=str(other.pk)).exists()


def revoked_by_password_change(user) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="api_token.revoke", target_id__in=[
        str(pk) for pk in user.api_tokens.values_list("pk", flat=True)]))


def test_changing_the_password_revokes_every_api_token_audited(client, researcher):
    first, raw = create(researcher, ["download"])
    second, _ = create(researcher, ["inference"])
    client.force_login(researcher)
    page = client.get(reverse("account_change_password"))
    assert "Changing your password revokes all your API tokens" in page.content.decode()
    response = client.post(reverse("account_change_password"), {
        "oldpassword": DEFAULT_PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302, response.content.decode()
    assert all(token.revoked_at for token in researcher.api_tokens.all())
    with pytest.raises(ApiTokenInvalid, match="revoked"):
        api_token_authenticate(raw=raw)
    events = revoked_by_password_change(researcher)
    assert len(events) == 2 and all("password was changed or reset" in event.reason for event in events)


def test_resetting_the_password_revokes_every_api_token(client, researcher, mailoutbox, run_on_commit):
    token, _ = create(researcher, ["download"])
    with run_on_commit():
        client.post(reverse("account_reset_password"), {"email": researcher.email})
    link = link_in(mailoutbox[-1].body, "/password/reset/key/")
    page = client.get(link, follow=True)
    assert "Changing your password revokes all your API tokens" in page.content.decode()
    response = client.post(page.redirect_chain[-1][0] if page.redirect_chain else link,
                           {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302, response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert len(revoked_by_password_change(researcher)) == 1


def test_staff_setting_a_password_in_the_admin_revokes_the_user_s_tokens(reviewer_client, reviewer, researcher):
    reviewer.user_permissions.add(Permission.objects.get(codename="change_user"))
    token, _ = create(researcher, ["download"])
    response = reviewer_client.post(reverse("admin:auth_user_password_change", args=[researcher.pk]), {
        "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"})
    assert response.status_code == 302, response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.get(action="api_token.revoke", target_id=str(token.pk)).actor == reviewer


def test_the_tokens_page_says_a_password_change_revokes_them(researcher_client):
    page = researcher_client.get(reverse("access:tokens")).content.decode()
    assert "Changing or resetting your password revokes all your tokens" in page
