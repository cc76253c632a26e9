"""API permissions: review (the rule is ``access.roles.is_reviewer``, plus a confirmed second factor) and token scopes."""

from rest_framework.permissions import BasePermission

from access.mfa import staff_mfa_problem, totp_active
from access.models import ApiToken
from access.roles import is_reviewer
from access.services.tokens import api_token_has_scope, api_token_scope_missing_message


class RequiresTokenScope(BasePermission):
    """Token callers need ``required_scope``; session callers pass (scopes only restrict tokens)."""

    required_scope: str

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiToken) and not api_token_has_scope(request.auth, self.required_scope):
            self.message = api_token_scope_missing_message(self.required_scope)
            return False
        return True


def token_scope(scope: str) -> type[RequiresTokenScope]:
    """A permission class refusing tokens without ``scope``: ``permission_classes = [..., token_scope("download")]``."""
    return type(f"Requires{scope.title()}Scope", (RequiresTokenScope,), {"required_scope": scope})


class IsReviewer(RequiresTokenScope):
    """Session callers must have confirmed TOTP in this session; token callers need the review scope, which only
    tokens made that way can hold, and their owner must still have TOTP set up now."""

    message = "Only staff with the review permission and two-factor authentication can review."
    required_scope = ApiToken.Scope.REVIEW

    def has_permission(self, request, view) -> bool:
        if not is_reviewer(request.user):
            return False
        if isinstance(request.auth, ApiToken):
            if not totp_active(request.user):
                self.message = "Review tokens work only while their owner has two-factor authentication set up."
                return False
            return super().has_permission(request, view)
        return staff_mfa_problem(request) is None
