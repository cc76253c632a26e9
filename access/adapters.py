"""django-allauth hooks: e-mail goes through Celery after the transaction commits."""

from urllib.parse import urlsplit

from allauth.account.adapter import DefaultAccountAdapter
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

    def get_client_ip(self, request) -> str:
        """allauth's rate limits and session records count the address the rest of the portal sees."""
        address = client_ip(request)
        if address is None:
            raise PermissionDenied("Unable to determine client IP address")
        return address
