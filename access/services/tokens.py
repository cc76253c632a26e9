"""Personal API tokens: shown once, stored as sha256, expiring, revocable."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from access.audit import audit_record
from access.errors import AccessError
from access.models import ApiToken, User

TOKEN_PREFIX = "gh_"


def api_token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str, days: int, created_with_mfa: bool,
                     ip_address: str | None = None) -> tuple[ApiToken, str]:
    """A new token and its raw value (the only time it exists in clear)."""
    errors = {}
    name = name.strip()
    if not name:
        errors["name"] = "Name the token (e.g. the machine that uses it)."
    maximum = settings.ACCESS_API_TOKEN_MAX_DAYS
    if not isinstance(days, int) or not 1 <= days <= maximum:
        errors["days"] = f"A token lasts between 1 and {maximum} days."
    if errors:
        raise ValidationError(errors)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:10], token_hash=api_token_hash(raw),
        expires_at=timezone.now() + timedelta(days=days), created_with_mfa=created_with_mfa and user.is_staff,
    )
    audit_record(actor=user, action="api_token.create", target=token, ip_address=ip_address,
                 after={"name": name, "prefix": token.prefix, "expires_at": token.expires_at.isoformat()})
    return token, raw


@transaction.atomic
def api_token_revoke(*, token: ApiToken, by: User, ip_address: str | None = None) -> ApiToken:
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.user_id != by.pk:
        raise PermissionDenied("Only the owner can revoke this token.")
    if token.revoked_at is not None:
        raise AccessError("This token is already revoked.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(actor=by, action="api_token.revoke", target=token, ip_address=ip_address)
    return token
