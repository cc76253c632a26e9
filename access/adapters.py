"""django-allauth hooks: e-mail goes through Celery after the transaction commits."""

import time
from urllib.parse import urlsplit

from allauth.account import app_settings as account_settings
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.authentication import get_authentication_records
from allauth.core import context
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied

from access.emails import email_send_after_commit
from access.http import client_ip


class PortalSite:
    """The site allauth's e-mails speak for: the portal by its name, at the address it runs on."""

    name = "Gatehouse"

    def __init__(self) -> None:
        self.domain = urlsplit(settings.SITE_URL).netloc


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix: str, email: str, context_data: dict) -> None:
        ctx = {"request": context.request, "email": email, **context_data, "current_site": PortalSite()}
        email_send_after_commit(self.render_mail(template_prefix, email, ctx))

    def get_email_verification_redirect_url(self, email_address) -> str:
        """Confirmed in another browser than the one that signed up: say plainly what comes next."""
        if not self.request.user.is_authenticated:
            messages.success(self.request, f"{email_address.email} is verified: sign in to apply for access.")
        return super().get_email_verification_redirect_url(email_address)

    def is_reauthentication_required(self, *, app: str, **kwargs) -> bool:
        """For setting up an authenticator app (which only adds protection), a password typed at sign-in
        minutes ago counts as typed again: staff are not asked for it twice in a row. Removing one, and
        every other sensitive change, still asks."""
        if not super().is_reauthentication_required(app=app, **kwargs):
            return False
        request = self.request
        match = getattr(request, "resolver_match", None)
        if not request.user.is_authenticated or match is None or match.url_name != "mfa_activate_totp":
            return True
        recent = [record for record in get_authentication_records(request, request.user)
                  if record.get("method") == "password"
                  and time.time() - record.get("at", 0) < account_settings.REAUTHENTICATION_TIMEOUT]
        return not recent

    def get_client_ip(self, request) -> str:
        """allauth's rate limits and session records count the address the rest of the portal sees."""
        address = client_ip(request)
        if address is None:
            raise PermissionDenied("Unable to determine client IP address")
        return address
