"""Personal API tokens: shown once, stored as sha256, expiring, revocable, limited to their scopes."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from access.audit import audit_record
from access.errors import AccessError
from access.models import ApiToken, User

TOKEN_PREFIX = "gh_"
AUTHORIZATION_SCHEME = "Bearer"


class ApiTokenInvalid(Exception):
    """A presented token (or Authorization header) that cannot be used; the message tells the caller why."""


def api_token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def api_token_from_header(value: str) -> str:
    """The raw token in an ``Authorization`` header value of the form ``Bearer <token>``."""
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != AUTHORIZATION_SCHEME.lower():
        raise ApiTokenInvalid("Send the token as 'Authorization: Bearer <token>'.")
    return parts[1]


def api_token_authenticate(*, raw: str) -> ApiToken:
    """The usable token with this raw value, its user loaded; raises ApiTokenInvalid saying why not.

    Works on the raw string alone, so DRF and the async views (through ``sync_to_async``) share it.
    ``last_used_at`` is written at most once a minute, so a busy script does not write on every call.
    """
    token = ApiToken.objects.select_related("user").filter(token_hash=api_token_hash(raw)).first()
    if token is None:
        raise ApiTokenInvalid("Unknown API token.")
    api_token_check(token, user_is_active=token.user.is_active)
    return token


def api_token_check(token: ApiToken, *, user_is_active: bool) -> None:
    """The rule for using a token that was found (its holder active, not revoked, not expired);
    raises ApiTokenInvalid saying why not. Notes the use (``last_used_at``) at most once a minute.
    ``token`` may also be what a query read of one (``artifacts.selectors.HubToken``): its ``pk``,
    ``revoked_at``, ``expires_at`` and ``last_used_at`` are all this reads."""
    now = timezone.now()
    if not user_is_active:
        raise ApiTokenInvalid("Unknown API token.")
    if token.revoked_at is not None:
        raise ApiTokenInvalid("This API token was revoked.")
    if token.expires_at <= now:
        raise ApiTokenInvalid("This API token has expired; create a new one.")
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def api_token_has_scope(token: ApiToken, scope: str) -> bool:
    """Whether this token may be used for ``scope`` (an ``ApiToken.Scope``)."""
    return scope in token.scopes


def api_token_scope_missing_message(scope: str) -> str:
    """What a caller whose token lacks ``scope`` is told (with the 403)."""
    return f"This API token lacks the '{scope}' scope; create a token with it at {reverse('access:tokens')}."


def _scopes_problem(*, user: User, scopes: list[str], created_with_mfa: bool) -> str | None:
    unknown = sorted(set(scopes) - set(ApiToken.Scope.values))
    if unknown:
        return f"Unknown scope: {', '.join(unknown)}. Choose from {', '.join(ApiToken.Scope.values)}."
    if not scopes:
        return "Choose at least one scope."
    if ApiToken.Scope.REVIEW in scopes and not user.is_staff:
        return "Only staff reviewers can create tokens with the review scope."
    if ApiToken.Scope.REVIEW in scopes and not created_with_mfa:
        return "Confirm your two-factor code first, then create the token with the review scope."
    return None


@transaction.atomic
def api_token_create(*, user: User, name: str, days: int, scopes: list[str], created_with_mfa: bool,
                     ip_address: str | None = None) -> tuple[ApiToken, str]:
    """A new token and its raw value (the only time it exists in clear).

    ``created_with_mfa``: the caller's session is staff with a confirmed second factor; only such
    tokens may hold the review scope.
    """
    errors = {}
    name = name.strip()
    if not name:
        errors["name"] = "Name the token (e.g. the machine that uses it)."
    maximum = settings.ACCESS_API_TOKEN_MAX_DAYS
    if not isinstance(days, int) or not 1 <= days <= maximum:
        errors["days"] = f"A token lasts between 1 and {maximum} days."
    created_with_mfa = created_with_mfa and user.is_staff
    problem = _scopes_problem(user=user, scopes=scopes, created_with_mfa=created_with_mfa)
    if problem:
        errors["scopes"] = problem
    if errors:
        raise ValidationError(errors)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:10], token_hash=api_token_hash(raw),
        expires_at=timezone.now() + timedelta(days=days), created_with_mfa=created_with_mfa,
        scopes=[scope for scope in ApiToken.Scope.values if scope in scopes],
    )
    audit_record(actor=user, action="api_token.create", target=token, ip_address=ip_address,
                 after={"name": name, "prefix": token.prefix, "expires_at": token.expires_at.isoformat(),
                        "scopes": token.scopes})
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


@transaction.atomic
def api_tokens_revoke_all(*, user: User, reason: str, by: User | None = None, ip_address: str | None = None) -> int:
    """Revoke every unrevoked token of this user (their password changed: a leaked token must not outlive it).

    ``by``: who changed the password when it was not the user (staff in the admin).
    """
    tokens = list(ApiToken.objects.select_for_update().filter(user=user, revoked_at__isnull=True))
    now = timezone.now()
    for token in tokens:
        token.revoked_at = now
        token.save(update_fields=["revoked_at"])
        audit_record(actor=by or user, action="api_token.revoke", target=token, reason=reason,
                     ip_address=ip_address)
    return len(tokens)


@transaction.atomic
def api_tokens_drop_review_scope(*, user: User, reason: str, ip_address: str | None = None) -> int:
    """Take the review scope off every token of this user (they removed their second factor)."""
    tokens = [token for token in ApiToken.objects.select_for_update().filter(user=user, revoked_at__isnull=True)
              if ApiToken.Scope.REVIEW in token.scopes]
    for token in tokens:
        before = list(token.scopes)
        token.scopes = [scope for scope in before if scope != ApiToken.Scope.REVIEW]
        token.save(update_fields=["scopes"])
        audit_record(actor=user, action="api_token.scope_remove", target=token, reason=reason,
                     ip_address=ip_address, before={"scopes": before}, after={"scopes": token.scopes})
    return len(tokens)
