"""Staff must use two-factor authentication before any review or admin function."""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from allauth.mfa.utils import is_mfa_enabled
from django.http import HttpRequest


def staff_mfa_problem(request: HttpRequest) -> str | None:
    """Why this staff session may not use staff functions yet, or None when it may."""
    user = request.user
    if not is_mfa_enabled(user, [Authenticator.Type.TOTP]):
        return "setup"
    records = get_authentication_records(request, user)
    if not any(record.get("method") == "mfa" for record in records):
        return "verify"
    return None
