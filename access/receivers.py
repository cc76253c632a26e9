"""What the access app does when allauth reports an account change: credentials do not outlive their basis."""

from allauth.account.signals import password_changed, password_reset
from allauth.mfa.models import Authenticator
from allauth.mfa.signals import authenticator_removed

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


def connect() -> None:
    password_changed.connect(revoke_tokens_on_password_change, dispatch_uid="access.tokens_on_password_changed")
    password_reset.connect(revoke_tokens_on_password_change, dispatch_uid="access.tokens_on_password_reset")
    authenticator_removed.connect(drop_review_scope_on_totp_removal, dispatch_uid="access.tokens_on_totp_removed")
