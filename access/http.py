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
    """The client's address: the one answer for audit rows, signatures, downloads and rate limits.

    Only the last ``TRUSTED_PROXY_COUNT`` hops are trusted (0 by default; 1 under
    ``BEHIND_PROXY=1``). Each trusted proxy appends the address it received from, so the client is
    the rightmost X-Forwarded-For entry that no trusted proxy wrote; the entries left of it are
    whatever the client sent. An entry that is not an address falls back to ``REMOTE_ADDR``.
    Never raises: None when not even ``REMOTE_ADDR`` is an address.
    """
    remote = normalised_ip(request.META.get("REMOTE_ADDR"))
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if not forwarded:
        return remote
    # REMOTE_ADDR is the nearest proxy; the other hops - 1 proxies are the rightmost entries.
    untrusted = forwarded[:len(forwarded) - (hops - 1)] or forwarded[:1]
    return normalised_ip(untrusted[-1]) or remote


def user_agent(request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:500]


def validation_errors(error: ValidationError) -> dict[str, list[str]]:
    """A service's ValidationError as {field: [messages]} ('non_field_errors' when it names none)."""
    if hasattr(error, "error_dict"):
        return {field: [message for item in items for message in item.messages]
                for field, items in error.error_dict.items()}
    return {"non_field_errors": list(error.messages)}
