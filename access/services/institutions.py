"""Institutions named by applicants."""

from django.db import transaction

from access.audit import audit_record
from access.models import Institution, User


@transaction.atomic
def institution_resolve(*, name: str, ror_id: str = "", sector: str = Institution.Sector.ACADEMIA,
                        by: User | None) -> Institution:
    """The institution with this name (case-insensitive), created unconfirmed when new."""
    name = " ".join(name.split())
    institution = Institution.objects.filter(name__iexact=name).first()
    if institution is not None:
        return institution
    institution = Institution.objects.create(name=name, ror_id=ror_id.strip(), sector=sector)
    audit_record(actor=by, action="institution.create", target=institution,
                 after={"name": name, "ror_id": institution.ror_id})
    return institution


@transaction.atomic
def institution_confirm(*, institution: Institution, by: User | None) -> Institution:
    """Staff vouch for this institution: from now on every applicant is offered its name."""
    institution = Institution.objects.select_for_update().get(pk=institution.pk)
    if institution.confirmed:
        return institution
    institution.confirmed = True
    institution.save(update_fields=["confirmed"])
    audit_record(actor=by, action="institution.confirm", target=institution,
                 before={"confirmed": False}, after={"confirmed": True})
    return institution
