"""Staff must use two-factor authentication before any review or admin function."""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from allauth.mfa.utils import is_mfa_enabled
from django.http import HttpRequest


def totp_active(user) -> bool:
    """Whether this user has an authenticator app set up now (removing it ends every review right)."""
    return is_mfa_enabled(user, [Authenticator.Type.TOTP])


def staff_mfa_problem(request: HttpRequest) -> str | None:
    """Why this staff session may not use staff functions yet, or None when it may."""
    user = request.user
    if not totp_active(user):
        return "setup"
    records = get_authentication_records(request, user)
    if not any(record.get("method") == "mfa" for record in records):
        return "verify"
    return None
