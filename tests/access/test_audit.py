"""The audit log: append-only in PostgreSQL, hash-chained, verified by `manage.py verify_audit`."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError

from access.audit import GENESIS_HASH, audit_record, audit_row_hash, audit_verify
from access.models import AuditCheckpoint, AuditEvent
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
    postgresql = connection.vendor == "postgresql"  # SQLite has no append-only trigger to switch off
    with connection.cursor() as cursor:
        if postgresql:
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        if postgresql:
            cursor.execute("SET session_replication_role = origin")


@pytest.mark.audit_tampering
def test_verify_audit_names_every_edited_row(researcher, reviewer, release, run_on_commit, capsys):
    make_history(researcher, reviewer, release, run_on_commit)
    first, *_, last = AuditEvent.objects.order_by("id")
    _tamper("UPDATE access_auditevent SET reason = %s WHERE id IN (%s, %s)", ["Approved, really.", first.pk, last.pk])
    checked, problems = audit_verify()
    assert [(problem.event_id, "edited" in problem.problem) for problem in problems] == [(first.pk, True),
                                                                                       (last.pk, True)]
    with pytest.raises(CommandError, match="2 problem"):
        call_command("verify_audit")
    printed = capsys.readouterr().err
    assert f"row {first.pk}:" in printed and f"row {last.pk}:" in printed


@pytest.mark.audit_tampering
def test_verify_audit_detects_a_deleted_row(researcher, reviewer, release, run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    _tamper("DELETE FROM access_auditevent WHERE id = %s", [ids[2]])
    _, [problem] = audit_verify()
    assert problem.event_id == ids[3] and "deleted" in problem.problem


@pytest.mark.audit_tampering
@pytest.mark.parametrize("deleted", [1, 2])
def test_verify_audit_detects_deletion_of_the_newest_rows(researcher, reviewer, release, run_on_commit, deleted):
    make_history(researcher, reviewer, release, run_on_commit)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    _tamper("DELETE FROM access_auditevent WHERE id >= %s", [ids[-deleted]])
    _, [problem] = audit_verify()
    assert problem.event_id == ids[-1] and "newest rows were deleted" in problem.problem
    with pytest.raises(CommandError, match="Audit log tampered"):
        call_command("verify_audit")


@pytest.mark.audit_tampering
def test_a_forged_checkpoint_is_reported(researcher, reviewer, release, run_on_commit):
    """Deleting the newest row and pointing the checkpoint at the new last row needs SECRET_KEY."""
    make_history(researcher, reviewer, release, run_on_commit)
    *_, new_head, newest = AuditEvent.objects.order_by("id")
    _tamper("DELETE FROM access_auditevent WHERE id = %s", [newest.pk])
    AuditCheckpoint.objects.update(event_id=new_head.pk, event_hash=new_head.row_hash,
                                   event_created_at=new_head.created_at, signature="0" * 64)
    _, [problem] = audit_verify()
    assert problem.event_id is None and "invalid signature" in problem.problem


@pytest.mark.audit_tampering
def test_a_missing_checkpoint_is_reported(researcher, reviewer, release, run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    AuditCheckpoint.objects.all().delete()
    _, [problem] = audit_verify()
    assert "checkpoint of the chain's head is missing" in problem.problem


@pytest.mark.audit_tampering
def test_a_row_appended_with_a_correct_hash_but_not_by_the_portal_is_reported(researcher, reviewer, release,
                                                                                run_on_commit):
    make_history(researcher, reviewer, release, run_on_commit)
    head = AuditEvent.objects.order_by("id").last()
    fields = {"created_at": head.created_at, "actor_id": reviewer.pk, "action": "grant.create",
              "target_type": "access.grant", "target_id": "999", "before": {}, "after": {}, "reason": "",
              "ip_address": None}
    forged = AuditEvent.objects.create(prev_hash=head.row_hash,
                                       row_hash=audit_row_hash(prev_hash=head.row_hash, **fields), **fields)
    _, [problem] = audit_verify()
    assert problem.event_id == forged.pk and "not written by the portal" in problem.problem


@pytest.mark.parametrize(("given", "stored"), [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("::1%eth0", "::1"), ("2001:DB8:0:0::1", "2001:db8::1"),
    ("not-an-ip", None), ("999.1.1.1", None), ("", None),
])
def test_an_honest_row_verifies_whatever_the_address_spelling(researcher, reviewer, release, run_on_commit,
                                                               given, stored):
    with run_on_commit():
        application = apply(researcher, release)
    application_reject(application=application, by=reviewer, reason="Out of scope.", ip_address=given)
    assert AuditEvent.objects.get(action="application.reject").ip_address == stored
    assert audit_verify() == (AuditEvent.objects.count(), [])


def test_an_honest_row_verifies_whatever_its_json_and_target(reviewer, release):
    """What the hash covers is what the database gives back: floats, unicode, nesting, dates, long ids."""
    import datetime
    import decimal

    before = {"ratio": 0.1, "big": 2 ** 53 + 1, "nested": {"b": [1, 2.5, None, True], "a": "é—\u2028"},
              "when": datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)}
    after = {"amount": decimal.Decimal("1.10"), "empty": {}, "list": [], "text": "line\r\nbreak \"quoted\""}
    with transaction.atomic():
        audit_record(actor=reviewer, action="release.edit", target=release, before=before, after=after,
                     reason="Mixed\ncontent ✓", ip_address="198.51.100.7")
        audit_record(actor=None, action="release.edit", target=reviewer, before=None, after=None)
    assert audit_verify() == (2, [])


def test_the_first_row_starts_from_the_genesis_hash_and_is_signed_as_the_head(reviewer, release):
    with transaction.atomic():
        event = audit_record(actor=reviewer, action="release.edit", target=release)
    assert event.prev_hash == GENESIS_HASH
    checkpoint = AuditCheckpoint.objects.get()
    assert (checkpoint.event_id, checkpoint.event_hash) == (event.pk, event.row_hash)


@pytest.mark.django_db(transaction=True)
def test_the_trigger_does_not_stop_test_database_flushes(researcher, reviewer, release):
    """Transactional tests are flushed with TRUNCATE, which the row trigger does not fire on."""
    application = apply(researcher, release)
    application_reject(application=application, by=reviewer, reason="No.")
    assert AuditEvent.objects.count() >= 3
