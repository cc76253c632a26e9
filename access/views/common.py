"""Helpers shared by the access views."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404

from access.errors import AccessError
from access.http import validation_errors
from access.roles import is_reviewer


def reviewer_required(view):
    """Signed-in staff with the review permission; the middleware has already demanded TOTP."""
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not is_reviewer(request.user):
            raise PermissionDenied("Only staff with the review permission can review applications.")
        return view(request, *args, **kwargs)
    return wrapper


def lookup_or_404(selector, **kwargs):
    """Call a scoped selector; what it cannot find (or may not show) is a 404."""
    try:
        return selector(**kwargs)
    except ObjectDoesNotExist:
        raise Http404 from None


def run_with_messages(request, function, **kwargs) -> bool:
    """Call a service from a POST-redirect view; refusals become error messages. True on success."""
    try:
        function(**kwargs)
    except ValidationError as error:
        for messages_ in validation_errors(error).values():
            for message in messages_:
                messages.error(request, message)
        return False
    except (AccessError, PermissionDenied) as error:
        messages.error(request, str(error))
        return False
    return True
