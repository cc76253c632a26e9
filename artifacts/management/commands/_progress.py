"""Shared progress and report output of the registration commands."""

from django.conf import settings
from django.core.management.base import OutputWrapper

from artifacts.models import ArtifactFile


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


class Progress:
    """Prints one line per hashed file: position, path, size, status."""

    def __init__(self, stdout: OutputWrapper, total: int):
        self.stdout, self.total, self.done = stdout, total, 0

    def __call__(self, file: ArtifactFile) -> None:
        self.done += 1
        self.stdout.write(
            f"[{self.done}/{self.total}] {file.path} {human_size(file.size)} {file.get_integrity_display()}"
        )


def use_celery(option: str, count: int) -> bool:
    if option == "auto":
        return count > settings.ARTIFACT_HASH_INLINE_MAX_FILES
    return option == "celery"


def report_problems(stdout: OutputWrapper, style, files: list[ArtifactFile]) -> int:
    """Print every file that is not OK; returns how many."""
    bad = [file for file in files if file.integrity != ArtifactFile.Integrity.OK]
    for file in bad:
        stdout.write(style.ERROR(f"{file.path}: {file.get_integrity_display()}. {file.integrity_detail}"))
    return len(bad)
