"""Releases as Hugging Face Hub model repositories, for ``huggingface_hub`` and ``from_pretrained``.

A release's slug is the repository id (also under the ``gatehouse/`` namespace); revision ``main``
is its Hugging Face variant, every variant is also a revision by its name, and each variant's commit
id is a digest of its registered files (stable while they are, new when they change). Access is the
download rule itself: an active grant with the current licence accepted, files that passed their
integrity check, and every file fetched by the ``/dl/`` rule (``download_decide``), counted and
limited as a link is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from django.utils import timezone

from access.models import ApiToken, Grant, User
from access.selectors import grant_active_for
from access.services.tokens import ApiTokenInvalid, api_token_check, api_token_has_scope, api_token_hash
from artifacts.links import LinkClaims, hub_link_id
from artifacts.models import ArtifactFile, DownloadEvent, Release, Variant
from artifacts.selectors import hub_download_check
from artifacts.services.downloads import Decision, download_decide, licence_blocker

NAMESPACE = "gatehouse"
MAIN = "main"
_COMMIT = re.compile(r"[0-9a-f]{40}")


class HubRefused(Exception):
    """Why a Hub request is refused: its HTTP status, the client's error code and a message."""

    def __init__(self, status: int, code: str, message: str, *, commit: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


@dataclass(frozen=True)
class HubRevision:
    release: Release
    variant: Variant
    commit: str

    def files(self) -> list[ArtifactFile]:
        """Every registered file of the revision, in path order."""
        return list(self.variant.files.order_by("path"))


def release_slug(repo_id: str) -> str:
    """``opt-demo`` or ``gatehouse/opt-demo`` -> ``opt-demo``."""
    return repo_id.removeprefix(f"{NAMESPACE}/")


def variant_commit(variant: Variant) -> str:
    """A 40-hex commit id for a variant's registered contents (each file's path, size and sha256),
    kept on the variant until registration or a first hash changes them."""
    if variant.content_commit:
        return variant.content_commit
    digest = hashlib.sha1(usedforsecurity=False)
    for path, size, sha256 in variant.files.order_by("path").values_list("path", "size", "sha256"):
        digest.update(f"{path}\0{size}\0{sha256}\n".encode())
    variant.content_commit = digest.hexdigest()
    Variant.objects.filter(pk=variant.pk).update(content_commit=variant.content_commit)
    return variant.content_commit


def is_main(variant: Variant) -> bool:
    """Whether a variant is in Hugging Face's layout (a ``config.json`` at its top), which ``main`` serves."""
    return variant.files.filter(path="config.json").exists()


def hub_revision(*, release: Release, revision: str) -> HubRevision:
    """The variant a revision names (``main``, a variant's name, or a commit id); HubRefused 404 otherwise."""
    if revision == MAIN:
        variant = release.variants.filter(files__path="config.json").order_by("name").first()
    else:
        variant = release.variants.filter(name=revision).first()
    if variant is not None:
        return HubRevision(release, variant, variant_commit(variant))
    if _COMMIT.fullmatch(revision):
        for candidate in release.variants.all():  # a few variants; each commit is kept once computed
            if variant_commit(candidate) == revision:
                return HubRevision(release, candidate, revision)
    names = ", ".join([MAIN] + list(release.variants.order_by("name").values_list("name", flat=True)))
    raise HubRefused(404, "RevisionNotFound", f"{release.name} has no revision '{revision}' (it has: {names}).")


def hub_access_check(*, user: User | None, release: Release) -> Grant:
    """The download rule for a caller of the Hub API: their active grant, the licence accepted;
    HubRefused 401/403 saying what to do."""
    if user is None:
        raise HubRefused(401, "GatedRepo", f"{release.name} is gated: send a personal API token with the 'download' "
                                           "scope as HF_TOKEN (create one at /access/tokens/).")
    grant = grant_active_for(user=user, release=release)
    if grant is None:
        raise HubRefused(403, "GatedRepo", f"You have no active access to {release.name}: apply for it at "
                                           f"/releases/{release.slug}/ (or renew it on My access).")
    blocker = licence_blocker(user=user, release=release)
    if blocker:
        raise HubRefused(403, "GatedRepo", blocker)
    return grant


def hub_revision_and_file(*, release: Release, revision: str, path: str) -> tuple[HubRevision, ArtifactFile]:
    """The revision and one of its downloadable files, in one query when both exist (``resolve``'s
    usual case); otherwise the 404 that names what is missing."""
    files = ArtifactFile.objects.select_related("variant").filter(variant__release=release, path=path)
    if revision == MAIN:
        files = files.filter(variant__files__path="config.json").order_by("variant__name")
    else:
        files = files.filter(variant__name=revision)
    file = files.first()
    if file is None:
        found = hub_revision(release=release, revision=revision)
        return found, hub_file(found, path)
    found = HubRevision(release, file.variant, variant_commit(file.variant))
    if file.integrity != ArtifactFile.Integrity.OK:
        return found, hub_file(found, path)  # the withheld file's 404
    return found, file


def hub_file(revision: HubRevision, path: str) -> ArtifactFile:
    """A downloadable file of the revision; a missing or withheld one is a 404 (EntryNotFound)."""
    file = revision.variant.files.filter(path=path).first()
    if file is None:
        raise HubRefused(404, "EntryNotFound", f"{revision.variant.name} has no file '{path}'.", commit=revision.commit)
    if file.integrity != ArtifactFile.Integrity.OK:
        raise HubRefused(404, "EntryNotFound", f"{path} is withheld: {file.get_integrity_display()}. It will be "
                                               "available again once staff have repaired it.", commit=revision.commit)
    return file


@dataclass(frozen=True)
class HubFetch:
    """A file fetched through ``resolve``: the download rule's decision, and the file's Hub headers."""

    decision: Decision
    commit: str
    sha256: str
    size: int


def hub_fetch(*, raw_token: str, repo_id: str, revision: str, path: str, range_header: str, ip: str | None,
              user_agent: str) -> HubFetch | None:
    """Fetch a file as ``/dl/`` does, by the same rule (``download_decide``), its limits and its events,
    in one query: None when the token is not usable for downloads or the file is not there to be
    decided on (missing, withheld, a commit id not kept yet), which ``hub_access_check``,
    ``hub_revision_and_file`` and their refusals then explain."""
    token_hash, slug = api_token_hash(raw_token), release_slug(repo_id)
    link_id = hub_link_id(token_hash=token_hash, slug=slug, path=path, day=timezone.now().date().isoformat())
    found = hub_download_check(token_hash=token_hash, slug=slug, revision=revision, path=path, link_id=link_id, ip=ip)
    if found is None:
        return None
    token, check = found
    if check.file_id is None or not check.variant_commit or check.file_integrity != ArtifactFile.Integrity.OK:
        return None
    try:
        api_token_check(token, user_is_active=check.user_is_active)
    except ApiTokenInvalid:
        return None
    if not api_token_has_scope(token, ApiToken.Scope.DOWNLOAD):
        return None
    event = DownloadEvent(ip=ip, user_agent=user_agent[:500], range_header=range_header[:100])
    claims = LinkClaims(user_id=check.user_id, file_id=check.file_id, grant_id=check.grant_id,
                        generation=check.grant_generation, link_id=link_id)
    decision = download_decide(event=event, claims=claims, check=check, range_header=range_header)
    return HubFetch(decision=decision, commit=check.variant_commit, sha256=check.file_sha256, size=check.file_size)


def tree_entry(file: ArtifactFile) -> dict:
    """A file as the Hub's tree API lists it: every file is an LFS object whose oid is its sha256."""
    blob = hashlib.sha1(f"blob {file.size}\0{file.sha256}".encode(), usedforsecurity=False).hexdigest()
    return {"type": "file", "oid": blob, "size": file.size, "path": file.path,
            "lfs": {"oid": file.sha256, "size": file.size, "pointerSize": 134}}
