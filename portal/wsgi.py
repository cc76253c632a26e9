"""WSGI entry point (gunicorn sync workers): serves download-link redirects fastest."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_wsgi_application()

from artifacts.fast_path import DownloadLinkFastPath  # noqa: E402  (needs the configured apps)

application = DownloadLinkFastPath(django_application)
