"""Request details recorded with signatures and audit rows, and service errors as responses."""

from django.conf import settings
from django.core.exceptions import ValidationError


def client_ip(request) -> str | None:
    """The client's address; behind the TLS proxy (BEHIND_PROXY=1), the first X-Forwarded-For hop."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.SECURE_PROXY_SSL_HEADER is not None and forwarded:
        return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:500]


def validation_errors(error: ValidationError) -> dict[str, list[str]]:
    """A service's ValidationError as {field: [messages]} ('non_field_errors' when it names none)."""
    if hasattr(error, "error_dict"):
        return {field: [message for item in items for message in item.messages]
                for field, items in error.error_dict.items()}
    return {"non_field_errors": list(error.messages)}
