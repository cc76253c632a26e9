"""The append-only, hash-chained audit log: record events and verify the chain."""

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from access.models import AuditEvent

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
        "ip_address": ipaddress.ip_address(ip_address).compressed if ip_address else None,
    }
    prev_hash = last or GENESIS_HASH
    return AuditEvent.objects.create(prev_hash=prev_hash, row_hash=audit_row_hash(prev_hash=prev_hash, **fields),
                                     **fields)


@dataclass(frozen=True)
class AuditProblem:
    event_id: int
    problem: str


def audit_verify() -> tuple[int, AuditProblem | None]:
    """Walk the chain in order: (rows checked, the first bad row or None)."""
    expected_prev = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != expected_prev:
            return checked, AuditProblem(event.pk, "its previous-hash does not match the row before it "
                                                   "(a row was deleted or inserted out of order)")
        recomputed = audit_row_hash(
            prev_hash=event.prev_hash, created_at=event.created_at, actor_id=event.actor_id, action=event.action,
            target_type=event.target_type, target_id=event.target_id, before=event.before, after=event.after,
            reason=event.reason, ip_address=event.ip_address,
        )
        if recomputed != event.row_hash:
            return checked, AuditProblem(event.pk, "its contents do not match its hash (the row was edited)")
        expected_prev = event.row_hash
        checked += 1
    return checked, None
