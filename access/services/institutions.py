"""Institutions named by applicants."""

from django.db import transaction

from access.audit import audit_record
from access.models import Institution, User


@transaction.atomic
def institution_resolve(*, name: str, ror_id: str = "", sector: str = Institution.Sector.ACADEMIA,
                        by: User | None) -> Institution:
    """The institution with this name (case-insensitive), created when new."""
    name = " ".join(name.split())
    institution = Institution.objects.filter(name__iexact=name).first()
    if institution is not None:
        return institution
    institution = Institution.objects.create(name=name, ror_id=ror_id.strip(), sector=sector)
    audit_record(actor=by, action="institution.create", target=institution,
                 after={"name": name, "ror_id": institution.ror_id})
    return institution
