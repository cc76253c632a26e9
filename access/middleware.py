"""Request guards of the access app."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from access.mfa import staff_mfa_problem

AFTER_MFA_SETUP_SESSION_KEY = "after_mfa_setup"  # where a staff member was going before setting up TOTP
STAFF_MESSAGES = {
    "setup": "Staff accounts must set up two-factor authentication before using review or admin functions.",
    "verify": "Confirm your two-factor code to use review or admin functions.",
}


class StaffMFARequiredMiddleware:
    """Sends staff without a verified second factor to set one up (or enter it) first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff and self._is_staff_path(request.path):
            problem = staff_mfa_problem(request)
            if problem is not None:
                return self._refuse(request, problem)
        return self.get_response(request)

    @staticmethod
    def _is_staff_path(path: str) -> bool:
        return any(path.startswith(prefix) for prefix in settings.STAFF_MFA_PATH_PREFIXES)

    @staticmethod
    def _refuse(request: HttpRequest, problem: str):
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": STAFF_MESSAGES[problem], "code": f"mfa_{problem}"}, status=403)
        messages.warning(request, STAFF_MESSAGES[problem])
        if problem == "setup":
            request.session[AFTER_MFA_SETUP_SESSION_KEY] = request.get_full_path()  # offered once set up
            return redirect(reverse("mfa_activate_totp"))
        return redirect(reverse("mfa_reauthenticate") + "?" + urlencode({"next": request.get_full_path()}))
