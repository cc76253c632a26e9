"""Pages without sign-in: the reference's confirmation link and the transparency figures."""

from django.conf import settings
from django.core import signing
from django.shortcuts import render

from access.errors import AccessError
from access.http import client_ip
from access.models import Application
from access.services.applications import (
    application_reference_respond, reference_responder_problem, reference_token_load,
)
from access.services.figures import transparency_figures_kept


def reference_respond(request, token: str):
    """The supervisor or reference confirms or declines through the signed link in their e-mail."""
    try:
        payload = reference_token_load(token)
    except signing.SignatureExpired:
        return render(request, "access/reference.html", {"problem": "This link has expired."}, status=410)
    except signing.BadSignature:
        return render(request, "access/reference.html", {"problem": "This link is not valid."}, status=404)
    application = (Application.objects.select_related("release", "institution", "user")
                   .filter(pk=payload.get("application"), supervisor_email=payload.get("email")).first())
    if application is None:
        return render(request, "access/reference.html", {"problem": "This link is not valid."}, status=404)
    problem = reference_responder_problem(application=application, responder=request.user)
    if problem:
        return render(request, "access/reference.html", {"problem": problem}, status=403)
    done = None
    status = 200
    if request.method == "POST":
        decision = request.POST.get("decision")
        if decision not in {"confirm", "decline"}:
            return render(request, "access/reference.html",
                          {"application": application, "problem": "Choose confirm or decline."}, status=400)
        try:
            application_reference_respond(application=application, confirmed=decision == "confirm",
                                          responder=request.user, ip_address=client_ip(request))
        except AccessError as error:
            return render(request, "access/reference.html", {"problem": str(error)}, status=409)
        done = decision
    return render(request, "access/reference.html", {"application": application, "done": done}, status=status)


def transparency(request):
    return render(request, "access/transparency.html", {
        "figures": transparency_figures_kept(), "minimum": settings.ACCESS_TRANSPARENCY_MIN_CELL})
