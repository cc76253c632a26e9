"""django-allauth hooks: e-mail goes through Celery after the transaction commits."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context
from django.contrib.sites.shortcuts import get_current_site
from django.core.exceptions import PermissionDenied

from access.emails import email_send_after_commit
from access.http import client_ip


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix: str, email: str, context_data: dict) -> None:
        request = context.request
        ctx = {"request": request, "email": email, "current_site": get_current_site(request)}
        ctx.update(context_data)
        email_send_after_commit(self.render_mail(template_prefix, email, ctx))

    def get_client_ip(self, request) -> str:
        """allauth's rate limits and session records count the address the rest of the portal sees."""
        address = client_ip(request)
        if address is None:
            raise PermissionDenied("Unable to determine client IP address")
        return address
