"""Who may review: the one rule the views, the API and the services all call."""


def is_reviewer(user) -> bool:
    """Active staff with ``access.review_application``; views add the confirmed second factor."""
    return bool(user and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perm("access.review_application"))
