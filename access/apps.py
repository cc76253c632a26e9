from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "Access: people, licences and review"

    def ready(self) -> None:
        from access import receivers, schema  # noqa: F401  (schema registers the Bearer scheme with drf-spectacular)
        from access.setup import reviewers_group_ensure

        receivers.connect()
        # Also after test-database flushes, which empty what the data migration created.
        post_migrate.connect(reviewers_group_ensure, sender=self, dispatch_uid="access.reviewers_group_ensure")
