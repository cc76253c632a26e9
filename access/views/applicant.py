"""Pages for researchers: apply, follow an application, licences, grants and API tokens."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access import selectors
from access.errors import AccessError
from access.forms import ApplicationForm, RespondForm, SignatureForm, TokenForm, add_service_errors
from access.http import client_ip, user_agent, validation_errors
from access.mfa import staff_mfa_problem
from access.models import INTENDED_USE_MAX_CHARS, Application
from access.services.applications import (
    PROFILE_FIELDS, application_create, application_problems, application_respond, application_submit,
    application_withdraw,
)
from access.services.figures import expected_wait
from access.services.grants import grant_renew, grant_renewal_opens_at
from access.services.licences import licence_accept
from access.services.tokens import api_token_create, api_token_revoke
from access.views.common import lookup_or_404, run_with_messages

NEW_TOKEN_SESSION_KEY = "access.new_api_token"  # the raw token, shown once after the redirect


def _initial_from_last_application(user) -> dict:
    """Pre-fill the profile from the user's last application."""
    last = selectors.applications_of(user=user).first()
    if last is None:
        return {"legal_name": f"{user.first_name} {user.last_name}".strip()}
    return {"legal_name": last.legal_name, "institution_name": last.institution.name,
            "institution_ror_id": last.institution.ror_id, "role": last.role, "sector": last.sector,
            "country": last.country.code, "orcid": last.orcid, "publications": last.publications,
            "supervisor_name": last.supervisor_name, "supervisor_email": last.supervisor_email}


@login_required
def apply(request):
    releases = selectors.releases_open_for_application()
    form = ApplicationForm(request.POST or None, releases=releases,
                           initial={**_initial_from_last_application(request.user),
                                    "releases": releases.filter(slug=request.GET.get("release", ""))})
    status = 200
    if request.method == "POST" and not form.is_valid():
        _add_every_problem(form, request.POST)
    elif request.method == "POST":
        data = dict(form.cleaned_data)
        chosen = list(data.pop("releases"))
        accept, signature = data.pop("accept_licence"), data.pop("signature_name")
        try:
            created = application_create(
                user=request.user, releases=chosen, fields=data, submit="save_draft" not in request.POST,
                accept_licence=accept, signature_name=signature, ip_address=client_ip(request),
                user_agent=user_agent(request))
        except ValidationError as error:
            add_service_errors(form, validation_errors(error))
        except PermissionDenied as error:
            messages.error(request, str(error))
            status = 403
        else:
            if created[0].status == Application.Status.DRAFT:
                messages.success(request, "Saved as a draft. Submit it from its page when you are ready.")
            else:
                messages.success(request, "Application submitted: we sent you an acknowledgement by e-mail.")
            return redirect("access:application_detail", pk=created[0].pk)
    if request.method == "POST" and status == 200:
        status = 400
    licences = {}
    for release in releases:
        version = release.licence.current_version()
        if version is not None:
            licences.setdefault(version.pk, {"version": version, "releases": []})["releases"].append(release)
    return render(request, "access/apply.html", {
        "form": form, "licences": list(licences.values()),
        "open_applications": list(selectors.applications_open_of(user=request.user)),
        "intended_use_min": settings.ACCESS_INTENDED_USE_MIN_CHARS, "intended_use_max": INTENDED_USE_MAX_CHARS,
        "asked_for": request.GET.get("release", ""),
        "institutions": selectors.institution_names(user=request.user),
        "email_verified": selectors.email_verified(user=request.user),
    }, status=status)


def _add_every_problem(form: ApplicationForm, posted) -> None:
    """Add the service's checks to a form that failed its own, so that one submit shows every mistake
    (an invalid ORCID, a short description, a mismatched signature) and not only the missing fields."""
    fields = {name: posted.get(name, "") for name in PROFILE_FIELDS}
    problems = application_problems(fields=fields, submit="save_draft" not in posted,
                                    accept_licence=bool(posted.get("accept_licence")),
                                    signature_name=posted.get("signature_name", ""))
    for name, messages_ in problems.items():
        if name in form.fields and name not in form.errors:
            for message in messages_:
                form.add_error(name, message)


@login_required
def my_access(request):
    grants = list(selectors.grants_of(user=request.user))
    for grant in grants:
        grant.renewal_opens_at = grant_renewal_opens_at(grant)
        grant.licence_required = selectors.licence_acceptance_required(user=request.user, release=grant.release)
    return render(request, "access/my_access.html", {
        "applications": selectors.applications_of(user=request.user),
        "grants": grants,
    })


def _detail_response(request, application: Application, *, status: int = 200, **forms):
    """The status page, optionally with bound forms showing field errors (400) or a refusal (409)."""
    context = {
        "application": application,
        "timeline": selectors.application_timeline(application=application),
        "queue_position": selectors.queue_position(application=application),
        "expected_wait": expected_wait(release=application.release),
        "blocking": selectors.blocking_signals(application=application),
        "needs_a_person": selectors.signals_needing_a_person(application=application)
        if application.status in Application.OPEN_STATUSES else [],
        "respond_form": RespondForm(),
        "submit_form": SignatureForm(),
        "licence": application.release.licence.current_version(),
        "reapply_from": (application.decided_at + timedelta(days=settings.ACCESS_REAPPLY_COOLDOWN_DAYS)
                         if application.status == Application.Status.REJECTED and application.decided_at else None),
        **forms,
    }
    return render(request, "access/application_detail.html", context, status=status)


@login_required
def application_detail(request, pk: int):
    return _detail_response(request, lookup_or_404(selectors.application_of, user=request.user, pk=pk))


def _run_on_status_page(request, application: Application, service, form_name: str, form, success: str, **kwargs):
    """Call the service; field errors re-render the page (400), refusals say why (409)."""
    try:
        service(application=application, by=request.user, ip_address=client_ip(request), **kwargs)
    except ValidationError as error:
        add_service_errors(form, validation_errors(error))
        return _detail_response(request, application, status=400, **{form_name: form})
    except AccessError as error:
        messages.error(request, str(error))
        return _detail_response(request, application, status=409)
    messages.success(request, success)
    return redirect("access:application_detail", pk=application.pk)


@login_required
@require_POST
def application_withdraw_view(request, pk: int):
    application = lookup_or_404(selectors.application_of, user=request.user, pk=pk)
    return _run_on_status_page(request, application, application_withdraw, "respond_form", RespondForm(),
                               "Application withdrawn.")


@login_required
@require_POST
def application_submit_view(request, pk: int):
    application = lookup_or_404(selectors.application_of, user=request.user, pk=pk)
    form = SignatureForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, application, status=400, submit_form=form)
    return _run_on_status_page(request, application, application_submit, "submit_form", form,
                               "Application submitted: we sent you an acknowledgement by e-mail.",
                               user_agent=user_agent(request), **form.cleaned_data)


@login_required
@require_POST
def application_respond_view(request, pk: int):
    application = lookup_or_404(selectors.application_of, user=request.user, pk=pk)
    form = RespondForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, application, status=400, respond_form=form)
    return _run_on_status_page(request, application, application_respond, "respond_form", form,
                               "Thank you: your answer is with the reviewers.", **form.cleaned_data)


@login_required
def licence_accept_page(request, release_slug: str):
    """Sign the current licence of a release (new versions need re-acceptance before use)."""
    release = lookup_or_404(selectors.release_by_slug, slug=release_slug)
    version = release.licence.current_version()
    required = selectors.licence_acceptance_required(user=request.user, release=release)
    form = SignatureForm(request.POST or None)
    status = 200
    if request.method == "POST" and required is not None and form.is_valid():
        last = selectors.applications_of(user=request.user).first()
        try:
            licence_accept(user=request.user, licence_version=required, accepted=form.cleaned_data["accept_licence"],
                           signature_name=form.cleaned_data["signature_name"],
                           expected_name=last.legal_name if last else "", ip_address=client_ip(request),
                           user_agent=user_agent(request))
        except ValidationError as error:
            add_service_errors(form, validation_errors(error))
            status = 400
        else:
            messages.success(request, f"You accepted {required}.")
            return redirect(request.GET.get("next") if _safe_next(request) else "access:my_access")
    return render(request, "access/licence_accept.html",
                  {"release": release, "version": version, "required": required, "form": form}, status=status)


def _safe_next(request) -> bool:
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.GET.get("next", "")
    return bool(target) and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})


@login_required
@require_POST
def grant_renew_view(request, pk: int):
    grant = lookup_or_404(selectors.grant_of, user=request.user, pk=pk)
    if run_with_messages(request, grant_renew, grant=grant, by=request.user, ip_address=client_ip(request)):
        messages.success(request, f"Your access to {grant.release.name} is renewed.")
    return redirect("access:my_access")


@never_cache  # a new token is shown once: no copy in any cache
@login_required
def tokens(request):
    """Create and list tokens. A new token is shown once, after a redirect, so that reloading the
    page never creates a second one."""
    form = TokenForm(request.POST or None, user=request.user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                _, raw = api_token_create(
                    user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"],
                    scopes=form.cleaned_data["scopes"],
                    created_with_mfa=request.user.is_staff and staff_mfa_problem(request) is None,
                    ip_address=client_ip(request))
            except ValidationError as error:
                add_service_errors(form, validation_errors(error))
                status = 400
            else:
                request.session[NEW_TOKEN_SESSION_KEY] = raw
                return redirect("access:tokens")
        else:
            status = 400
    return render(request, "access/tokens.html", {
        "form": form, "new_token": request.session.pop(NEW_TOKEN_SESSION_KEY, None) if status == 200 else None,
        "tokens": selectors.api_tokens_of(user=request.user), "max_days": settings.ACCESS_API_TOKEN_MAX_DAYS,
    }, status=status)


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = lookup_or_404(selectors.api_token_of, user=request.user, pk=pk)
    try:
        api_token_revoke(token=token, by=request.user, ip_address=client_ip(request))
    except AccessError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Token {token.name} revoked.")
    return redirect("access:tokens")
