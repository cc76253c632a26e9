"""ASGI entry point (uvicorn workers under gunicorn): streaming responses need it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_asgi_application()

from inference_worker.stream_front import StreamingFront  # noqa: E402  (needs the configured apps)

application = StreamingFront(django_application)
