"""What the access app does when allauth reports an account change: credentials do not outlive their basis."""

from allauth.account.signals import password_changed, password_reset
from allauth.mfa.models import Authenticator
from allauth.account.internal.flows.login import record_authentication
from allauth.mfa.signals import authenticator_added, authenticator_removed

from access.http import client_ip
from access.mfa import totp_active
from access.services.tokens import api_tokens_drop_review_scope, api_tokens_revoke_all


def revoke_tokens_on_password_change(sender, request, user, **kwargs) -> None:
    api_tokens_revoke_all(user=user, reason="The password was changed or reset.",
                          ip_address=client_ip(request) if request is not None else None)


def drop_review_scope_on_totp_removal(sender, request, user, authenticator, **kwargs) -> None:
    if authenticator.type != Authenticator.Type.TOTP or totp_active(user):
        return
    api_tokens_drop_review_scope(user=user, reason="Two-factor authentication was removed.",
                                 ip_address=client_ip(request) if request is not None else None)


def count_activation_as_this_session_s_second_factor(sender, request, user, authenticator, **kwargs) -> None:
    """Activating an authenticator app proves a valid code in this session, as allauth's own re-authentication
    by code would: no second code at /review/, and the new recovery codes show without another prompt."""
    if authenticator.type == Authenticator.Type.TOTP and request is not None and request.user == user:
        record_authentication(request, user, "mfa", type=Authenticator.Type.TOTP, reauthenticated=True)


def connect() -> None:
    password_changed.connect(revoke_tokens_on_password_change, dispatch_uid="access.tokens_on_password_changed")
    password_reset.connect(revoke_tokens_on_password_change, dispatch_uid="access.tokens_on_password_reset")
    authenticator_removed.connect(drop_review_scope_on_totp_removal, dispatch_uid="access.tokens_on_totp_removed")
    authenticator_added.connect(count_activation_as_this_session_s_second_factor,
                                dispatch_uid="access.mfa_on_totp_added")
