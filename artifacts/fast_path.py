"""A lean WSGI front for ``GET /dl/<token>``, the portal's hottest path.

A download link carries its own authorisation (a signed token), so sessions, CSRF, messages,
authentication and the other middleware have nothing to do for it; on a small machine they cost
as much as the decision itself. Redirects are answered here, with the headers the security
middleware would add. Everything else goes through Django's full stack: other paths and methods,
plain-HTTP requests that must be sent to HTTPS, unknown hosts, and every decision that is not a
redirect (refusal pages, local streaming), which the view then renders without deciding again.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse, HttpResponseRedirect
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from access.http import client_ip
from artifacts.services.downloads import download_authorize

DECISION_KEY = "gatehouse.download_decision"


def _unused_get_response(request):  # the middleware below are used for their response hooks only
    raise AssertionError("not called")


class DownloadLinkFastPath:
    """Wraps Django's WSGI application; answers link redirects without the middleware stack."""

    def __init__(self, django_application):
        self.django_application = django_application
        self.prefix = reverse("artifacts:download", args=["TOKEN"]).removesuffix("TOKEN")
        self.response_hooks = [SecurityMiddleware(_unused_get_response), XFrameOptionsMiddleware(_unused_get_response)]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or not path.startswith(self.prefix):
            return self.django_application(environ, start_response)
        request = WSGIRequest(environ)
        try:
            request.get_host()
        except DisallowedHost:
            return self.django_application(environ, start_response)
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            return self.django_application(environ, start_response)
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            response = self._redirect_or_none(request, token=path[len(self.prefix):])
        finally:
            signals.request_finished.send(sender=self.__class__)
        if response is None:
            return self.django_application(environ, start_response)
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return [response.content]

    def _redirect_or_none(self, request: WSGIRequest, *, token: str) -> HttpResponse | None:
        try:
            decision = download_authorize(
                token=token,
                range_header=request.headers.get("Range", ""),
                ip=client_ip(request),
                user_agent=request.headers.get("User-Agent", ""),
            )
        except Exception as error:  # noqa: BLE001  (logged and answered as Django would)
            return response_for_exception(request, error)
        if decision.status != 302:
            request.META[DECISION_KEY] = decision
            return None
        response = HttpResponseRedirect(decision.redirect_url)
        response["Content-Length"] = "0"
        add_never_cache_headers(response)
        for hook in self.response_hooks:
            response = hook.process_response(request, response)
        return response
