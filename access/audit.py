"""The append-only, hash-chained audit log: record events and verify the chain."""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from access.http import normalised_ip
from access.models import AuditCheckpoint, AuditEvent

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key: one writer at a time extends the chain.
AUDIT_CHAIN_LOCK = 7_310_001


def _json_safe(value):
    """The value exactly as it will read back from a JSON column."""
    return json.loads(json.dumps(value if value is not None else {}, default=str, sort_keys=True))


def audit_row_hash(*, prev_hash: str, created_at: datetime, actor_id: int | None, action: str, target_type: str,
                   target_id: str, before: dict, after: dict, reason: str, ip_address: str | None) -> str:
    payload = json.dumps(
        [prev_hash, created_at.astimezone(dt_timezone.utc).isoformat(), actor_id, action, target_type, target_id,
         before, after, reason, ip_address],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def audit_record(*, actor, action: str, target: Model, before: dict | None = None, after: dict | None = None,
                 reason: str = "", ip_address: str | None = None) -> AuditEvent:
    """Append one event to the chain; call inside the transaction that makes the change."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction that makes the change.")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK])
    last = AuditEvent.objects.order_by("-id").values_list("row_hash", flat=True).first()
    fields = {
        "created_at": timezone.now(),
        "actor_id": actor.pk if actor is not None else None,
        "action": action,
        "target_type": target._meta.label_lower,
        "target_id": str(target.pk),
        "before": _json_safe(before),
        "after": _json_safe(after),
        "reason": reason or "",
        "ip_address": normalised_ip(ip_address),
    }
    prev_hash = last or GENESIS_HASH
    event = AuditEvent.objects.create(prev_hash=prev_hash, row_hash=audit_row_hash(prev_hash=prev_hash, **fields),
                                      **fields)
    _checkpoint_head(event)
    return event


CHECKPOINT_SALT = "access.audit.checkpoint"
CHECKPOINT_ID = 1


def audit_checkpoint_signature(*, event_id: int, event_hash: str, event_created_at: datetime,
                               secret: str | None = None) -> str:
    """HMAC-SHA256 of the head's id, hash and time, under a key derived from SECRET_KEY for this use only."""
    value = f"{event_id}:{event_hash}:{event_created_at.astimezone(dt_timezone.utc).isoformat()}"
    return salted_hmac(CHECKPOINT_SALT, value, secret=secret, algorithm="sha256").hexdigest()


def _checkpoint_head(event: AuditEvent) -> None:
    """Sign ``event`` as the chain's head (in the caller's transaction, under the chain lock)."""
    AuditCheckpoint.objects.update_or_create(pk=CHECKPOINT_ID, defaults={
        "event_id": event.pk, "event_hash": event.row_hash, "event_created_at": event.created_at,
        "signature": audit_checkpoint_signature(event_id=event.pk, event_hash=event.row_hash,
                                                event_created_at=event.created_at),
    })


def _checkpoint_signed(checkpoint: AuditCheckpoint) -> bool:
    """True when the signature is ours, under SECRET_KEY or one of SECRET_KEY_FALLBACKS (key rotation)."""
    for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]:
        expected = audit_checkpoint_signature(event_id=checkpoint.event_id, event_hash=checkpoint.event_hash,
                                              event_created_at=checkpoint.event_created_at, secret=secret)
        if constant_time_compare(expected, checkpoint.signature):
            return True
    return False


@dataclass(frozen=True)
class AuditProblem:
    event_id: int | None  # None: the problem is the checkpoint itself, not a row
    problem: str


def audit_verify() -> tuple[int, list[AuditProblem]]:
    """Walk the whole chain and check its signed head: (rows checked, every problem found, in row order).

    After a bad row the walk carries on from that row's stored hash, so each edit, deletion or
    insertion is reported once and later ones are not hidden behind the first.
    """
    problems = []
    expected_prev = GENESIS_HASH
    checked = 0
    checkpoint = AuditCheckpoint.objects.filter(pk=CHECKPOINT_ID).first()
    head = None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        checked += 1
        if event.prev_hash != expected_prev:
            problems.append(AuditProblem(event.pk, "its previous-hash does not match the row before it "
                                                   "(a row was deleted or inserted out of order)"))
        recomputed = audit_row_hash(
            prev_hash=event.prev_hash, created_at=event.created_at, actor_id=event.actor_id, action=event.action,
            target_type=event.target_type, target_id=event.target_id, before=event.before, after=event.after,
            reason=event.reason, ip_address=event.ip_address,
        )
        if recomputed != event.row_hash:
            problems.append(AuditProblem(event.pk, "its contents do not match its hash (the row was edited)"))
        if checkpoint is not None and event.pk > checkpoint.event_id:
            problems.append(AuditProblem(event.pk, f"it comes after the signed head (row {checkpoint.event_id}), "
                                                   "so it was not written by the portal"))
        if checkpoint is not None and event.pk == checkpoint.event_id:
            head = event
        expected_prev = event.row_hash
    problems.extend(_checkpoint_problems(checkpoint, head, any_rows=checked > 0))
    return checked, problems


def _checkpoint_problems(checkpoint: AuditCheckpoint | None, head: AuditEvent | None, *,
                         any_rows: bool) -> list[AuditProblem]:
    if checkpoint is None:
        return [AuditProblem(None, "the signed checkpoint of the chain's head is missing")] if any_rows else []
    if not _checkpoint_signed(checkpoint):
        return [AuditProblem(None, f"the checkpoint naming row {checkpoint.event_id} as the head has an invalid "
                                   "signature (it was forged or edited)")]
    if head is None:
        return [AuditProblem(checkpoint.event_id, "the signed head of the chain is missing "
                                                  "(the newest rows were deleted)")]
    if head.row_hash != checkpoint.event_hash or head.created_at != checkpoint.event_created_at:
        return [AuditProblem(head.pk, "the signed head of the chain no longer has the hash and time it was "
                                      "signed with (the newest rows were replaced)")]
    return []
