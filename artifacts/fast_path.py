"""A lean WSGI front for the portal's hottest paths: ``GET /dl/<token>`` and the Hub's ``GET
…/resolve/<revision>/<path>``.

A download link carries its own authorisation (a signed token), and a Hub request its API token,
so sessions, CSRF, messages, authentication and the other middleware have nothing to do for them;
on a small machine they cost as much as the decision itself. Redirects are answered here, with the
headers the security middleware would add. Everything else goes through Django's full stack: other
paths and methods, plain-HTTP requests that must be sent to HTTPS, unknown hosts, and every decision
that is not a redirect (refusal pages, local streaming), which the view then renders without
deciding again.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse, HttpResponseRedirect
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.cache import add_never_cache_headers

from artifacts import hub_views, views
from artifacts import urls as artifact_urls

HUB_RESOLVE = "/resolve/"


def _unused_get_response(request):  # the middleware below are used for their response hooks only
    raise AssertionError("not called")


class DownloadLinkFastPath:
    """Wraps Django's WSGI application; answers download redirects without the middleware stack."""

    def __init__(self, django_application):
        self.django_application = django_application
        self.prefix = reverse("artifacts:download", args=["TOKEN"]).removesuffix("TOKEN")
        self.hub_prefix, self.hub_routes = _hub_resolve_routes()
        self.response_hooks = [SecurityMiddleware(_unused_get_response), XFrameOptionsMiddleware(_unused_get_response)]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or not (path.startswith(self.prefix) or HUB_RESOLVE in path):
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
            response = self._redirect_or_none(request, path=path)
        finally:
            signals.request_finished.send(sender=self.__class__)
        if response is None:
            return self.django_application(environ, start_response)
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return [response.content]

    def _redirect_or_none(self, request: WSGIRequest, *, path: str) -> HttpResponse | None:
        try:
            if path.startswith(self.prefix):
                response = self._link_redirect_or_none(request, token=path[len(self.prefix):])
            else:
                response = self._hub_redirect_or_none(request, path=path)
        except Exception as error:  # noqa: BLE001  (logged and answered as Django would)
            return response_for_exception(request, error)
        if response is None:
            return None
        response["Content-Length"] = "0"
        add_never_cache_headers(response)
        for hook in self.response_hooks:
            response = hook.process_response(request, response)
        return response

    @staticmethod
    def _link_redirect_or_none(request: WSGIRequest, *, token: str) -> HttpResponse | None:
        decision = views.link_use(request, token)
        if decision.status != 302:
            request.META[views.DECISION_KEY] = decision
            return None
        return HttpResponseRedirect(decision.redirect_url)

    def _hub_redirect_or_none(self, request: WSGIRequest, *, path: str) -> HttpResponse | None:
        kwargs = self._hub_resolve_arguments(path)
        if kwargs is None:
            return None
        repo_id = f"{kwargs['namespace']}/{kwargs['repo']}" if kwargs.get("namespace") else kwargs["repo"]
        fetched = hub_views.resolve_fetch(request, repo_id=repo_id, revision=kwargs["revision"], path=kwargs["path"])
        if not fetched or fetched.decision.status != 302:
            request.META[hub_views.HUB_FETCH_KEY] = fetched or False
            return None
        return hub_views.fetched_response(request, fetched)

    def _hub_resolve_arguments(self, path: str) -> dict | None:
        """The view's arguments when ``path`` is a Hub ``resolve`` URL (None otherwise): what the URL
        resolver would pass, matched against the resolve patterns alone."""
        if not path.startswith(self.hub_prefix):
            return None
        rest = path[len(self.hub_prefix):]
        for route in self.hub_routes:
            match = route.pattern.match(rest)
            if match:
                return {**route.default_args, **match[2]}
        return None


def _hub_resolve_routes() -> tuple[str, list[URLPattern]]:
    """The URL patterns of the Hub's ``resolve`` and the prefix that artifacts' URLs are included
    under: matched directly, they cost a tenth of resolving the path through every URL pattern."""
    for included in get_resolver().url_patterns:
        if isinstance(included, URLResolver) and included.urlconf_module is artifact_urls:
            routes = [route for route in included.url_patterns
                      if isinstance(route, URLPattern) and route.callback is hub_views.resolve]
            return f"/{included.pattern}", routes
    raise ImproperlyConfigured("artifacts.urls is not included in the URL configuration.")
