"""The reviewer queue and application pages (under /review/: staff with TOTP and the permission)."""

import csv
import json
from collections.abc import Iterator

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_countries import countries

from access import selectors
from access.errors import AccessError
from access.forms import (
    BulkDecisionForm, DecisionForm, NoteForm, QueueFilterForm, ReasonForm, add_service_errors,
)
from access.http import client_ip, validation_errors
from access.models import Application, ReasonTemplate
from access.services.applications import (
    application_approve, application_assign, application_reject, application_request_info,
)
from access.services.grants import grant_revoke
from access.services.review import application_bulk_decide, application_note_add, reviewers
from access.services.vetting import SIGNAL_LABELS
from access.views.common import lookup_or_404, reviewer_required
from portal.keyset import CursorInvalid, keyset_page

DECISIONS = {"approve": application_approve, "reject": application_reject, "request_info": application_request_info}


DONE = {"approve": "approved", "reject": "rejected", "request_info": "sent back with your request for information"}


def _queue_response(request, *, status: int = 200, bulk_form=None):
    filter_form = QueueFilterForm(request.GET)
    filters = filter_form.filters()
    errors = dict(filter_form.errors)
    now = timezone.now()
    queue = selectors.review_queue(reviewer=request.user, now=now, **filters)
    try:
        page = keyset_page(queue, time_field="submitted_at", cursor=request.GET.get("cursor", ""),
                           size=settings.ACCESS_REVIEW_PAGE_SIZE)
    except CursorInvalid as error:
        errors["page"] = [str(error)]
        page = keyset_page(queue, time_field="submitted_at", cursor="", size=settings.ACCESS_REVIEW_PAGE_SIZE)
    if errors:
        status = 400
    for application in page.rows:
        application.sla = selectors.sla_state(application, now)
    query = request.GET.copy()
    query.pop("cursor", None)
    base = query.urlencode()
    return render(request, "access/review/queue.html", {
        "page": page, "filters": filters, "filtered": any(filters.values()), "filter_errors": errors,
        "query": base, "first_url": f"{reverse('access:review_queue')}?{base}",
        "next_url": _with_cursor(base, page.next_cursor),
        "previous_url": _with_cursor(base, page.previous_cursor),
        "releases": selectors.releases_all(),
        "statuses": Application.Status.choices, "signals": SIGNAL_LABELS, "countries": list(countries),
        "bulk_form": bulk_form or BulkDecisionForm(), "reason_templates": ReasonTemplate.objects.filter(kind="reject"),
    }, status=status)


def _with_cursor(query: str, cursor: str) -> str:
    """The queue page at ``cursor`` with the same filters ("" when there is no such page); also from
    the bulk decision's page, which is answered at another address."""
    return f"{reverse('access:review_queue')}?{query}{'&' if query else ''}cursor={cursor}" if cursor else ""


@reviewer_required
def review_queue(request):
    return _queue_response(request)


def _application_or_404(pk) -> Application:
    return lookup_or_404(selectors.application_for_review, pk=pk)


def _detail_response(request, application: Application, *, status: int = 200, **forms):
    """The review page, optionally with bound forms showing field errors (400) or a refusal (409)."""
    context = {
        "application": application, "own": application.user_id == request.user.pk,
        "timeline": selectors.application_timeline(application=application, for_reviewer=True),
        "sla": selectors.sla_state(application, timezone.now()) if application.submitted_at else None,
        "decision_form": DecisionForm(), "note_form": NoteForm(), "revoke_form": ReasonForm(),
        "reason_templates": ReasonTemplate.objects.all(),
        "reviewers": reviewers(),
        "other_applications": selectors.applications_by_same_user(application=application),
        "signal_labels": SIGNAL_LABELS,
        "is_open": application.status in Application.OPEN_STATUSES - {Application.Status.DRAFT},
        **forms,
    }
    return render(request, "access/review/detail.html", context, status=status)


@reviewer_required
def review_detail(request, pk: int):
    return _detail_response(request, _application_or_404(pk))


def _refused(request, application: Application, error: Exception, form_name: str, form):
    """A service refused: field errors (400), a state conflict (409) or a missing right (403)."""
    if isinstance(error, ValidationError):
        add_service_errors(form, validation_errors(error))
        return _detail_response(request, application, status=400, **{form_name: form})
    messages.error(request, str(error))
    return _detail_response(request, application, status=403 if isinstance(error, PermissionDenied) else 409)


@reviewer_required
@require_POST
def review_decide(request, pk: int):
    application = _application_or_404(pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, application, status=400, decision_form=form)
    action = form.cleaned_data["action"]
    try:
        DECISIONS[action](application=application, by=request.user, reason=form.full_reason(),
                          ip_address=client_ip(request))
    except (ValidationError, AccessError, PermissionDenied) as error:
        return _refused(request, application, error, "decision_form", form)
    messages.success(request, f"Application #{pk} {DONE[action]}.")
    return redirect("access:review_queue")


@reviewer_required
@require_POST
def review_assign(request, pk: int):
    application = _application_or_404(pk)
    assignee_id = request.POST.get("assignee", "")
    assignee = None
    if assignee_id:
        assignee = next((user for user in reviewers() if str(user.pk) == assignee_id), None)
        if assignee is None:
            messages.error(request, "Choose a reviewer from the list.")
            return redirect("access:review_detail", pk=pk)
    try:
        application_assign(application=application, by=request.user, assignee=assignee,
                           ip_address=client_ip(request))
    except (ValidationError, AccessError, PermissionDenied) as error:
        return _refused(request, application, error, "decision_form", DecisionForm())
    messages.success(request, f"Assigned to {assignee.email}." if assignee else "Unassigned.")
    return redirect("access:review_detail", pk=pk)


@reviewer_required
@require_POST
def review_note(request, pk: int):
    """Add an internal note; with htmx, answer the refreshed notes list."""
    application = _application_or_404(pk)
    form = NoteForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, application, status=400, note_form=form)
    try:
        application_note_add(application=application, by=request.user, text=form.cleaned_data["text"])
    except (ValidationError, AccessError, PermissionDenied) as error:
        return _refused(request, application, error, "note_form", form)
    if request.htmx:
        return render(request, "access/review/_notes.html", {"application": _application_or_404(pk)})
    messages.success(request, "Note added.")
    return redirect("access:review_detail", pk=pk)


@reviewer_required
@require_POST
def review_bulk(request):
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        return _queue_response(request, status=400, bulk_form=form)
    applications = selectors.applications_for_review(pks=[a.pk for a in form.cleaned_data["applications"]])
    try:
        decided, failed = application_bulk_decide(applications=applications, by=request.user,
                                                  decision=form.cleaned_data["action"], reason=form.full_reason(),
                                                  ip_address=client_ip(request))
    except ValidationError as error:
        add_service_errors(form, validation_errors(error))
        return _queue_response(request, status=400, bulk_form=form)
    if decided:
        messages.success(request, f"{len(decided)} application{'s' if len(decided) != 1 else ''} decided: "
                                  + ", ".join(f"#{a.pk}" for a in decided) + ".")
    for pk, why in failed.items():
        messages.error(request, f"#{pk}: {why}")
    return redirect("access:review_queue")


#: a spreadsheet takes a cell starting with one of these for a formula (OWASP's CSV injection rule)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'`` so it shows as text."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


class _Line:
    """A file-like object that hands back what ``csv.writer`` writes, one line at a time."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(rows) -> Iterator[str]:
    writer = csv.DictWriter(_Line(), fieldnames=list(selectors.EXPORT_FIELDS))
    yield writer.writeheader()
    for row in rows:
        yield writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})


def _json_lines(release_slug: str, rows) -> Iterator[str]:
    yield f'{{"release": {json.dumps(release_slug)}, "applications": [\n'
    for number, row in enumerate(rows):
        yield ("" if number == 0 else ",\n") + json.dumps(row)
    yield "\n]}\n"


@reviewer_required
def review_export(request, release_slug: str, fmt: str):
    """A release's requests and decisions as CSV or JSON, streamed as they are read (any size, in
    constant memory)."""
    if fmt not in {"csv", "json"}:
        raise Http404("Export as .csv or .json.")
    release = lookup_or_404(selectors.release_by_slug, slug=release_slug)
    rows = selectors.review_export_rows(release=release)
    filename = f"{release.slug}-applications-{timezone.now():%Y%m%d}"
    if fmt == "json":
        response = StreamingHttpResponse(_json_lines(release.slug, rows), content_type="application/json")
    else:
        response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


@reviewer_required
@require_POST
def review_grant_revoke(request, pk: int):
    grant = lookup_or_404(selectors.grant_for_review, pk=pk)
    form = ReasonForm(request.POST)
    try:
        grant_revoke(grant=grant, by=request.user, reason=request.POST.get("reason", ""),
                     ip_address=client_ip(request))
    except (ValidationError, AccessError, PermissionDenied) as error:
        if grant.application_id:
            return _refused(request, _application_or_404(grant.application_id), error, "revoke_form", form)
        raise
    messages.success(request, f"Access to {grant.release.name} revoked.")
    if grant.application_id:
        return redirect("access:review_detail", pk=grant.application_id)
    return redirect("access:review_queue")


__all__ = ["review_queue", "review_detail", "review_decide", "review_assign", "review_note", "review_bulk",
           "review_export", "review_grant_revoke"]
