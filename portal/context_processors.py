"""Template context shared by every page."""

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# (label, url name, staff only). An entry shows once its feature is routed.
NAVIGATION = [
    ("Releases", "artifacts:release_list", False),
    ("Apply", "access:apply", False),
    ("My access", "access:my_access", False),
    ("Playground", "inference_worker:playground", False),
    ("Transparency", "access:transparency", False),
    ("Review queue", "access:review_queue", True),
]


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    is_staff = bool(user is not None and user.is_authenticated and user.is_staff)
    items = []
    for label, url_name, staff_only in NAVIGATION:
        if staff_only and not is_staff:
            continue
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            continue
        items.append({"label": label, "url": url, "current": request.path.startswith(url)})
    return {"nav_items": items}
