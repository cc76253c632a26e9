"""Reference data the access process needs: the Reviewers group and default reason templates.

Migration 0005 creates them; this post_migrate hook re-creates them after a database flush.
"""



def reviewers_group_ensure(sender=None, using="default", **kwargs) -> None:
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    from access.models import Application, ReasonTemplate

    content_type = ContentType.objects.db_manager(using).get_for_model(Application)
    permission, _ = Permission.objects.db_manager(using).get_or_create(
        content_type=content_type, codename="review_application",
        defaults={"name": "Can review licence applications"})
    group, _ = Group.objects.db_manager(using).get_or_create(name="Reviewers")
    group.permissions.add(permission)
    if not ReasonTemplate.objects.using(using).exists():
        from importlib import import_module

        defaults = import_module("access.migrations.0005_audit_append_only_reviewers_reasons").REASON_TEMPLATES
        for kind, title, text in defaults:
            ReasonTemplate.objects.using(using).get_or_create(kind=kind, title=title, defaults={"text": text})
