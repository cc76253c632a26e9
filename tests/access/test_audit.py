"""The audit log: append-only in PostgreSQL, hash-chained, verified by `manage.py verify_audit`."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError

from access.audit import audit_verify
from access.models import AuditEvent
from access.services.applications import application_reject
from tests.access.conftest import apply

pytestmark = pytest.mark.django_db


def make_history(researcher, reviewer, release, run_on_commit):
    with run_on_commit():
        application = apply(researcher, release)
    application_reject(application=application, by=reviewer, reason="Out of scope.", ip_address="203.0.113.9")
    return application


def test_each_transition_records_actor_before_after_reason_ip_and_time(researcher, reviewer, release,
                                                                      run_on_commit):
    application = make_history(researcher, reviewer, release, run_on_commit)
    event = AuditEvent.objects.get(action="application.reject")
    assert event.actor == reviewer
    assert (event.target_type, event.target_id) == ("access.application", str(application.pk))
    assert event.before == {"status": "submitted"}
    assert event.after["status"] == "rejected"
    assert event.reason == "Out of scope."
    assert event.ip_address == "203.0.113.9"
    assert event.created_at is not None


def test_the_database_refuses_updates_and_deletes(researcher, reviewer, release, run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    event = AuditEvent.objects.first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="nothing happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.reason = "edited"
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


def test_verify_audit_passes_on_an_intact_chain(researcher, reviewer, release, run_on_commit, capsys):
    make_history(researcher, reviewer, release, run_on_commit)
    call_command("verify_audit")
    assert "Audit log intact" in capsys.readouterr().out


def _tamper(sql: str, params: list) -> None:
    """What a database superuser could do: switch triggers off for the session and change history."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET session_replication_role = origin")


def test_verify_audit_names_the_first_edited_row(researcher, reviewer, release, run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    victim = AuditEvent.objects.get(action="application.reject")
    _tamper("UPDATE access_auditevent SET reason = %s WHERE id = %s", ["Approved, really.", victim.pk])
    checked, problem = audit_verify()
    assert problem.event_id == victim.pk and "edited" in problem.problem
    with pytest.raises(CommandError, match=f"row {victim.pk}"):
        call_command("verify_audit")


def test_verify_audit_detects_a_deleted_row(researcher, reviewer, release, run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    _tamper("DELETE FROM access_auditevent WHERE id = %s", [ids[2]])
    _, problem = audit_verify()
    assert problem.event_id == ids[3] and "deleted" in problem.problem


@pytest.mark.django_db(transaction=True)
def test_the_trigger_does_not_stop_test_database_flushes(researcher, reviewer, release):
    """Transactional tests are flushed with TRUNCATE, which the row trigger does not fire on."""
    application = apply(researcher, release)
    application_reject(application=application, by=reviewer, reason="No.")
    assert AuditEvent.objects.count() >= 3
