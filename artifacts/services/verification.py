"""Hashing many files: inline with progress, or in parallel Celery tasks."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings

from artifacts.models import ArtifactFile, Release
from artifacts.services.registration import files_hash


def _batches(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def files_hash_in_background(*, file_ids: list[int]) -> int:
    """Queue parallel hashing tasks in batches; returns the number of tasks queued."""
    from artifacts.tasks import hash_files_task

    batches = _batches(file_ids, settings.ARTIFACT_HASH_BATCH_FILES)
    for batch in batches:
        hash_files_task.delay(file_ids=batch)
    return len(batches)


def release_verify_in_background(*, release: Release) -> int:
    ids = list(ArtifactFile.objects.filter(variant__release=release).values_list("pk", flat=True))
    files_hash_in_background(file_ids=ids)
    return len(ids)


def files_hash_and_wait(
    *,
    files: list[ArtifactFile],
    use_celery: bool,
    progress: Callable[[ArtifactFile], None],
    timeout_seconds: float = 24 * 3600,
) -> list[ArtifactFile]:
    """Hash ``files`` inline, or in Celery tasks while reporting each file as it completes."""
    if not use_celery:
        return files_hash(files=files, progress=progress)
    started = {file.pk: file.verified_at for file in files}
    files_hash_in_background(file_ids=list(started))
    pending, deadline = set(started), time.monotonic() + timeout_seconds
    while pending and time.monotonic() < deadline:
        for file in ArtifactFile.objects.select_related("variant").filter(pk__in=pending):
            if file.verified_at != started[file.pk]:
                pending.discard(file.pk)
                progress(file)
        if pending:
            time.sleep(0.5)
    if pending:
        raise TimeoutError(f"{len(pending)} file(s) were not hashed in time; is a Celery worker running?")
    return list(ArtifactFile.objects.select_related("variant").filter(pk__in=started).order_by("path"))
