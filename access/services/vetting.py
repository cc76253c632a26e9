"""Automated vetting: each check yields a signal with an explanation reviewers (and, where it
decides the outcome, applicants) can read. Nothing is rejected silently: red signals only block
approval (the embargo) or send the application to a human."""

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_countries import countries

from access.audit import audit_record
from access.models import Application, Grant, VettingSignal
from access.validators import domain_matches, email_domain, is_academic_domain
from artifacts.models import Release

Level = VettingSignal.Level
SIGNAL_LABELS = {
    "email_verified": "E-mail verified",
    "email_domain": "E-mail domain",
    "disposable_email": "Disposable e-mail",
    "embargo": "Embargo",
    "duplicates": "Duplicates",
    "earlier_rejections": "Earlier rejections",
    "reference": "Reference",
    "revoked_access": "Revoked access",
    "staff_applicant": "Staff applicant",
}
# What each check asks of an applicant, in the words a release page promises automatic approval with.
SIGNAL_PROMISES = {
    "email_verified": "your e-mail address is verified",
    "email_domain": "it belongs to your institution (a known research domain)",
    "disposable_email": "it is not a disposable address",
    "embargo": "you work outside the embargoed countries",
    "duplicates": "no other account of yours has applied for the release",
    "earlier_rejections": "no earlier application of yours was rejected",
    "reference": "students: your supervisor or reference confirmed your project",
    "revoked_access": "you have never had access revoked",
    "staff_applicant": "you are not a member of staff (staff always need another reviewer)",
}


@dataclass(frozen=True)
class Check:
    code: str
    level: str
    explanation: str
    blocking: bool = False


def check_email_verified(application: Application) -> Check:
    user = application.user
    if EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists():
        return Check("email_verified", Level.GREEN, f"{user.email} was verified by a confirmation link.")
    return Check("email_verified", Level.RED, f"{user.email} has not been verified.")


def check_email_domain(application: Application) -> Check:
    domain = email_domain(application.user.email)
    institution = application.institution
    if domain_matches(domain, institution.email_domains):
        return Check("email_domain", Level.GREEN,
                     f"{domain} is one of {institution.name}'s registered e-mail domains.")
    if is_academic_domain(domain):
        return Check("email_domain", Level.GREEN, f"{domain} has an academic suffix (.edu, .ac.xx or .edu.xx).")
    registered = ", ".join(institution.email_domains) or "none registered"
    return Check("email_domain", Level.AMBER,
                 f"{domain} is neither a registered domain of {institution.name} ({registered}) "
                 f"nor an academic suffix: check the affiliation.")


def check_disposable_email(application: Application) -> Check:
    domain = email_domain(application.user.email)
    if domain in DISPOSABLE_DOMAINS:
        return Check("disposable_email", Level.RED, f"{domain} is a disposable (throw-away) e-mail provider.")
    return Check("disposable_email", Level.GREEN, f"{domain} is not a known disposable e-mail provider.")


def check_embargo(application: Application) -> Check:
    country = application.country.code
    name = dict(countries).get(country, country)
    if country in settings.ACCESS_EMBARGOED_COUNTRIES:
        return Check("embargo", Level.RED, blocking=True, explanation=(
            f"The licence does not allow access from {name}, which is on the embargo list of sanctioned "
            f"jurisdictions; this application cannot be approved."))
    return Check("embargo", Level.GREEN, f"{name} is not on the embargo list.")


def _same_person(application: Application) -> Q:
    same = Q(user__email__iexact=application.user.email)
    if application.orcid:
        same |= Q(orcid=application.orcid)
    same |= Q(legal_name__iexact=application.legal_name, institution=application.institution)
    return same


def check_duplicates(application: Application) -> Check:
    others = (Application.objects.filter(_same_person(application))
              .exclude(user=application.user).exclude(status=Application.Status.DRAFT)
              .values_list("pk", flat=True)[:5])
    others = list(others)
    if others:
        listed = ", ".join(f"#{pk}" for pk in others)
        return Check("duplicates", Level.AMBER,
                     f"Another account applied with the same ORCID iD or the same name and institution: {listed}.")
    return Check("duplicates", Level.GREEN, "No other account applied with the same ORCID iD, or name and institution.")


def check_earlier_rejections(application: Application) -> Check:
    rejected = list(Application.objects.filter(_same_person(application), status=Application.Status.REJECTED)
                    .exclude(pk=application.pk).values_list("pk", "decision_reason")[:5])
    if rejected:
        listed = "; ".join(f"#{pk}: {reason}" for pk, reason in rejected)
        return Check("earlier_rejections", Level.AMBER, f"Earlier rejections of the same person: {listed}")
    return Check("earlier_rejections", Level.GREEN, "No earlier rejections of the same e-mail, ORCID iD or name.")


def check_reference(application: Application) -> Check:
    status = application.reference_status
    who = f"{application.supervisor_name} <{application.supervisor_email}>"
    if status == Application.Reference.NOT_REQUIRED:
        return Check("reference", Level.GREEN, "No reference required (not a student).")
    if status == Application.Reference.CONFIRMED:
        return Check("reference", Level.GREEN, f"{who} confirmed the project.")
    if status == Application.Reference.DECLINED:
        return Check("reference", Level.RED, f"{who} declined to confirm the project.")
    return Check("reference", Level.AMBER, f"Waiting for {who} to confirm through the e-mailed link.")


def check_revoked_access(application: Application) -> Check:
    """A revoked grant for this release, of this account or of the same person under another one, is red: a
    re-application must not quietly undo a revocation, so a reviewer decides it."""
    same_person = Application.objects.filter(_same_person(application)).exclude(pk=application.pk)
    revoked = list(Grant.objects.filter(Q(user=application.user) | Q(application__in=same_person),
                                        release=application.release, revoked_at__isnull=False)
                   .select_related("user", "revoked_by").order_by("-revoked_at")[:5])
    if revoked:
        listed = "; ".join(
            f"{grant.user.email}'s access was revoked on {grant.revoked_at:%d %B %Y} by "
            f"{grant.revoked_by.email if grant.revoked_by else 'staff'}: {grant.revoke_reason}"
            for grant in revoked)
        return Check("revoked_access", Level.RED,
                     f"Access to {application.release.name} was revoked before for the same person: {listed}")
    return Check("revoked_access", Level.GREEN,
                 f"No revoked access to {application.release.name} for the same e-mail, ORCID iD or name.")


def check_staff_applicant(application: Application) -> Check:
    """Staff could tune the signals (an institution's e-mail domains) in their own favour, so their applications
    always wait for another reviewer (``ensure_can_review`` refuses a reviewer's own application)."""
    if application.user.is_staff:
        return Check("staff_applicant", Level.AMBER,
                     "The applicant is staff: never approved automatically; another reviewer must decide.")
    return Check("staff_applicant", Level.GREEN, "The applicant is not staff.")


CHECKS = [check_email_verified, check_email_domain, check_disposable_email, check_embargo, check_duplicates,
          check_earlier_rejections, check_reference, check_revoked_access, check_staff_applicant]


def vetting_summary(checks: list[Check]) -> str:
    if any(check.blocking for check in checks):
        return Application.Vetting.BLOCKED
    if all(check.level == Level.GREEN for check in checks):
        return Application.Vetting.GREEN
    return Application.Vetting.ATTENTION


@transaction.atomic
def application_vet(*, application: Application) -> Application:
    """Run every check, store the signals, and approve automatically where the release allows it."""
    from access.services.applications import application_approve

    application = Application.objects.select_for_update().select_related(
        "user", "institution", "release").get(pk=application.pk)
    if application.status not in Application.OPEN_STATUSES - {Application.Status.DRAFT}:
        return application
    checks = [check(application) for check in CHECKS]
    now = timezone.now()
    for check in checks:
        VettingSignal.objects.update_or_create(
            application=application, code=check.code,
            defaults={"level": check.level, "blocking": check.blocking, "explanation": check.explanation,
                      "checked_at": now},
        )
    before = application.vetting
    application.vetting = vetting_summary(checks)
    application.save(update_fields=["vetting", "updated_at"])
    audit_record(actor=None, action="application.vet", target=application, before={"vetting": before},
                 after={"vetting": application.vetting, "signals": {check.code: check.level for check in checks}})
    if application.vetting == Application.Vetting.BLOCKED:
        from access.notifications import notify_applicant

        if before != Application.Vetting.BLOCKED:
            notify_applicant(application=application, template="blocked",
                             reasons=[check.explanation for check in checks if check.blocking])
    elif (application.vetting == Application.Vetting.GREEN
          and application.status == Application.Status.SUBMITTED
          and application.release.approval_policy == Release.ApprovalPolicy.AUTOMATIC):
        application_approve(application=application, by=None,
                            reason="Approved automatically: every vetting check is green.")
    return application
