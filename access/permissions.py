"""Who may review: active staff with ``access.review_application`` and a confirmed second factor."""

from rest_framework.permissions import BasePermission

from access.mfa import staff_mfa_problem
from access.models import ApiToken


def is_reviewer(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perm("access.review_application"))


class IsReviewer(BasePermission):
    """Session callers must have confirmed TOTP in this session; token callers need a token made that way."""

    message = "Only staff with the review permission and two-factor authentication can review."

    def has_permission(self, request, view) -> bool:
        if not is_reviewer(request.user):
            return False
        if isinstance(request.auth, ApiToken):
            if not request.auth.created_with_mfa:
                self.message = ("This token was not created in a session with a confirmed second factor; "
                                "create a new token after confirming your code to use review endpoints.")
                return False
            return True
        return staff_mfa_problem(request) is None
