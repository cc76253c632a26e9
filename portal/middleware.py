"""Security headers on every response: a strict Content-Security-Policy and a Permissions-Policy."""

from django.utils.deprecation import MiddlewareMixin

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


class SecurityHeadersMiddleware(MiddlewareMixin):
    """Sync and async capable, so async views (the completions API) stay on the event loop."""

    def process_response(self, request, response):
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
