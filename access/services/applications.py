"""The application state machine: every transition is one atomic service with its audit row.

    draft → submitted → in_review → needs_info ⇄ submitted → approved | rejected | withdrawn

Reviewers may decide straight from ``submitted`` (the queue and bulk actions do); the applicant
may withdraw any open application.
"""

from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_countries import countries

from access import selectors
from access.audit import audit_record
from access.errors import AccessError, TransitionError
from access.models import (
    ANSWER_MAX_CHARS, INTENDED_USE_MAX_CHARS, PUBLICATIONS_MAX_CHARS, Application, Grant, Institution,
    LicenceAcceptance, User,
)
from access.notifications import absolute_url, notify, notify_applicant
from access.roles import is_reviewer
from access.services.institutions import institution_resolve
from access.services.licences import licence_accept, signature_problems
from access.validators import orcid_normalise, ror_normalise
from artifacts.models import Release

S = Application.Status
TRANSITIONS: dict[str, set[str]] = {
    S.DRAFT: {S.SUBMITTED, S.WITHDRAWN},
    S.SUBMITTED: {S.IN_REVIEW, S.NEEDS_INFO, S.APPROVED, S.REJECTED, S.WITHDRAWN},
    S.IN_REVIEW: {S.NEEDS_INFO, S.APPROVED, S.REJECTED, S.WITHDRAWN},
    S.NEEDS_INFO: {S.SUBMITTED, S.REJECTED, S.WITHDRAWN},
    S.APPROVED: set(),
    S.REJECTED: set(),
    S.WITHDRAWN: set(),
}
PROFILE_FIELDS = ["legal_name", "institution_name", "institution_ror_id", "role", "sector", "country", "orcid",
                  "publications", "intended_use", "supervisor_name", "supervisor_email"]
REFERENCE_SALT = "access.reference"


# Validation --------------------------------------------------------------------------------------

def too_long_message(limit: int, text: str) -> str:
    return f"Keep this to at most {limit:,} characters (you wrote {len(text):,})."


def application_clean_fields(fields: dict) -> dict:
    """The profile fields, normalised; raises ValidationError naming each bad field."""
    data = {name: (fields.get(name) or "") for name in PROFILE_FIELDS}
    data = {name: value.strip() if isinstance(value, str) else value for name, value in data.items()}
    errors: dict[str, str] = {}
    if not data["legal_name"]:
        errors["legal_name"] = "Give your full legal name."
    if not data["institution_name"]:
        errors["institution_name"] = "Name your institution."
    if data["institution_ror_id"]:
        ror = ror_normalise(data["institution_ror_id"])
        if ror is None:
            errors["institution_ror_id"] = "This is not a ROR id (e.g. https://ror.org/052gg0110)."
        data["institution_ror_id"] = ror or data["institution_ror_id"]
    if data["role"] not in Application.Role.values:
        errors["role"] = "Choose your role from the list."
    if not data["sector"]:
        data["sector"] = Institution.Sector.ACADEMIA
    if data["sector"] not in Institution.Sector.values:
        errors["sector"] = "Choose a sector from the list."
    data["country"] = str(data["country"]).upper()
    if data["country"] not in dict(countries):
        errors["country"] = "Choose your country from the list."
    if data["orcid"]:
        orcid = orcid_normalise(data["orcid"])
        if orcid is None:
            errors["orcid"] = "This is not a valid ORCID iD (format 0000-0000-0000-0000, checksum failed)."
        data["orcid"] = orcid or data["orcid"]
    minimum = settings.ACCESS_INTENDED_USE_MIN_CHARS
    if len(data["intended_use"]) < minimum:
        errors["intended_use"] = (f"Describe your intended research use in at least {minimum} characters "
                                  f"(you wrote {len(data['intended_use'])}).")
    for name, limit in [("intended_use", INTENDED_USE_MAX_CHARS), ("publications", PUBLICATIONS_MAX_CHARS)]:
        if len(data[name]) > limit:
            errors[name] = too_long_message(limit, data[name])
    if data["role"] in Application.STUDENT_ROLES:
        if not data["supervisor_name"]:
            errors["supervisor_name"] = "Students must name a supervisor or reference."
        if not data["supervisor_email"]:
            errors["supervisor_email"] = "Give your supervisor's or reference's e-mail address."
    if data["supervisor_email"]:
        try:
            validate_email(data["supervisor_email"])
        except ValidationError:
            errors["supervisor_email"] = "Enter a valid e-mail address."
    if errors:
        raise ValidationError(errors)
    return data


def application_problems(*, fields: dict, submit: bool, accept_licence: bool, signature_name: str) -> dict[str, list[str]]:
    """Every problem with an application form's fields, all at once and without saving anything:
    the profile, and the licence signature when submitting (what ``application_create`` refuses)."""
    problems: dict[str, list[str]] = {}
    try:
        application_clean_fields(fields)
    except ValidationError as error:
        problems.update(error.message_dict)
    if submit:
        expected = " ".join(str(fields.get("legal_name") or "").split())
        for name, message in signature_problems(accepted=accept_licence, signature_name=signature_name,
                                                expected_name=expected).items():
            problems.setdefault(name, []).append(message)
    return problems


def _ensure_can_apply(user: User) -> None:
    if not EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists():
        raise PermissionDenied("Verify your e-mail address before applying.")


def _release_problem(*, user: User, release: Release, now) -> str | None:
    """Why this user may not apply for this release now, or None."""
    if selectors.application_open_for(user=user, release=release) is not None:
        return f"You already have an open application for {release.name}."
    if Grant.objects.filter(user=user, release=release, revoked_at__isnull=True, expires_at__gt=now).exists():
        return f"You already have access to {release.name}."
    cooldown = timedelta(days=settings.ACCESS_REAPPLY_COOLDOWN_DAYS)
    rejected = (Application.objects.filter(user=user, release=release, status=S.REJECTED)
                .order_by("-decided_at").first())
    if rejected is not None and rejected.decided_at is not None:
        reopen = rejected.decided_at + cooldown
        if reopen > now:
            return (f"Your application for {release.name} was rejected on {rejected.decided_at:%d %B %Y}; "
                    f"you can re-apply from {reopen:%d %B %Y}.")
    revoked = (Grant.objects.filter(user=user, release=release, revoked_at__isnull=False)
               .order_by("-revoked_at").first())
    if revoked is not None and revoked.revoked_at + cooldown > now:
        return (f"Your access to {release.name} was revoked on {revoked.revoked_at:%d %B %Y}; "
                f"you can re-apply from {revoked.revoked_at + cooldown:%d %B %Y}.")
    return None


def accounts_of_applicant(*, user: User, legal_name: str, orcid: str, institution_name: str):
    """The ids of this user's account and of the same person's other accounts (an application with the same
    ORCID iD, or the same legal name and institution, case-insensitively)."""
    same = Q(applications__legal_name__iexact=legal_name,
             applications__institution__name__iexact=institution_name) if legal_name else Q(pk=user.pk)
    if orcid:
        same |= Q(applications__orcid=orcid)
    return User.objects.filter(Q(pk=user.pk) | same).values("pk")


def reference_email_problem(*, user: User, legal_name: str, orcid: str, institution_name: str,
                            supervisor_email: str) -> str | None:
    """Why this address cannot be the applicant's reference: it is one of their own (the account's e-mail, any
    allauth address of it, or of another account of the same person), or None."""
    if not supervisor_email:
        return None
    accounts = accounts_of_applicant(user=user, legal_name=legal_name, orcid=orcid,
                                     institution_name=institution_name)
    own = (User.objects.filter(pk__in=accounts, email__iexact=supervisor_email).exists()
           or EmailAddress.objects.filter(user__in=accounts, email__iexact=supervisor_email).exists())
    if own:
        return "This is one of your own e-mail addresses: name someone else as your supervisor or reference."
    return None


def reference_requests_problem(*, user: User, supervisor_email: str, now) -> str | None:
    """Why no further reference e-mail may be sent now (one per submitted student application, counted over the
    last 24 hours per applicant and per recipient address), or None."""
    sent = (Application.objects.filter(submitted_at__gte=now - timedelta(days=1))
            .exclude(reference_status=Application.Reference.NOT_REQUIRED))
    if sent.filter(user=user).count() >= settings.ACCESS_REFERENCE_EMAILS_PER_APPLICANT_PER_DAY:
        return ("You have asked for too many references in the last 24 hours; "
                "submit this application tomorrow.")
    if sent.filter(supervisor_email__iexact=supervisor_email).count() >= (
            settings.ACCESS_REFERENCE_EMAILS_PER_RECIPIENT_PER_DAY):
        return ("This address has received too many reference requests in the last 24 hours; "
                "submit this application tomorrow or name another reference.")
    return None


def ensure_can_review(*, by: User, application: Application) -> None:
    """The one rule of who may decide an application: a reviewer, never on their own application (staff
    applications are never approved automatically either: see ``check_staff_applicant``)."""
    if not is_reviewer(by):
        raise PermissionDenied("Only staff with the review permission can review applications.")
    if by.pk == application.user_id:
        raise PermissionDenied("Nobody may review their own application: another reviewer must decide it.")


def _ensure_owner(*, by: User, application: Application) -> None:
    if by.pk != application.user_id:
        raise PermissionDenied("Only the applicant can do this.")


def _transition(application: Application, to: str, *, actor: User | None, action: str, reason: str = "",
                ip_address: str | None = None, extra: dict | None = None) -> Application:
    """Move to ``to`` if the state machine allows it, saving ``extra`` fields and the audit row."""
    before = application.status
    if to not in TRANSITIONS[before]:
        raise TransitionError(
            f"This application is {application.get_status_display().lower()}; it cannot be "
            f"{Application.Status(to).label.lower()} now."
        )
    application.status = to
    for name, value in (extra or {}).items():
        setattr(application, name, value)
    application.save()
    after = {"status": to}
    after.update({name: (value.pk if hasattr(value, "pk") else value) for name, value in (extra or {}).items()
                  if name not in {"info_response"}})
    audit_record(actor=actor, action=action, target=application, before={"status": before}, after=after,
                 reason=reason, ip_address=ip_address)
    return application


def _locked(application: Application) -> Application:
    """Re-read the application under a row lock, so concurrent decisions serialise."""
    return Application.objects.select_for_update().select_related("user", "release").get(pk=application.pk)


# Applicant actions -------------------------------------------------------------------------------

@transaction.atomic
def application_create(*, user: User, releases: list[Release], fields: dict, submit: bool,
                       accept_licence: bool = False, signature_name: str = "", ip_address: str | None = None,
                       user_agent: str = "") -> list[Application]:
    """One application per requested release, saved as drafts or submitted with the licence signed."""
    _ensure_can_apply(user)
    data = application_clean_fields(fields)
    problem = reference_email_problem(user=user, legal_name=data["legal_name"], orcid=data["orcid"],
                                      institution_name=data["institution_name"],
                                      supervisor_email=data["supervisor_email"])
    if problem:
        raise ValidationError({"supervisor_email": problem})
    now = timezone.now()
    if not releases:
        raise ValidationError({"releases": "Choose at least one release."})
    problems = [problem for release in releases if (problem := _release_problem(user=user, release=release, now=now))]
    if problems:
        raise ValidationError({"releases": problems})
    institution = institution_resolve(name=data["institution_name"], ror_id=data["institution_ror_id"],
                                      sector=data["sector"], by=user)
    profile = {name: data[name] for name in PROFILE_FIELDS if not name.startswith("institution_")}
    applications = []
    for release in releases:
        previous = (Application.objects.filter(user=user, release=release, status=S.REJECTED)
                    .order_by("-decided_at").first())
        try:
            with transaction.atomic():  # a concurrent request may have just created the same application
                application = Application.objects.create(user=user, release=release, institution=institution,
                                                         previous_application=previous, **profile)
        except IntegrityError:
            raise ValidationError({"releases": [f"You already have an open application for {release.name}."]}) from None
        audit_record(actor=user, action="application.create", target=application, ip_address=ip_address,
                     after={"status": S.DRAFT, "release": release.slug,
                            "previous_application": previous.pk if previous else None})
        applications.append(application)
    if submit:
        acceptances = _accept_licences(user=user, releases=releases, accept_licence=accept_licence,
                                       signature_name=signature_name, expected_name=data["legal_name"],
                                       ip_address=ip_address, user_agent=user_agent)
        for application in applications:
            _submit(application, acceptance=acceptances[application.release_id], ip_address=ip_address)
    return applications


def _accept_licences(*, user: User, releases: list[Release], accept_licence: bool, signature_name: str,
                     expected_name: str, ip_address: str | None, user_agent: str) -> dict[int, LicenceAcceptance]:
    """Sign the current licence text of each release once per distinct version: {release id: acceptance}."""
    by_version: dict[int, LicenceAcceptance] = {}
    result = {}
    for release in releases:
        version = release.licence.current_version()
        if version is None:
            raise ValidationError({"releases": f"{release.name} has no published licence yet."})
        if version.pk not in by_version:
            by_version[version.pk] = licence_accept(
                user=user, licence_version=version, accepted=accept_licence, signature_name=signature_name,
                expected_name=expected_name, ip_address=ip_address, user_agent=user_agent)
        result[release.pk] = by_version[version.pk]
    return result


def _submit(application: Application, *, acceptance: LicenceAcceptance, ip_address: str | None) -> None:
    if application.is_student:
        problem = (reference_email_problem(user=application.user, legal_name=application.legal_name,
                                           orcid=application.orcid, institution_name=application.institution.name,
                                           supervisor_email=application.supervisor_email)
                   or reference_requests_problem(user=application.user,
                                                 supervisor_email=application.supervisor_email, now=timezone.now()))
        if problem:
            raise ValidationError({"supervisor_email": problem})
    reference = Application.Reference.PENDING if application.is_student else Application.Reference.NOT_REQUIRED
    _transition(application, S.SUBMITTED, actor=application.user, action="application.submit", ip_address=ip_address,
                extra={"licence_acceptance": acceptance, "submitted_at": timezone.now(),
                       "reference_status": reference, "vetting": Application.Vetting.PENDING})
    notify_applicant(application=application, template="submitted")
    if application.is_student:
        _send_reference_request(application)
    _vet_after_commit(application)


@transaction.atomic
def application_submit(*, application: Application, by: User, accept_licence: bool, signature_name: str,
                       ip_address: str | None = None, user_agent: str = "") -> Application:
    """Submit a draft, signing the release's current licence."""
    application = _locked(application)
    _ensure_owner(by=by, application=application)
    if application.status != S.DRAFT:
        raise TransitionError("Only a draft can be submitted; answer an information request on its page.")
    problem = _release_problem_excluding(application)
    if problem:
        raise ValidationError({"releases": [problem]})
    acceptances = _accept_licences(user=by, releases=[application.release], accept_licence=accept_licence,
                                   signature_name=signature_name, expected_name=application.legal_name,
                                   ip_address=ip_address, user_agent=user_agent)
    _submit(application, acceptance=acceptances[application.release_id], ip_address=ip_address)
    return application


def _release_problem_excluding(application: Application) -> str | None:
    others = Application.objects.filter(user=application.user, release=application.release,
                                        status__in=Application.OPEN_STATUSES).exclude(pk=application.pk)
    if others.exists():
        return f"You already have an open application for {application.release.name}."
    return None


@transaction.atomic
def application_respond(*, application: Application, by: User, response: str,
                        ip_address: str | None = None) -> Application:
    """The applicant answers an information request in place; the application goes back to the queue."""
    application = _locked(application)
    _ensure_owner(by=by, application=application)
    response = response.strip()
    if not response:
        raise ValidationError({"response": "Write your answer to the reviewer's request."})
    if len(response) > ANSWER_MAX_CHARS:
        raise ValidationError({"response": too_long_message(ANSWER_MAX_CHARS, response)})
    if application.status != S.NEEDS_INFO:
        raise TransitionError("No information has been requested on this application.")
    _transition(application, S.SUBMITTED, actor=by, action="application.respond", reason=response,
                ip_address=ip_address, extra={"info_response": response, "vetting": Application.Vetting.PENDING})
    notify_applicant(application=application, template="responded")
    _vet_after_commit(application)
    return application


@transaction.atomic
def application_withdraw(*, application: Application, by: User, ip_address: str | None = None) -> Application:
    application = _locked(application)
    _ensure_owner(by=by, application=application)
    _transition(application, S.WITHDRAWN, actor=by, action="application.withdraw", ip_address=ip_address,
                extra={"decided_at": timezone.now()})
    notify_applicant(application=application, template="withdrawn")
    return application


# Reviewer actions --------------------------------------------------------------------------------

@transaction.atomic
def application_assign(*, application: Application, by: User, assignee: User | None,
                       ip_address: str | None = None) -> Application:
    """Assign a reviewer; a submitted application moves to in_review."""
    application = _locked(application)
    ensure_can_review(by=by, application=application)
    if assignee is not None:
        ensure_can_review(by=assignee, application=application)
    before = application.assigned_to_id
    application.assigned_to = assignee
    if application.status == S.SUBMITTED and assignee is not None:
        _transition(application, S.IN_REVIEW, actor=by, action="application.start_review", ip_address=ip_address,
                    extra={"assigned_to": assignee})
        notify_applicant(application=application, template="in_review")
    else:
        application.save(update_fields=["assigned_to", "updated_at"])
    audit_record(actor=by, action="application.assign", target=application, before={"assigned_to": before},
                 after={"assigned_to": assignee.pk if assignee else None}, ip_address=ip_address)
    return application


@transaction.atomic
def application_approve(*, application: Application, by: User | None, reason: str = "",
                        ip_address: str | None = None) -> Application:
    """Approve and create the Grant; ``by=None`` is the automatic approval of an all-green application."""
    application = _locked(application)
    if by is not None:
        ensure_can_review(by=by, application=application)
    if application.vetting == Application.Vetting.PENDING:
        raise TransitionError("The automated checks have not finished yet; try again in a moment.")
    blocking = list(application.signals.filter(blocking=True))
    if blocking:
        raise TransitionError("This application cannot be approved: " +
                              " ".join(signal.explanation for signal in blocking))
    now = timezone.now()
    _transition(application, S.APPROVED, actor=by, action="application.approve", reason=reason.strip(),
                ip_address=ip_address, extra={"decided_at": now, "decided_by": by, "decision_reason": reason.strip()})
    grant = Grant.objects.create(
        user=application.user, release=application.release, application=application,
        licence_version=application.licence_acceptance.licence_version,
        expires_at=now + timedelta(days=settings.ACCESS_GRANT_DURATION_DAYS),
    )
    audit_record(actor=by, action="grant.create", target=grant, ip_address=ip_address,
                 after={"user": application.user_id, "release": application.release.slug,
                        "expires_at": grant.expires_at.isoformat(), "application": application.pk})
    notify_applicant(application=application, template="approved", grant=grant,
                     download_url=absolute_url("artifacts:release_download", application.release.slug),
                     playground_url=absolute_url("inference_worker:playground"))
    return application


def _decide_with_reason(application: Application, *, by: User, to: str, action: str, reason: str,
                        ip_address: str | None, template: str, extra: dict) -> Application:
    application = _locked(application)
    ensure_can_review(by=by, application=application)
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required; the applicant will see it."})
    _transition(application, to, actor=by, action=action, reason=reason, ip_address=ip_address, extra=extra(reason))
    notify_applicant(application=application, template=template, reason=reason)
    return application


@transaction.atomic
def application_reject(*, application: Application, by: User, reason: str,
                       ip_address: str | None = None) -> Application:
    return _decide_with_reason(
        application, by=by, to=S.REJECTED, action="application.reject", reason=reason, ip_address=ip_address,
        template="rejected",
        extra=lambda text: {"decided_at": timezone.now(), "decided_by": by, "decision_reason": text},
    )


@transaction.atomic
def application_request_info(*, application: Application, by: User, reason: str,
                             ip_address: str | None = None) -> Application:
    return _decide_with_reason(
        application, by=by, to=S.NEEDS_INFO, action="application.request_info", reason=reason,
        ip_address=ip_address, template="needs_info", extra=lambda text: {"info_request": text, "info_response": ""},
    )


# References --------------------------------------------------------------------------------------

def reference_token(application: Application) -> str:
    return signing.dumps({"application": application.pk, "email": application.supervisor_email}, salt=REFERENCE_SALT)


def reference_token_load(token: str) -> dict:
    """The signed payload; raises signing.SignatureExpired or signing.BadSignature."""
    return signing.loads(token, salt=REFERENCE_SALT, max_age=timedelta(days=settings.ACCESS_REFERENCE_LINK_DAYS))


def _send_reference_request(application: Application) -> None:
    notify(template="reference_request", to=[application.supervisor_email],
           context={"application": application,
                    "link": absolute_url("access:reference_respond", reference_token(application)),
                    "days": settings.ACCESS_REFERENCE_LINK_DAYS})


def reference_responder_problem(*, application: Application, responder) -> str | None:
    """Why the person signed in (``responder``, possibly anonymous) may not answer this reference request: it is
    the applicant, under this account or another account of theirs; or None."""
    if responder is None or not responder.is_authenticated:
        return None
    accounts = accounts_of_applicant(user=application.user, legal_name=application.legal_name,
                                     orcid=application.orcid, institution_name=application.institution.name)
    if User.objects.filter(pk__in=accounts).filter(pk=responder.pk).exists():
        return ("You are signed in as the applicant: a reference cannot be answered by the applicant. "
                "The supervisor or reference must open the link themselves.")
    return None


@transaction.atomic
def application_reference_respond(*, application: Application, confirmed: bool, responder=None,
                                  ip_address: str | None = None) -> Application:
    """The supervisor/reference confirms or declines, through their signed link (``responder``: who is signed in
    in that browser, if anyone; the applicant is refused)."""
    application = _locked(application)
    problem = reference_responder_problem(application=application, responder=responder)
    if problem:
        raise PermissionDenied(problem)
    if application.reference_status != Application.Reference.PENDING or application.status not in (
            S.SUBMITTED, S.IN_REVIEW, S.NEEDS_INFO):
        raise AccessError("This reference request has already been answered or the application is closed.")
    before = application.reference_status
    application.reference_status = Application.Reference.CONFIRMED if confirmed else Application.Reference.DECLINED
    application.reference_responded_at = timezone.now()
    application.save(update_fields=["reference_status", "reference_responded_at", "updated_at"])
    audit_record(actor=None, action="application.reference", target=application, ip_address=ip_address,
                 before={"reference_status": before}, after={"reference_status": application.reference_status},
                 reason=f"answered by {application.supervisor_email}")
    _vet_after_commit(application)
    return application


def _vet_after_commit(application: Application) -> None:
    from access.tasks import vet_application_task

    application_id = application.pk
    transaction.on_commit(lambda: vet_application_task.delay(application_id=application_id))
