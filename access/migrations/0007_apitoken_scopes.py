"""API tokens get scopes; tokens made before keep what they could do."""

from django.db import migrations, models


def scope_existing_tokens(apps, schema_editor):
    """Download and inference for every older token, and review for those made with a confirmed second factor
    (the only ones the review endpoints accepted)."""
    ApiToken = apps.get_model("access", "ApiToken")
    ApiToken.objects.filter(created_with_mfa=False).update(scopes=["download", "inference"])
    ApiToken.objects.filter(created_with_mfa=True).update(scopes=["download", "inference", "review"])


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0006_one_open_application_per_release'),
    ]

    operations = [
        migrations.AddField(
            model_name='apitoken',
            name='scopes',
            field=models.JSONField(default=list, help_text='What the token may call, e.g. ["download", "inference"].'),
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='created_with_mfa',
            field=models.BooleanField(default=False, help_text='Created in a session with a confirmed second factor: may hold the review scope.'),
        ),
        migrations.RunPython(scope_existing_tokens, migrations.RunPython.noop),
    ]
