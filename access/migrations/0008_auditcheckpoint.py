"""The audit chain's signed head; an existing chain gets its head signed now."""

from django.db import migrations, models


def sign_existing_head(apps, schema_editor):
    from access.audit import CHECKPOINT_ID, audit_checkpoint_signature

    AuditEvent = apps.get_model("access", "AuditEvent")
    AuditCheckpoint = apps.get_model("access", "AuditCheckpoint")
    head = AuditEvent.objects.order_by("-id").first()
    if head is not None:
        AuditCheckpoint.objects.create(
            pk=CHECKPOINT_ID, event_id=head.pk, event_hash=head.row_hash, event_created_at=head.created_at,
            signature=audit_checkpoint_signature(event_id=head.pk, event_hash=head.row_hash,
                                                 event_created_at=head.created_at))


class Migration(migrations.Migration):

    dependencies = [
        ("access", "0007_apitoken_scopes"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("event_id", models.PositiveBigIntegerField()),
                ("event_hash", models.CharField(max_length=64)),
                ("event_created_at", models.DateTimeField()),
                ("signature", models.CharField(max_length=64)),
            ],
        ),
        migrations.RunPython(sign_existing_head, migrations.RunPython.noop),
    ]
