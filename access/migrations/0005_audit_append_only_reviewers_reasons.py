"""The audit log refuses UPDATE and DELETE (PostgreSQL trigger); the Reviewers group; reason templates.

TRUNCATE (used by test flushes and deliberate resets by a database owner) does not fire row-level
triggers, so it still works.
"""

from django.db import migrations

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION access_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = 'access_auditevent is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER access_auditevent_append_only
    BEFORE UPDATE OR DELETE ON access_auditevent
    FOR EACH ROW EXECUTE FUNCTION access_auditevent_refuse_change();
"""
DROP_TRIGGER_SQL = """
DROP TRIGGER IF EXISTS access_auditevent_append_only ON access_auditevent;
DROP FUNCTION IF EXISTS access_auditevent_refuse_change();
"""

REASON_TEMPLATES = [
    ("reject", "Intended use out of scope",
     "The research use you describe is outside what the licence allows (non-commercial research)."),
    ("reject", "Identity could not be verified",
     "We could not verify your identity or your affiliation with the institution you named."),
    ("reject", "Embargoed jurisdiction",
     "The licence does not allow access from the country you gave."),
    ("request_info", "Describe the research in more detail",
     "Please describe your research question, the experiments you plan with the weights, and how results "
     "will be published."),
    ("request_info", "Institutional e-mail address",
     "Please tell us an institutional e-mail address or a web page that confirms your affiliation."),
    ("request_info", "Supervisor confirmation",
     "Please give the name and institutional e-mail address of a supervisor who can confirm your project."),
]


def install_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER_SQL)


def remove_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER_SQL)


def create_reviewers_and_reasons(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    ReasonTemplate = apps.get_model("access", "ReasonTemplate")
    content_type, _ = ContentType.objects.get_or_create(app_label="access", model="application")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="review_application",
        defaults={"name": "Can review licence applications"},
    )
    group, _ = Group.objects.get_or_create(name="Reviewers")
    group.permissions.add(permission)
    for kind, title, text in REASON_TEMPLATES:
        ReasonTemplate.objects.get_or_create(kind=kind, title=title, defaults={"text": text})


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0004_applications_vetting_audit"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(install_trigger, remove_trigger),
        migrations.RunPython(create_reviewers_and_reasons, migrations.RunPython.noop),
    ]
