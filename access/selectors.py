"""Reads of the access app, each scoped to who is asking.

The download side and the playground call ``grant_active_for`` (or ``grants_active_of``) and
``licence_status`` / ``licence_acceptance_required``.
"""

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from access.models import ApiToken, Application, AuditEvent, Grant, LicenceAcceptance, LicenceVersion, User, VettingSignal
from access.workdays import subtract_working_days, working_days_between
from artifacts.models import Release

S = Application.Status


# For downloads and the playground ----------------------------------------------------------------

def grants_active_of(*, user: User) -> QuerySet[Grant]:
    """The user's grants that are neither expired nor revoked."""
    return Grant.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=timezone.now())


def grant_active_for(*, user: User, release: Release) -> Grant | None:
    """The user's active (not expired, not revoked) grant for ``release``, or None."""
    if not user.is_authenticated:
        return None
    return grants_active_of(user=user).filter(release=release).order_by("-expires_at").first()


@dataclass(frozen=True)
class LicenceStatus:
    current: LicenceVersion | None  # the version in force (None: the licence has none published)
    accepted: bool

    @property
    def to_accept(self) -> LicenceVersion | None:
        return self.current if self.current is not None and not self.accepted else None


def licence_status(*, user: User, release: Release) -> LicenceStatus:
    """The release's licence version in force and whether the user accepted it, in one query."""
    versions = release.licence.published_versions()
    if not user.is_authenticated:
        return LicenceStatus(versions.first(), accepted=False)
    current = versions.annotate(
        accepted=Exists(LicenceAcceptance.objects.filter(user=user, licence_version=OuterRef("pk")))).first()
    return LicenceStatus(current, accepted=bool(current is not None and current.accepted))


def licence_acceptance_required(*, user: User, release: Release) -> LicenceVersion | None:
    """The licence version the user must (re)accept before using ``release``, or None when signed."""
    return licence_status(user=user, release=release).to_accept


# For applicants ----------------------------------------------------------------------------------

def applications_of(*, user: User) -> QuerySet[Application]:
    return Application.objects.filter(user=user).select_related("release", "institution").order_by("-created_at")


def application_of(*, user: User, pk) -> Application:
    """The user's own application; raises Application.DoesNotExist for anyone else's (a 404)."""
    return applications_of(user=user).select_related("licence_acceptance__licence_version").get(pk=pk)


def grants_of(*, user: User) -> QuerySet[Grant]:
    return Grant.objects.filter(user=user).select_related("release", "licence_version__licence")


def grant_of(*, user: User, pk) -> Grant:
    return grants_of(user=user).get(pk=pk)


def api_tokens_of(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def api_token_of(*, user: User, pk) -> ApiToken:
    return api_tokens_of(user=user).get(pk=pk)


def email_verified(*, user: User) -> bool:
    from allauth.account.models import EmailAddress

    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()


def applications_open_of(*, user: User) -> QuerySet[Application]:
    """The user's open applications (draft, submitted, in review, waiting for their answer)."""
    return applications_of(user=user).filter(status__in=Application.OPEN_STATUSES)


def application_open_for(*, user: User, release: Release) -> Application | None:
    """The user's open application for ``release`` (there is at most one), or None."""
    return applications_open_of(user=user).filter(release=release).first()


@dataclass(frozen=True)
class ReleaseAccess:
    """Where a visitor stands with a release, so that its page offers the next step and no other.

    ``state``: ``signed_out``, ``unverified`` (verify the e-mail address first), ``licence`` (access
    granted, a licence version to accept), ``approved`` (download), ``pending`` (``application``
    is open) or ``apply``.
    """

    state: str
    grant: Grant | None = None
    application: Application | None = None
    licence_to_accept: LicenceVersion | None = None


@dataclass(frozen=True)
class NextStep:
    """The one thing a signed-in user should do next, for the home page.

    ``kind``: ``verify``, ``answer`` (a reviewer asked a question), ``submit`` (a draft),
    ``licence`` (a new licence version to accept), ``download``, ``wait`` (an application under
    review) or ``apply``.
    """

    kind: str
    application: Application | None = None
    grant: Grant | None = None
    licence_to_accept: LicenceVersion | None = None


def applicant_next_step(*, user: User) -> NextStep:
    if not email_verified(user=user):
        return NextStep("verify")
    open_applications = list(applications_open_of(user=user))
    for kind, status in (("answer", S.NEEDS_INFO), ("submit", S.DRAFT)):
        if waiting := next((a for a in open_applications if a.status == status), None):
            return NextStep(kind, application=waiting)
    grant = grants_active_of(user=user).select_related("release").order_by("-expires_at").first()
    if grant is not None:
        to_accept = licence_acceptance_required(user=user, release=grant.release)
        return NextStep("licence" if to_accept else "download", grant=grant, licence_to_accept=to_accept)
    if open_applications:
        return NextStep("wait", application=open_applications[0])
    return NextStep("apply")


def release_access_for(*, user: User, release: Release) -> ReleaseAccess:
    if not user.is_authenticated:
        return ReleaseAccess("signed_out")
    grant = grant_active_for(user=user, release=release)
    if grant is not None:
        to_accept = licence_acceptance_required(user=user, release=release)
        return ReleaseAccess("licence" if to_accept else "approved", grant=grant, licence_to_accept=to_accept)
    application = application_open_for(user=user, release=release)
    if application is not None:
        return ReleaseAccess("pending", application=application)
    return ReleaseAccess("apply" if email_verified(user=user) else "unverified")


def signals_needing_a_person(*, application: Application) -> list[VettingSignal]:
    """The checks that kept an application from automatic approval without stopping it: a reviewer decides."""
    if application.release.approval_policy != Release.ApprovalPolicy.AUTOMATIC:
        return []
    return list(application.signals.exclude(level="green").filter(blocking=False))


def blocking_signals(*, application: Application) -> list[VettingSignal]:
    """The signals that stop approval (shown to the applicant with their explanation)."""
    return list(application.signals.filter(blocking=True))


def releases_all() -> QuerySet[Release]:
    return Release.objects.order_by("slug").only("slug", "name")


def applications_by_same_user(*, application: Application, limit: int = 20) -> list[Application]:
    return list(Application.objects.filter(user=application.user_id).exclude(pk=application.pk)
                .select_related("release").order_by("-created_at")[:limit])


def institution_names(*, user, limit: int = 1000) -> list[str]:
    """Institutions suggested to this user while typing (a datalist), so spellings converge.

    Staff-confirmed ones, and those this user named before: a name another applicant typed is theirs alone.
    """
    from access.models import Institution

    own = Application.objects.filter(user=user).values("institution_id")  # the user's few, by their index
    suggested = Institution.objects.filter(Q(confirmed=True) | Q(pk__in=own))
    return list(suggested.order_by("name").values_list("name", flat=True)[:limit])


def releases_open_for_application() -> QuerySet[Release]:
    return Release.objects.filter(is_listed=True).select_related("licence")


APPLICANT_TIMELINE = {
    "application.create": "Draft saved",
    "application.submit": "Submitted; we sent you an acknowledgement",
    "application.start_review": "A reviewer started reviewing",
    "application.request_info": "The reviewer asked for more information",
    "application.respond": "You answered; back in the queue",
    "application.reference": "Your reference answered",
    "application.approve": "Approved",
    "application.reject": "Rejected",
    "application.withdraw": "Withdrawn",
    "grant.create": "Access granted",
    "grant.renew": "Access renewed",
    "grant.revoke": "Access revoked",
    "grant.expire": "Access expired",
}
REVIEWER_TIMELINE = {  # the same steps, told of the applicant in the third person
    **APPLICANT_TIMELINE,
    "application.submit": "Submitted; the applicant was sent an acknowledgement",
    "application.respond": "The applicant answered; back in the queue",
    "application.reference": "The applicant's reference answered",
    "application.vet": "Automated checks ran",
    "application.assign": "Assignment changed",
    "application.note": "Internal note added",
}


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    label: str
    reason: str
    actor: str


def application_timeline(*, application: Application, for_reviewer: bool = False) -> list[TimelineEntry]:
    """What happened to the application, from the audit log (internal steps only for reviewers)."""
    labels = REVIEWER_TIMELINE if for_reviewer else APPLICANT_TIMELINE
    grant_ids = [str(pk) for pk in application.grants.values_list("pk", flat=True)]
    events = AuditEvent.objects.filter(
        Q(target_type="access.application", target_id=str(application.pk))
        | Q(target_type="access.grant", target_id__in=grant_ids)
    ).select_related("actor").order_by("id")
    entries = []
    for event in events:
        if event.action not in labels:
            continue
        if event.action == "application.reference" and not for_reviewer:
            label = f"Your reference {'confirmed' if event.after.get('reference_status') == 'confirmed' else 'declined'}"
        else:
            label = labels[event.action]
        show_reason = for_reviewer or event.action not in {"application.reference"}
        if for_reviewer:
            actor = event.actor.email if event.actor else "system"
        else:
            actor = "you" if event.actor_id == application.user_id else ("a reviewer" if event.actor_id else "Gatehouse")
        entries.append(TimelineEntry(event.created_at, label, event.reason if show_reason else "", actor))
    return entries


def queue_position(*, application: Application) -> int | None:
    """1 for the next application a reviewer will take for this release; None when not queued."""
    if application.status not in Application.PENDING_STATUSES or application.submitted_at is None:
        return None
    ahead = Application.objects.filter(release=application.release_id, status__in=Application.PENDING_STATUSES,
                                       submitted_at__lt=application.submitted_at).count()
    return ahead + 1


def median_time_to_decision(*, release: Release | None = None, days: int = 30, now=None) -> timedelta | None:
    """Median submitted → approved/rejected over the last ``days`` days, or None without decisions."""
    now = now or timezone.now()
    decided = Application.objects.filter(status__in=Application.DECIDED_STATUSES, submitted_at__isnull=False,
                                         decided_at__gte=now - timedelta(days=days))
    if release is not None:
        decided = decided.filter(release=release)
    durations = [(decided_at - submitted_at).total_seconds()
                 for submitted_at, decided_at in decided.values_list("submitted_at", "decided_at")]
    if not durations:
        return None
    return timedelta(seconds=statistics.median(durations))


# For reviewers -----------------------------------------------------------------------------------

def sla_cutoff(now: datetime) -> datetime:
    """Applications submitted before this moment are older than the SLA."""
    day = subtract_working_days(now, settings.ACCESS_REVIEW_SLA_WORKING_DAYS)
    return day.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class SlaState:
    working_days: int
    state: str  # "ok", "due_soon" or "overdue"


def sla_state(application: Application, now: datetime) -> SlaState:
    days = working_days_between(application.submitted_at, now) if application.submitted_at else 0
    if application.submitted_at and application.submitted_at < sla_cutoff(now):
        return SlaState(days, "overdue")
    if days >= settings.ACCESS_REVIEW_SLA_WORKING_DAYS - 1:
        return SlaState(days, "due_soon")
    return SlaState(days, "ok")


QUEUE_STATUSES = [S.SUBMITTED, S.IN_REVIEW, S.NEEDS_INFO]


def review_queue(*, reviewer: User, release: str = "", status: str = "", age: str = "", country: str = "",
                 signal: str = "", assigned: str = "", now=None) -> QuerySet[Application]:
    """The queue, oldest first (by ``submitted_at``, then pk: page it with ``portal.keyset``), filtered;
    every row's related objects in a constant number of queries. Only submitted applications: a draft
    withdrawn before submission was never a reviewer's."""
    now = now or timezone.now()
    applications = Application.objects.filter(submitted_at__isnull=False).select_related(
        "user", "release", "institution", "assigned_to")
    applications = applications.prefetch_related(
        Prefetch("signals", queryset=VettingSignal.objects.order_by("code"))
    )
    if status in S.values:
        applications = applications.filter(status=status)
    elif status == "decided":
        applications = applications.filter(status__in=[S.APPROVED, S.REJECTED, S.WITHDRAWN])
    else:
        applications = applications.filter(status__in=[S.SUBMITTED, S.IN_REVIEW])
    if release:
        applications = applications.filter(release__slug=release)
    if country:
        applications = applications.filter(country=country.upper())
    if signal:
        applications = applications.filter(Exists(VettingSignal.objects.filter(
            application=OuterRef("pk"), code=signal).exclude(level=VettingSignal.Level.GREEN)))
    if assigned == "me":
        applications = applications.filter(assigned_to=reviewer)
    elif assigned == "none":
        applications = applications.filter(assigned_to__isnull=True)
    cutoff = sla_cutoff(now)
    if age == "overdue":
        applications = applications.filter(submitted_at__lt=cutoff)
    elif age == "within_sla":
        applications = applications.filter(submitted_at__gte=cutoff)
    elif age == "today":
        applications = applications.filter(submitted_at__gte=now - timedelta(days=1))
    return applications.order_by("submitted_at", "pk")


def application_for_review(*, pk) -> Application:
    """Any application, for a reviewer (the caller has checked the review permission)."""
    return Application.objects.select_related(
        "user", "release", "institution", "assigned_to", "decided_by", "previous_application",
        "licence_acceptance__licence_version__licence",
    ).prefetch_related("signals", "notes__author", "grants").get(pk=pk)


def applications_for_review(*, pks: list) -> list[Application]:
    return list(Application.objects.filter(pk__in=pks).select_related("user", "release").order_by("submitted_at"))


def applications_overdue(*, now=None) -> QuerySet[Application]:
    now = now or timezone.now()
    return (Application.objects.filter(status__in=[S.SUBMITTED, S.IN_REVIEW], submitted_at__lt=sla_cutoff(now))
            .select_related("user", "release", "assigned_to").order_by("submitted_at"))


def release_by_slug(*, slug: str) -> Release:
    return Release.objects.select_related("licence").get(slug=slug)


def grant_for_review(*, pk) -> Grant:
    """Any grant, for a reviewer (the caller has checked the review permission)."""
    return Grant.objects.select_related("release", "user").get(pk=pk)


EXPORT_FIELDS = ["id", "status", "applicant_email", "legal_name", "institution", "role", "sector", "country", "orcid",
                 "vetting", "submitted_at", "decided_at", "decided_by", "decision_reason", "previous_application"]


def review_export_rows(*, release: Release) -> Iterator[dict]:
    """A release's requests and decisions, for reviewers' CSV/JSON export: read in chunks as they
    are written out (plain values, not model instances), so that a million of them take no more
    memory than a few thousand."""
    columns = ["pk", "status", "user__email", "legal_name", "institution__name", "role", "sector", "country",
               "orcid", "vetting", "submitted_at", "decided_at", "decided_by__email", "decision_reason",
               "previous_application_id"]
    applications = (Application.objects.filter(release=release).exclude(status=S.DRAFT)
                    .order_by("submitted_at", "pk").values_list(*columns))
    for (pk, status, email, legal_name, institution, role, sector, country, orcid, vetting, submitted_at,
         decided_at, decided_by, reason, previous) in applications.iterator(chunk_size=2000):
        yield {
            "id": pk, "status": status, "applicant_email": email, "legal_name": legal_name,
            "institution": institution, "role": role, "sector": sector, "country": country, "orcid": orcid,
            "vetting": vetting,
            "submitted_at": submitted_at.isoformat() if submitted_at else "",
            "decided_at": decided_at.isoformat() if decided_at else "",
            "decided_by": decided_by or ("automatic" if status == S.APPROVED else ""),
            "decision_reason": reason, "previous_application": previous or "",
        }


# For the scheduled tasks -------------------------------------------------------------------------

def grants_due_for_reminder(*, days: int, now=None) -> QuerySet[Grant]:
    """Active grants expiring within ``days`` that have not had this (or a nearer) reminder."""
    now = now or timezone.now()
    return Grant.objects.filter(revoked_at__isnull=True, expires_at__gt=now,
                                expires_at__lte=now + timedelta(days=days)).filter(
        Q(reminded_days_before__isnull=True) | Q(reminded_days_before__gt=days))


def grants_expired_unnotified(*, now=None) -> QuerySet[Grant]:
    return Grant.objects.filter(revoked_at__isnull=True, expiry_notified_at__isnull=True,
                                expires_at__lte=now or timezone.now())


# For the public transparency page ----------------------------------------------------------------

@dataclass
class FigureRow:
    label: str
    received: int | str
    approved: int | str
    rejected: int | str
    pending: int | str
    median_days: float | str | None


def _suppress(value: int, minimum: int) -> int | str:
    return value if value >= minimum else f"<{minimum}"


def _figures(label: str, rows: list[tuple], minimum: int) -> FigureRow:
    """rows: (status, submitted_at, decided_at) of one group's submitted applications."""
    counts = {"approved": 0, "rejected": 0, "pending": 0}
    durations = []
    for status, submitted_at, decided_at in rows:
        if status in (S.APPROVED, S.REJECTED):
            counts[status] += 1
            if decided_at and submitted_at:
                durations.append((decided_at - submitted_at).total_seconds() / 86400)
        elif status in (S.SUBMITTED, S.IN_REVIEW, S.NEEDS_INFO):
            counts["pending"] += 1
    median = round(statistics.median(durations), 1) if len(durations) >= minimum else (
        f"<{minimum} decisions" if durations else None)
    return FigureRow(label, _suppress(len(rows), minimum), _suppress(counts["approved"], minimum),
                     _suppress(counts["rejected"], minimum), _suppress(counts["pending"], minimum), median)


def transparency_figures() -> list[dict]:
    """Per release: totals, by country and by sector; any cell under the minimum is suppressed and
    countries with fewer applications than the minimum are pooled, so no person can be singled out."""
    from django_countries import countries

    minimum = settings.ACCESS_TRANSPARENCY_MIN_CELL
    names = dict(countries)
    sectors = dict(Application._meta.get_field("sector").choices)
    submitted = (Application.objects.filter(submitted_at__isnull=False)
                 .values_list("release_id", "country", "sector", "status", "submitted_at", "decided_at"))
    by_release: dict[int, list] = {}
    for row in submitted.iterator(chunk_size=5000):
        by_release.setdefault(row[0], []).append(row)
    result = []
    for release in Release.objects.filter(is_listed=True).order_by("parameter_count", "slug"):
        rows = by_release.get(release.pk, [])
        by_country: dict[str, list] = {}
        by_sector: dict[str, list] = {}
        for _, country, sector, *rest in rows:
            by_country.setdefault(country, []).append(tuple(rest))
            by_sector.setdefault(sector, []).append(tuple(rest))
        country_rows, pooled = [], []
        for code, group in sorted(by_country.items(), key=lambda item: names.get(item[0], item[0])):
            if len(group) >= minimum:
                country_rows.append(_figures(names.get(code, code), group, minimum))
            else:
                pooled.extend(group)
        if pooled:
            country_rows.append(_figures(f"Other countries (fewer than {minimum} applications each)", pooled, minimum))
        result.append({
            "release": release,
            "total": _figures(release.name, [tuple(row[3:]) for row in rows], minimum),
            "by_country": country_rows,
            "by_sector": [_figures(sectors.get(code, code), group, minimum) for code, group in sorted(by_sector.items())],
        })
    return result
