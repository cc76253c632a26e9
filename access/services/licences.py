"""Licence versions and their acceptance (a checkbox plus the typed full legal name)."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from access.audit import audit_record
from access.models import Licence, LicenceAcceptance, LicenceVersion, User
from access.signals import licence_version_published


@transaction.atomic
def licence_version_publish(*, licence: Licence, text_markdown: str, by: User | None) -> LicenceVersion:
    """Publish a new text: everyone must re-accept it before their next download or playground use."""
    if not text_markdown.strip():
        raise ValidationError({"text_markdown": "The licence text cannot be empty."})
    number = (licence.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    version = LicenceVersion.objects.create(
        licence=licence, number=number, text_markdown=text_markdown, published_at=timezone.now()
    )
    audit_record(actor=by, action="licence.publish", target=version,
                 after={"licence": licence.slug, "number": number, "sha256": version.sha256})
    licence_version_published.send(sender=LicenceVersion, version=version)
    return version


def signature_problems(*, accepted: bool, signature_name: str, expected_name: str = "") -> dict[str, str]:
    """What is wrong with a licence signature, by form field (empty when it may be recorded)."""
    errors = {}
    if not accepted:
        errors["accept_licence"] = "Tick the box to accept the licence."
    signature = " ".join(signature_name.split())
    if not signature:
        errors["signature_name"] = "Type your full legal name as your signature."
    elif expected_name and signature.casefold() != " ".join(expected_name.split()).casefold():
        errors["signature_name"] = f"Type your full legal name exactly as given: {expected_name}."
    return errors


@transaction.atomic
def licence_accept(*, user: User, licence_version: LicenceVersion, accepted: bool, signature_name: str,
                   expected_name: str = "", ip_address: str | None = None, user_agent: str = "") -> LicenceAcceptance:
    """Record a signature of exactly this text (by its sha256)."""
    errors = signature_problems(accepted=accepted, signature_name=signature_name, expected_name=expected_name)
    if errors:
        raise ValidationError(errors)
    signature = " ".join(signature_name.split())
    if licence_version.published_at is None:
        raise ValidationError({"accept_licence": "This licence version is not published."})
    acceptance = LicenceAcceptance.objects.create(
        user=user, licence_version=licence_version, signature_name=signature, text_sha256=licence_version.sha256,
        ip_address=ip_address or None, user_agent=(user_agent or "")[:500],
    )
    audit_record(actor=user, action="licence.accept", target=acceptance, ip_address=ip_address,
                 after={"licence_version": licence_version.pk, "sha256": licence_version.sha256,
                        "signature_name": signature})
    return acceptance
