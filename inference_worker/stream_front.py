"""A lean ASGI front for the playground's long-lived streams: ``POST /api/v1/completions`` and
``GET /playground/jobs/<id>/events``.

Django runs every request in its own thread-sensitive context, and its (synchronous) middleware
give that context a thread of its own, which an open stream then keeps, idle, for as long as it
lasts; its database connection too. These two views authenticate themselves (a Bearer token; the
session cookie, read here with Django's own session and auth code) and need no other middleware,
so they are served here, outside such a context: their few database reads share one thread, and
their events come from the process's one ``StreamHub``. The rest, and any request for an unknown
host or plain HTTP that must go to HTTPS, goes through Django's full stack, as
``artifacts/fast_path.py`` does for download links.
"""

from __future__ import annotations

import io
from functools import partial
from importlib import import_module

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import aget_user
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve

from inference_worker import apis, views

STREAMING_VIEWS = {apis.completions: "POST", views.job_events: "GET"}


def _unused_get_response(request):  # the middleware below are used for their response hooks only
    raise AssertionError("not called")


class _StreamingHandler(ASGIHandler):
    """Django's ASGI request handling (body, disconnects, signals) around a view called directly."""

    def __init__(self):  # no middleware chain: the views here need none
        super(ASGIHandler, self).__init__()
        self.response_hooks = [SecurityMiddleware(_unused_get_response), XFrameOptionsMiddleware(_unused_get_response)]

    async def run_get_response(self, request):
        match = resolve(request.path_info)
        request.resolver_match = match
        session_store = import_module(settings.SESSION_ENGINE).SessionStore
        request.session = session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
        request.auser = partial(aget_user, request)
        try:
            response = await match.func(request, *match.args, **match.kwargs)
        except Exception as error:  # noqa: BLE001  (answered as Django would: 404s, 400s, logged 500s)
            response = await sync_to_async(response_for_exception)(request, error)
        for hook in self.response_hooks:
            response = hook.process_response(request, response)
        response._handler_class = self.__class__
        return response


class StreamingFront:
    """Wraps Django's ASGI application; serves the streaming views without the middleware stack."""

    def __init__(self, django_application):
        self.django_application = django_application
        self.handler = _StreamingHandler()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self._takes(scope):
            await self.handler.handle(scope, receive, send)
        else:
            await self.django_application(scope, receive, send)

    @staticmethod
    def _takes(scope) -> bool:
        try:
            match = resolve(scope["path"])
        except Resolver404:
            return False
        if STREAMING_VIEWS.get(match.func) != scope["method"]:
            return False
        probe = ASGIRequest(scope, io.BytesIO())
        try:
            probe.get_host()
        except DisallowedHost:
            return False
        return not (settings.SECURE_SSL_REDIRECT and not probe.is_secure())
