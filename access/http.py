"""Request details recorded with signatures and audit rows, and service errors as responses."""

import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError


def normalised_ip(value: str | None) -> str | None:
    """An address in the one spelling we store and hash, or None when it is not an address.

    IPv4-mapped IPv6 (``::ffff:127.0.0.1``) becomes IPv4, a zone (``::1%eth0``) is dropped and
    IPv6 is compressed, so what the database keeps is exactly what the audit hash covers.
    """
    text = (value or "").strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


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
