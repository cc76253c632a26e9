"""Personal API tokens through their services: scopes, the Bearer rule, the scopes older tokens got."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.utils import timezone

from access.models import ApiToken, AuditEvent
from access.services.tokens import (
    ApiTokenInvalid, api_token_authenticate, api_token_create, api_token_from_header, api_token_has_scope,
)
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
Scope = ApiToken.Scope


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
