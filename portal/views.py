"""Project-level pages: home, health, and the 404 answer."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.cache import never_cache

from access.selectors import applicant_next_step


def home(request: HttpRequest) -> HttpResponse:
    next_step = applicant_next_step(user=request.user) if request.user.is_authenticated else None
    return render(request, "portal/home.html", {"next_step": next_step})


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for container healthchecks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """API clients get JSON for a URL that names nothing (``/api/v1/applications/-1/``), as the schema says."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
