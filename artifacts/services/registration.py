"""Registering a variant's files and keeping their checksums honest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from artifacts.models import ArtifactFile, Release, Variant
from artifacts.storage import KeyOutsideRoot, StorageError, iter_chunks, storage_for

MD5_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")


class RegistrationError(Exception):
    """Registration cannot proceed; the message says why."""


def md5_list_parse(text: str) -> dict[str, str]:
    """Published md5 lists: ``md5sum`` output (``<md5>  <path>``) or CSV rows (either column order)."""
    checksums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in re.split(r"[,\s]+", line.replace("*", " "), maxsplit=1)]
        if len(parts) != 2:
            raise RegistrationError(f"md5 list line {number} is not '<md5> <path>' or '<path>,<md5>': {line!r}")
        first, second = parts
        if MD5_PATTERN.match(first):
            checksums[Path(second).name if "/" not in second else second] = first.lower()
        elif MD5_PATTERN.match(second):
            checksums[first] = second.lower()
        elif number == 1:
            continue  # a CSV header
        else:
            raise RegistrationError(f"md5 list line {number} has no md5 checksum: {line!r}")
    return checksums


def _expected_md5(md5s: dict[str, str], path: str) -> str:
    return md5s.get(path) or md5s.get(Path(path).name, "")


@transaction.atomic
def variant_register(
    *, release: Release, name: str, location: str, md5_list: dict[str, str] | None = None, description: str = ""
) -> Variant:
    """Record every file found at ``location`` (checksums pending); files gone since are marked missing."""
    try:
        storage, prefix = storage_for(location)
        found = {obj.key[len(prefix):]: obj for obj in storage.list(prefix)}
    except StorageError as error:
        raise RegistrationError(str(error)) from error
    if not found:
        raise RegistrationError(f"No files found at {location}.")
    variant, _ = Variant.objects.update_or_create(
        release=release, name=name, defaults={"location": location, "description": description, "content_commit": ""}
    )
    md5s = md5_list or {}
    existing = {file.path: file for file in variant.files.all()}
    for path, obj in sorted(found.items()):
        file = existing.get(path) or ArtifactFile(variant=variant, path=path)
        file.storage_key = obj.key
        file.expected_md5 = _expected_md5(md5s, path) or file.expected_md5
        file.integrity, file.sha256, file.md5, file.size = ArtifactFile.Integrity.PENDING, "", "", obj.size
        file.save()
    for path, file in existing.items():
        if path not in found:
            file.integrity, file.integrity_detail = ArtifactFile.Integrity.MISSING, "Not found at registration."
            file.save(update_fields=["integrity", "integrity_detail"])
    unknown = sorted(set(md5s) - set(found) - {Path(path).name for path in found})
    if unknown:
        variant.description = (variant.description + "\n" if variant.description else "") + (
            f"md5 list names {len(unknown)} file(s) not in storage: {', '.join(unknown[:10])}"
        )
        variant.save(update_fields=["description"])
    return variant


def _digest(file: ArtifactFile) -> tuple[int, str, str] | None:
    """Size, sha256 and md5 of the stored bytes, streamed; None when the file is missing."""
    storage, _ = storage_for(file.variant.location)
    if storage.size(file.storage_key) is None:
        return None
    sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
    for chunk in iter_chunks(storage.open(file.storage_key)):
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def file_hash(*, file: ArtifactFile) -> ArtifactFile:
    """Hash a file's stored bytes: the first time records them, later times check them."""
    Integrity = ArtifactFile.Integrity
    try:
        digest, missing_detail = _digest(file), "The file is missing from storage."
    except KeyOutsideRoot as error:
        digest, missing_detail = None, str(error)
    if digest is None:
        file.integrity, file.integrity_detail = Integrity.MISSING, missing_detail
    else:
        size, sha256, md5 = digest
        if not file.sha256:
            file.size, file.sha256, file.md5 = size, sha256, md5
            # the registered contents changed: the Hub endpoint's commit id is computed again
            Variant.objects.filter(pk=file.variant_id).exclude(content_commit="").update(content_commit="")
        if (size, sha256) != (file.size, file.sha256):
            file.integrity = Integrity.CORRUPTED
            file.integrity_detail = f"Stored bytes now hash to sha256 {sha256} ({size} bytes), not {file.sha256}."
        elif file.expected_md5 and file.expected_md5 != md5:
            file.integrity = Integrity.MD5_MISMATCH
            file.integrity_detail = f"md5 {md5} does not match the published md5 {file.expected_md5}."
        else:
            file.integrity, file.integrity_detail = Integrity.OK, ""
    file.verified_at = timezone.now()
    file.save(update_fields=["size", "sha256", "md5", "integrity", "integrity_detail", "verified_at"])
    return file


def files_hash(*, files, progress: Callable[[ArtifactFile], None] | None = None) -> list[ArtifactFile]:
    hashed = []
    for file in files:
        hashed.append(file_hash(file=file))
        if progress:
            progress(hashed[-1])
    return hashed
