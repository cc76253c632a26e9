"""Guards on every request and response: a request carrying NUL characters is refused, and every answer
gets a strict Content-Security-Policy and a Permissions-Policy.

Both run in the same mode as the stack (sync under WSGI, async under ASGI) without a thread hop, so the
async views (the completions API) stay on the event loop.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

# Scripts and styles only from our own static files: no inline code, no eval, no other origin.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
# Browser features the portal never uses.
PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in [
    "accelerometer", "camera", "geolocation", "gyroscope", "magnetometer", "microphone", "payment", "usb",
])
NUL_MESSAGE = "The request contains a NUL character (%00), which no field or address accepts. Remove it and try again."
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _Middleware:
    """``process_request`` (a response ends the request there) and ``process_response``, sync or async."""

    sync_capable = async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        return self.process_response(request, self.process_request(request) or self.get_response(request))

    async def _acall(self, request: HttpRequest):
        return self.process_response(request, self.process_request(request) or await self.get_response(request))

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


def _has_nul(data) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in data.lists())


class RefuseNulCharactersMiddleware(_Middleware):
    """PostgreSQL text cannot hold NUL, and no real input has one: a path, cookie, query or form field with one
    is a 400 before any view runs, never a 500 from the database. (JSON bodies: DRF's fields and the completions
    parser refuse NUL themselves.)"""

    def process_request(self, request):
        has_form = request.content_type in FORM_TYPES and request.method == "POST"
        cookies = any("\x00" in value for value in request.COOKIES.values())
        if "\x00" in request.path or cookies or _has_nul(request.GET) or (has_form and _has_nul(request.POST)):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": NUL_MESSAGE}, status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return None


class SecurityHeadersMiddleware(_Middleware):
    def process_response(self, request, response):
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
