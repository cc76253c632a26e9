"""Celery tasks of the artifacts app: thin, idempotent, ids in, nothing but JSON out."""

from celery import shared_task

from artifacts.models import ArtifactFile, Release
from artifacts.services.registration import file_hash


@shared_task(name="artifacts.hash_files", max_retries=3, retry_backoff=True, acks_late=True)
def hash_files_task(*, file_ids: list[int]) -> int:
    """(Re)hash the stored bytes of these files; running it twice gives the same result."""
    files = ArtifactFile.objects.select_related("variant").filter(pk__in=file_ids)
    for file in files:
        file_hash(file=file)
    return len(file_ids)


@shared_task(name="artifacts.verify_all_releases")
def verify_all_releases_task() -> int:
    """Scheduled re-hash of every registered file, in parallel batches."""
    from artifacts.services.verification import release_verify_in_background

    count = 0
    for release in Release.objects.all():
        count += release_verify_in_background(release=release)
    return count
