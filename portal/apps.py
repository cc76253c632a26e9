import os

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Gatehouse portal"

    def ready(self) -> None:
        from portal import checks  # noqa: F401  (registers the system checks)
        from portal.celery import app
        from django.conf import settings

        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            for folder in settings.CELERY_BROKER_TRANSPORT_OPTIONS.values():
                if isinstance(folder, str):
                    os.makedirs(folder, exist_ok=True)
            os.makedirs(settings.CELERY_FILESYSTEM_DIR / "results", exist_ok=True)
        app.autodiscover_tasks()
