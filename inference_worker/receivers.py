"""What the playground does when access changes: the user's queued and running jobs stop at once."""

from inference_worker import services


def cancel_jobs_of_revoked_grant(sender, *, grant, **kwargs) -> None:
    services.jobs_cancel_for(user=grant.user, release=grant.release, reason="grant_revoked")


def cancel_jobs_for_new_licence(sender, *, version, **kwargs) -> None:
    services.jobs_cancel_for_licence(licence_version=version)
