"""System checks that `manage.py check --deploy` adds to Django's own."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_secret_key_from_environment(app_configs, **kwargs):
    if settings.SECRET_KEY_FROM_ENVIRONMENT:
        return []
    return [
        Warning(
            "SECRET_KEY is not set in the environment; a development key from var/secret_key is in use.",
            hint="Set SECRET_KEY to a long random value shared by every web process and worker.",
            id="portal.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_https(app_configs, **kwargs):
    if settings.HTTPS:
        return []
    return [
        Warning(
            "HTTPS is off: cookies are not marked secure and HSTS is not sent.",
            hint="Serve the portal over TLS and set HTTPS=1 (and BEHIND_PROXY=1 behind a TLS proxy).",
            id="portal.W002",
        )
    ]
